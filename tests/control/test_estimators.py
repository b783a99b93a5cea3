"""What the model-guided policies learn, one estimator at a time, and the windows they share.

The trailing windows must keep the arithmetic they had before they shared `TrailingWindow`
(re-summed span for the QoS window, running sums for the mean power): the references below are
the former implementations, compared bit for bit."""

from __future__ import annotations

import collections
import math
import random

import numpy as np
import pytest

from pals.control.policies import DEFAULT_BURST_CV, POLICY_NAMES, ModelGuidedConfig, make_policy
from pals.control.policies.adaptive_batch import AdaptiveBatch
from pals.control.policies.adaptive_cap import AdaptiveCap
from pals.control.policies.estimators import (
    Backlog, BurstEstimate, CapacityCorrection, DemandEstimate, DwellThroughput, IdlePower, LevelChange, PowerBias,
    WarmUp,
)
from pals.control.policies.oracle import Oracle
from pals.control.policies.pals import Pals
from pals.control.qos import QosWindow
from pals.control.types import Configuration, Observation
from pals.control.window import TrailingMeanPower
from pals.core.window import TrailingWindow
from pals.errors import ConfigError


def obs(tokens=100.0, interval_s=0.5, time_s=1.0, waiting=0, running=8, batch_cap=64, gpu_w=800.0, prompt=None, output=None):
    return Observation(time_s=time_s, interval_s=interval_s, throughput_tps=tokens / interval_s, prompt_tps=0.0,
                       gpu_power_w=gpu_w, node_power_w=1.05 * gpu_w + 345.0, node_power_reading_w=None,
                       generated_tokens=tokens, gpu_energy_j=gpu_w * interval_s, node_energy_j=0.0,
                       requests_waiting=waiting, requests_running=running, power_cap_w=400.0, batch_cap=batch_cap,
                       mean_prompt_tokens=prompt, mean_output_tokens=output)


def intervals(n=400, seed=3):
    rng = random.Random(seed)
    return [(rng.uniform(0.45, 0.55) + 1e-7 * rng.random(), rng.uniform(0, 900.0)) for _ in range(n)]


# -- the shared window, against the implementations it replaced ---------------------------------


def test_qos_window_matches_its_former_arithmetic_bit_for_bit():
    items: collections.deque = collections.deque()
    window = QosWindow(5.0)
    for k, (dt, tokens) in enumerate(intervals()):
        target = 100.0 if k < 200 else 150.0
        if k == 200:
            items.clear()
        items.append((tokens, dt))
        span = sum(d for _, d in items)
        while len(items) > 1 and span - items[0][1] >= 5.0 - 1e-9:
            span -= items.popleft()[1]
        expected = sum(t for t, _ in items) / span
        assert window.add(tokens, dt, 1, target)[0] == expected  # exact, not approx


def test_mean_power_matches_its_former_running_sums_bit_for_bit():
    items: collections.deque = collections.deque()
    energy = span = 0.0
    window = TrailingMeanPower(5.0)
    for dt, power_w in intervals(seed=5):
        items.append((power_w * dt, dt))
        energy += power_w * dt
        span += dt
        while len(items) > 1 and span - items[0][1] >= 5.0 - 1e-9:
            e, d = items.popleft()
            energy -= e
            span -= d
        assert window.add(power_w, dt) == energy / span
        assert window.span_s == span


def test_trailing_window_options():
    w: TrailingWindow[str] = TrailingWindow(1.0)
    assert w.add(0.5, "a") == [] and w.add(0.5, "b") == [] and not w.full(1.5)
    assert w.add(0.5, "c") == ["a"] and list(w.items()) == ["b", "c"] and w.full()
    counted: TrailingWindow[int] = TrailingWindow(math.inf, max_items=3)
    for i in range(5):
        counted.add(1.0, i)
    assert list(counted.items()) == [2, 3, 4] and counted.span_s == 3.0
    running: TrailingWindow[int] = TrailingWindow(0.5, running_span=True)
    summed: TrailingWindow[int] = TrailingWindow(0.5)
    for k, dt in enumerate((0.1, 0.2, 0.3, 0.05)):
        assert running.add(dt, k) == summed.add(dt, k)
    assert list(running.items()) == list(summed.items()) == [1, 2, 3]
    assert running.span_s == 0.1 + 0.2 + 0.3 - 0.1 + 0.05  # a running sum ...
    assert summed.span_s == 0.2 + 0.3 + 0.05 != running.span_s  # ... and a fresh one differ in the last bits
    assert summed.rate([5.5, 5.5]) == pytest.approx(20.0)


# -- estimators --------------------------------------------------------------------------------


def test_warm_up_counts_from_the_first_interval_start():
    warm = WarmUp(5.0)
    warm.update(obs(time_s=10.5))
    assert not warm.warm(obs(time_s=14.5)) and warm.warm(obs(time_s=15.0))


def test_backlog_makes_a_sustained_queue_capacity_limited():
    backlog = Backlog(3, 0.9)
    full = obs(waiting=2, running=60)
    assert backlog.capacity_limited(full, replicas=1)
    partial = obs(waiting=2, running=20)
    flags = []
    for _ in range(4):
        backlog.update(partial)
        flags.append(backlog.capacity_limited(partial, replicas=1))
    assert flags == [False, False, True, True]
    backlog.update(obs(waiting=0))
    assert backlog.run_ == 0


def test_idle_power_defaults_then_learns_from_idle_intervals():
    idle = IdlePower(0.1, 0.6)
    assert idle.per_gpu_w(100.0) == pytest.approx(60.0)
    idle.update(obs(tokens=50.0, gpu_w=1000.0), num_gpus=4)  # busy: ignored
    idle.update(obs(tokens=0.0, running=0, gpu_w=280.0), num_gpus=4)
    assert idle.per_gpu_w(100.0) == pytest.approx(70.0)
    idle.update(obs(tokens=0.0, running=0, gpu_w=320.0), num_gpus=4)
    assert idle.per_gpu_w(100.0) == pytest.approx(0.9 * 70.0 + 0.1 * 80.0)


def test_demand_waits_for_half_a_window_then_tracks_and_reports_moves():
    demand = DemandEstimate(10.0, 0.5, 0.5, 0.2)
    for _ in range(9):
        demand.update(100.0, 0.5, False)
    assert demand.tps_ is None and not demand.seen_
    demand.update(100.0, 0.5, False)
    assert demand.tps_ == pytest.approx(200.0) and demand.first_ and demand.moved()
    demand.mark_selected()
    assert not demand.first_ and not demand.moved()
    for _ in range(20):
        demand.update(150.0, 0.5, False)
    assert demand.tps_ == pytest.approx(300.0) and demand.moved()
    assert demand.describe_move() == "demand 200 tok/s -> 300 tok/s"
    for _ in range(20):
        demand.update(150.0, 0.5, True)  # backlogged: the demand is at least the capacity
    assert demand.tps_ is None and "saturated" in demand.describe_move()


def test_demand_matures_once_when_its_window_is_first_full():
    demand = DemandEstimate(10.0, 0.5, 0.5, 0.2)
    for _ in range(10):  # half the window: the first estimate, not yet mature
        demand.update(100.0, 0.5, False)
    assert demand.first_ and not demand.matured_
    demand.mark_selected()
    for _ in range(9):
        demand.update(100.0, 0.5, False)
    assert not demand.matured_
    demand.update(100.0, 0.5, False)  # the window now covers its 10 s
    assert demand.matured_
    demand.mark_selected()
    for _ in range(40):  # it matures once per run, not at every full window
        demand.update(100.0, 0.5, False)
    assert not demand.matured_


def test_burst_cv_starts_at_the_prior_and_shrinks_a_measured_spread_towards_it():
    bursts = BurstEstimate(z=2.0, window_s=5.0, history_s=120.0, min_windows=2.0, prior_s=60.0,
                           prior_cv=DEFAULT_BURST_CV, shift=0.08)
    assert bursts.margin() == pytest.approx(2 * DEFAULT_BURST_CV)
    for k in range(240):  # steady throughput: measured CV 0
        bursts.update(obs(tokens=100.0, time_s=0.5 * k))
    assert bursts.cv_ == pytest.approx(60.0 * DEFAULT_BURST_CV / (120.0 + 60.0))
    assert bursts.moved()
    bursts.mark_selected()
    assert not bursts.moved()


def test_capacity_correction_shrinks_towards_the_pooled_ratio_and_forgets_on_a_workload_shift():
    memory = CapacityCorrection(prior_s=20.0, ratio_min=0.7, ratio_max=1.4, workload_shift=0.25)
    a, b = Configuration(400.0, 64), Configuration(200.0, 8)
    assert memory.pooled() == 1.0 and memory.factor(a) == 1.0
    for _ in range(40):  # 20 s at 80 % of prediction
        memory.record(a, 80.0, 200.0, 0.5)
    assert memory.factor(a) == pytest.approx((3200 + memory.pooled() * 4000) / (4000 + 4000))
    assert memory.factor(b) == memory.pooled() < 1.0
    for _ in range(400):
        memory.record(a, 10.0, 200.0, 0.5)
    assert memory.factor(a) == 0.7  # clamped
    assert not memory.note_workload(obs(prompt=1000.0, output=200.0))
    assert not memory.note_workload(obs(prompt=1100.0, output=200.0))
    assert memory.note_workload(obs(prompt=1400.0, output=200.0)) and memory.seconds == {}


def test_power_bias_is_an_ema_floored_per_interval():
    bias = PowerBias(0.2, 0.05)
    bias.update(1050.0, 1000.0, 1000.0)
    assert bias.bias_w_ == pytest.approx(10.0)
    bias.update(500.0, 1000.0, 1000.0)  # -500 W counts as -50 W
    assert bias.bias_w_ == pytest.approx(0.8 * 10.0 - 0.2 * 50.0)


def test_dwell_throughput_needs_a_minimum_and_keeps_a_maximum_of_intervals():
    dwell = DwellThroughput(max_intervals=4, min_intervals=2)
    dwell.add(100.0, 0.5, True)
    assert dwell.tps() is None
    dwell.add(100.0, 0.5, False)
    assert dwell.tps() == pytest.approx(200.0) and dwell.limited_share() == 0.5
    for _ in range(4):
        dwell.add(50.0, 0.5, False)
    assert dwell.tps() == pytest.approx(100.0) and dwell.limited_share() == 0.0
    dwell.clear()
    assert dwell.tps() is None


# -- configuration and registry ------------------------------------------------------------------


@pytest.mark.parametrize("field, value, words", [
    ("hysteresis_intervals", 0, "hysteresis_intervals must be at least 1"),
    ("burst_z", -1.0, "burst_z must be >= 0"),
    ("tie_tolerance", 2.0, "tie_tolerance is a fraction"),
    ("smooth_intervals", 4, "smooth_intervals must be at least min_window_intervals"),
    ("demand_window_s", 0.0, "demand_window_s must be > 0"),
    ("demand_change_s", 0.0, "demand_change_s must be > 0"),
    ("demand_change_z", -1.0, "demand_change_z must be >= 0"),
    ("ratio_max", 0.9, "must bracket 1"),
    ("warmup_s", float("nan"), "warmup_s must be a finite number"),
    ("backlog_intervals", 2.5, "whole number"),
])
def test_config_errors_name_the_field_and_the_fix(field, value, words):
    with pytest.raises(ConfigError, match=words):
        ModelGuidedConfig(**{field: value})


class _Model:
    def predict_candidates(self, power_cap_w, batch_cap, workload=None):  # pragma: no cover - not called
        raise AssertionError


def test_registry_builds_one_class_per_policy():
    assert POLICY_NAMES == ("baseline", "adaptive-batch", "adaptive-cap", "pals", "oracle", "static")
    model = _Model()
    batch = make_policy("adaptive-batch", predictor=model, power_cap_max_w=350.0)
    assert isinstance(batch, AdaptiveBatch) and batch.power_caps_w == (350.0,) and batch.pid is not None
    cap = make_policy("adaptive_cap", predictor=model, batch_cap_max=32)
    assert isinstance(cap, AdaptiveCap) and cap.batch_caps == (32,)
    pals = make_policy("PALS", predictor=model, power_caps_w=(200.0, 300.0), batch_caps=(8, 4))
    assert isinstance(pals, Pals) and pals.power_caps_w == (200.0, 300.0) and pals.batch_caps == (4, 8)
    # The Oracle needs the truth of the delivered load (a `table`), not a predictor-shaped model.
    with pytest.raises(ConfigError, match="ground truth of the delivered load"):
        make_policy("oracle", truth=model)

    class _Truth:
        def table(self, *args):  # pragma: no cover - not called
            raise AssertionError

    oracle = make_policy("oracle", truth=_Truth())
    assert isinstance(oracle, Oracle)
    assert oracle.power_caps_w == (150.0, 200.0, 250.0, 300.0, 350.0, 400.0)  # the paper's grid by default


# -- a level change of the offered load --------------------------------------------------------


def _poisson_tokens(rate_tps: float, seconds: float, rng: np.random.Generator, mean_output: float = 200.0,
                    interval_s: float = 0.5) -> list[float]:
    """Output tokens per interval of Poisson arrivals whose requests deliver `mean_output` tokens at once (the
    noisiest case the test's noise model allows for)."""
    n = int(round(seconds / interval_s))
    return list(rng.poisson(rate_tps * interval_s / mean_output, n) * mean_output)


def test_level_change_finds_a_step_and_restarts_the_estimate_from_it():
    rng = np.random.default_rng(5)
    demand = DemandEstimate(30.0, 0.5, 0.5, 0.2, LevelChange(6.0, 3.0))
    for tokens in _poisson_tokens(1200.0, 30.0, rng):
        demand.update(tokens, 0.5, False, 200.0)
    assert not demand.changed_ and demand.tps_ == pytest.approx(1200.0, rel=0.25)
    demand.mark_selected()
    seen_after_s = None
    for k, tokens in enumerate(_poisson_tokens(400.0, 20.0, rng)):
        demand.update(tokens, 0.5, False, 200.0)
        if demand.just_changed_:
            seen_after_s = (k + 1) * 0.5
            break
    # Found within seconds (the trailing mean alone needs most of its 30 s window to fall below 600 tok/s) ...
    assert seen_after_s is not None and seen_after_s <= 12.0
    # ... and the estimate now rests on the low part alone, and re-runs the selection.
    assert demand.changed_ and demand.tps_ < 800.0 and demand.moved()
    demand.mark_selected()
    assert not demand.changed_


def test_level_change_stays_quiet_on_a_stationary_load():
    rng = np.random.default_rng(11)
    demand = DemandEstimate(30.0, 0.5, 0.5, 0.2, LevelChange(6.0, 3.0))
    changes = 0
    for tokens in _poisson_tokens(800.0, 600.0, rng):
        demand.update(tokens, 0.5, False, 200.0)
        changes += demand.just_changed_
    # Ten minutes of one Poisson rate: at most one false alarm (each costs one selection on a shorter window).
    assert changes <= 1


def test_level_change_needs_the_output_length_and_two_long_enough_parts():
    test = LevelChange(6.0, 3.0)
    durations, tokens = [0.5] * 40, [100.0] * 24 + [1000.0] * 16  # the rate rose 8 s ago
    assert test.recent_count(durations, tokens, None) is None  # no length: no noise model, no test
    assert test.recent_count(durations[:20], tokens[-20:], 200.0) is None  # 10 s: the older part is under 6 s
    assert test.recent_count(durations, tokens, 200.0) in (12, 24)  # a split on the 6 s steps
    assert test.recent_count(durations, [550.0] * 40, 200.0) is None  # one rate: no change
    burst = BurstEstimate(2.0, 5.0, 60.0, 2.0, 60.0, 0.15, 0.08)
    for k in range(40):
        burst.update(obs(tokens=100.0 if k % 2 else 400.0))
    assert burst.cv_ is not None
    burst.restart()
    assert burst.cv_ is None and burst.margin() == pytest.approx(0.30)
