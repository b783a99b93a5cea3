"""Property-based tests (hypothesis) of the loop's invariants, with and without injected faults.

- Whatever a node sends, what the telemetry guard passes on is finite, ordered in time, with
  monotonic and physically plausible counters; clean telemetry passes through untouched.
- Energy accounting: the summary's energy is the sum of the intervals' energies, its duration the
  sum of their lengths, and both match the simulator's exact counters over the span measured.
- Steady state under a budget: after the governor settles, the trailing-window mean power (the
  project's test, `pals.control.window`) stays within the budget's 2 % tolerance.

Examples are derandomized (the same ones every run: no flaky CI) and have no deadline (a loaded
2-core machine must not fail them).
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import HealthCheck, given, settings  # pinned in the `test` extra: required, never skipped
from hypothesis import strategies as st

from pals.control.budget import PowerBudget
from pals.control.loop import ControlLoop
from pals.control.policies import Baseline
from pals.control.telemetry_guard import TelemetryGuard
from pals.control.window import TrailingMeanPower
from pals.core.node import Constraints, Sample
from pals.node.faults import Fault, FaultyNode
from pals.sim.node import SimNode, SimNodeSpec
from pals.sim.workload import LengthDistribution, PoissonWorkload, load_trace

PROPERTY = settings(deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])

# -- the guard on synthetic telemetry ----------------------------------------------------------------

CONSTRAINTS = Constraints(num_gpus=4, power_cap_min_w=100.0, power_cap_max_w=400.0, batch_cap_max=64)
CORRUPTIONS = (
    "nan_power", "negative_power", "huge_power", "nan_energy", "energy_backwards", "energy_jump",
    "energy_stuck", "tokens_backwards", "nan_tokens", "time_backwards", "nan_time", "stale",
    "nan_queue", "nan_cap", "bad_batch", "nan_age",
)


def _stream(steps: int, seed: int):
    """A plausible node: 4 GPUs at 50-400 W, counters that only grow, samples 0.3-0.7 s apart."""
    rng = random.Random(seed)
    t_s, energy, tokens = 0.0, [0.0] * 4, 0.0
    for _ in range(steps):
        dt = rng.uniform(0.3, 0.7)
        t_s += dt
        power = [rng.uniform(50.0, 400.0) for _ in range(4)]
        energy = [e + p * dt for e, p in zip(energy, power)]
        tokens += rng.randint(0, 500)
        yield Sample(time_s=t_s, gpu_power_w=tuple(power), gpu_energy_j_total=tuple(energy),
                     gpu_power_cap_w=(400.0,) * 4, batch_cap=64, generated_tokens_total=tokens,
                     prompt_tokens_total=3 * tokens, requests_running=rng.randint(0, 64),
                     requests_waiting=rng.randint(0, 10), requests_finished_total=int(tokens // 100),
                     age_s=rng.uniform(0.0, 0.2))


def _corrupt(s: Sample, kind: str) -> Sample:
    from dataclasses import replace

    nan = math.nan
    power, energy = list(s.gpu_power_w), list(s.gpu_energy_j_total)
    changes = {
        "nan_power": {"gpu_power_w": (nan,) * 4},
        "negative_power": {"gpu_power_w": (-10.0,) + tuple(power[1:])},
        "huge_power": {"gpu_power_w": (1e6,) + tuple(power[1:])},
        "nan_energy": {"gpu_energy_j_total": (nan,) + tuple(energy[1:])},
        "energy_backwards": {"gpu_energy_j_total": (0.0,) + tuple(energy[1:])},
        "energy_jump": {"gpu_energy_j_total": (energy[0] + 1e9,) + tuple(energy[1:])},
        "energy_stuck": {"gpu_energy_j_total": (0.0,) * 4},
        "tokens_backwards": {"generated_tokens_total": 1.0},
        "nan_tokens": {"generated_tokens_total": nan},
        "time_backwards": {"time_s": s.time_s - 100.0},
        "nan_time": {"time_s": nan},
        "stale": {"age_s": 1e4},
        "nan_queue": {"requests_waiting": nan},
        "nan_cap": {"gpu_power_cap_w": (nan,) * 4},
        "bad_batch": {"batch_cap": 0},
        "nan_age": {"age_s": nan},
    }[kind]
    return replace(s, **changes)


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


@PROPERTY
@given(corruptions=st.lists(st.one_of(st.none(), st.sampled_from(CORRUPTIONS)), min_size=2, max_size=80),
       seed=st.integers(0, 2**16))
def test_what_the_guard_passes_on_is_finite_ordered_monotonic_and_plausible(corruptions, seed):
    guard = TelemetryGuard(CONSTRAINTS)
    accepted: list[Sample] = []
    bad_run = 0
    for raw, kind in zip(_stream(len(corruptions), seed), corruptions):
        result, _ = guard.check(raw if kind is None else _corrupt(raw, kind))
        bad_run = bad_run + 1 if result.bad else 0
        assert guard.bad_streak == bad_run
        if result.sample is not None:
            accepted.append(result.sample)
    for s in accepted:
        assert _finite(s.time_s, *s.gpu_power_w, *s.gpu_energy_j_total, *s.gpu_power_cap_w, s.generated_tokens_total,
                       s.prompt_tokens_total, s.requests_running, s.requests_waiting, s.age_s)
        assert all(0.0 <= w <= 1.5 * 400.0 for w in s.gpu_power_w)
        assert s.batch_cap >= 1 and s.requests_waiting >= 0 and s.age_s >= 0
    for a, b in zip(accepted, accepted[1:]):
        dt = b.time_s - a.time_s
        assert dt > 0  # the stream never repeats a time, so a delayed sample was dropped
        assert b.generated_tokens_total >= a.generated_tokens_total
        assert b.requests_finished_total >= a.requests_finished_total
        for ea, eb in zip(a.gpu_energy_j_total, b.gpu_energy_j_total):
            assert 0.0 <= eb - ea <= 1.5 * 400.0 * dt + 1e-6


@PROPERTY
@given(steps=st.integers(2, 60), seed=st.integers(0, 2**16))
def test_clean_telemetry_passes_through_untouched(steps, seed):
    guard = TelemetryGuard(CONSTRAINTS)
    for raw in _stream(steps, seed):
        result, _ = guard.check(raw)
        assert result.sample is raw and not result.bad and not result.warnings


# -- energy accounting on the simulator, through faults ---------------------------------------------

ENERGY_SAFE_FAULTS = ("sample_error", "apply_error", "nan_power", "huge_power", "token_reset", "nan_tokens",
                      "stale", "delayed", "nan_time", "malformed", "frozen_tokens")
"""Faults that leave the GPU energy counters alone (energy must then be exact)."""
ENERGY_FAULTS = ("nan_energy", "energy_reset", "energy_jump", "frozen_energy")


class _Recorder:
    """Passes the simulator through and keeps its exact GPU energy at every sample time."""

    def __init__(self, sim: SimNode) -> None:
        self.sim = sim
        self.truth_j: dict[float, float] = {}

    def constraints(self):
        return self.sim.constraints()

    def apply(self, actuation) -> None:
        self.sim.apply(actuation)

    def sample(self):
        s = self.sim.sample()
        self.truth_j[s.time_s] = self.sim.energy_j_total()
        return s


fault_lists = st.lists(
    st.tuples(st.sampled_from(ENERGY_SAFE_FAULTS + ENERGY_FAULTS), st.sampled_from([0.05, 0.2, 0.5, 1.0]),
              st.floats(2.0, 30.0)),
    max_size=4,
)


@settings(PROPERTY, max_examples=25)
@given(faults=fault_lists, budget_w=st.one_of(st.none(), st.floats(900.0, 1600.0)), seed=st.integers(0, 1000))
def test_energy_accounting_equals_the_sum_of_intervals_and_the_simulators_counter(faults, budget_w, seed):
    workload = PoissonWorkload(6.0, LengthDistribution.fixed(300), LengthDistribution.fixed(100), seed=seed)
    sim = SimNode(SimNodeSpec("Qwen1.5-MoE-A2.7B", "A100-SXM4-80GB"), workload, seed=seed)
    recorder = _Recorder(sim)
    injected = [Fault(kind, probability=p, start_s=start, end_s=start + 10.0) for kind, p, start in faults]
    node = FaultyNode(recorder, injected, seed=seed)
    loop = ControlLoop(node, Baseline(), sim.clock, budget=None if budget_w is None else PowerBudget(budget_w))
    loop.run(duration_s=45.0)
    summary = loop.summary()
    records = loop.log.records()
    rated = [r for r in records if r.sample is not None]
    # The summary is the sum over its intervals (exactly, but for the order of float additions) ...
    assert summary["gpu_energy_j"] == pytest.approx(math.fsum(r.sample.gpu_power_w * r.interval_s for r in rated),
                                                    rel=1e-12)
    assert summary["energy_j"] == pytest.approx(math.fsum(r.sample.node_power_w * r.interval_s for r in rated),
                                                rel=1e-12)
    assert summary["intervals"] == len(rated)
    # ... the intervals tile the run from the first sample to the last one rated, nothing lost ...
    first_s, last_s = records[0].time_s, rated[-1].time_s
    assert summary["duration_s"] == pytest.approx(last_s - first_s, abs=1e-3)
    assert math.fsum(r.interval_s for r in rated) == pytest.approx(last_s - first_s, abs=1e-3)
    # ... and the energy is the simulator's own over that span: exact (to the logged 0.01 W) when
    # the counters were left alone; within 2 % when some intervals had to use the power readings.
    truth_j = recorder.truth_j[last_s] - recorder.truth_j[first_s]
    exact = not any(kind in ENERGY_FAULTS for kind, _, _ in faults)
    assert summary["gpu_energy_j"] == pytest.approx(truth_j, rel=1e-5 if exact else 0.02)


# -- steady-state power under a budget ----------------------------------------------------------------

BENIGN_FAULTS = ("sample_error", "nan_power", "huge_power", "energy_jump", "delayed", "nan_tokens")
SETTLE_S = 20.0


@settings(PROPERTY, max_examples=12)
@given(policy=st.sampled_from(["baseline", "pals"]), budget_w=st.floats(1000.0, 1700.0), kind=st.sampled_from(["node", "gpu"]),
       seed=st.integers(0, 100),
       faults=st.lists(st.tuples(st.sampled_from(BENIGN_FAULTS), st.sampled_from([0.02, 0.05, 0.1])), max_size=2))
def test_steady_state_power_stays_within_the_budget(scenario_parts, policy, budget_w, kind, seed, faults):
    from pals.control.policies import make_policy

    _, predictor, _, max_tps = scenario_parts("Mixtral-8x7B")  # 4 x A100-SXM4-80GB, TP 4, batch cap 64
    if kind == "gpu":
        budget_w = budget_w * 0.75  # the GPUs' share of a node budget of that size
    _, prompts, outputs = load_trace("conv")
    prompt, output = LengthDistribution.empirical(prompts), LengthDistribution.empirical(outputs)
    workload = PoissonWorkload(1.3 * max_tps / output.mean, prompt, output, seed=seed)  # saturating: the budget binds
    sim = SimNode(SimNodeSpec("Mixtral-8x7B", "A100-SXM4-80GB", num_gpus=4, tp=4, batch_cap_max=64), workload, seed=seed)
    node = FaultyNode(sim, [Fault(k, probability=p) for k, p in faults], seed=seed)
    c = sim.constraints()
    chosen = make_policy(policy, predictor=predictor, power_cap_max_w=c.power_cap_max_w, batch_cap_max=c.batch_cap_max)
    loop = ControlLoop(node, chosen, sim.clock, budget=PowerBudget(budget_w, kind))
    loop.run(duration_s=90.0)
    window = TrailingMeanPower()
    worst = 0.0
    for r in loop.log.records():
        if r.sample is None:
            continue
        power = r.sample.gpu_power_w if kind == "gpu" else r.sample.node_power_w
        mean_w = window.add(power, r.interval_s)
        if r.t_s > SETTLE_S:
            worst = max(worst, mean_w / budget_w - 1.0)
    assert worst <= 0.02, f"window-mean power {100 * worst:.1f} % over the {budget_w:.0f} W {kind} budget"
