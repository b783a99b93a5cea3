"""Online adaptation: after a workload shift the corrected predictions are back within 5 % in 60 s.

The predictor is profiled on the first half's lengths only (its forests have seen one workload,
so the live workload they are given changes nothing); mid-run the prompts grow 4x and the outputs
shrink 3x, which cuts the node's output throughput to about a third. Unit tests drive the
residual learner (`pals.control.policies.residuals`) directly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pals.control.policies.residuals import ResidualConfig, ResidualCorrection, ResidualFilter
from pals.control.types import Configuration
from pals.errors import ConfigError
from pals.sim.workload import SaturatingWorkload, Workload

SHIFT_S = 120.0
"""When the workload shifts. Units: s of run time."""
FIRST = (300.0, 250.0)
"""(prompt, output) mean lengths before the shift. Units: tokens."""
SECOND = (1200.0, 80.0)
"""...and after it."""


class ShiftingWorkload(Workload):
    """Saturating load that draws from `first` until the node's clock reaches `shift_s`, then from `second`.

    A closed loop pulls requests as the engine needs them, so the shift reaches the engine at once
    (an open-loop overload would serve its queue of old requests first). `now_s` is bound to the
    node's clock after the node is built.
    """

    closed_loop = True

    def __init__(self, first: SaturatingWorkload, second: SaturatingWorkload, shift_s: float) -> None:
        self.first, self.second, self.shift_s = first, second, shift_s
        self.now_s = lambda: 0.0

    @property
    def descriptor(self):
        return self.first.descriptor

    def requests(self):
        before, after = self.first.requests(), self.second.requests()
        while True:
            yield next(before if self.now_s() < self.shift_s else after)


def shifting_run(model: str, policy: str = "pals", duration_s: float = 240.0, options=None, target_tps=None):
    """The decision records of `policy` on a saturating load whose lengths shift at `SHIFT_S` (with a
    throughput target when `target_tps` is given)."""
    from pals.control.policies import PolicyOptions
    from pals.runtime.builder import ControlSettings, build_controller
    from pals.runtime.deployment import Deployment
    from pals.runtime.load import LoadSpec, LognormalLengths
    from pals.runtime.predictors import simulated_predictor
    from pals.sim.node import SimNode

    first, second = LognormalLengths(*FIRST), LognormalLengths(*SECOND)
    deployment = Deployment(model)
    predictor = simulated_predictor(deployment, LoadSpec(saturate=True, lengths=first))
    workload = ShiftingWorkload(SaturatingWorkload(*first.distributions(), seed=3),
                                SaturatingWorkload(*second.distributions(), seed=4), SHIFT_S)
    node = SimNode(deployment.sim_spec(), workload, seed=0)
    workload.now_s = lambda: node.now_s
    settings = ControlSettings(policy, options=options if options is not None else PolicyOptions(), target_tps=target_tps)
    controller = build_controller(node, settings, predictor=predictor)
    try:
        controller.run(duration_s=duration_s)
    finally:
        controller.close()
    return controller.loop.log.recent()


def errors_between(records, start_s: float, end_s: float, key: str = "prediction_error_tps_pct") -> np.ndarray:
    values = [r["decision"]["extra"].get(key) for r in records if start_s < r["t_s"] <= end_s]
    return np.array([abs(v) for v in values if v is not None])


@pytest.mark.parametrize("model", ["Llama-2-7B", "Mixtral-8x7B"])
def test_prediction_error_is_back_under_5_pct_within_60_s_of_a_workload_shift(pals_cache, model):
    records = shifting_run(model)
    before = errors_between(records, 30.0, SHIFT_S)
    after = errors_between(records, SHIFT_S + 60.0, SHIFT_S + 90.0)
    power = errors_between(records, SHIFT_S + 60.0, SHIFT_S + 90.0, "prediction_error_power_pct")
    assert len(before) > 100 and len(after) > 40, (len(before), len(after))
    assert np.median(before) < 5.0, np.median(before)
    assert np.median(after) < 5.0, after
    assert np.median(power) < 5.0, power
    # The shift was real: the throughput at the same configuration fell by more than half, far
    # outside any clamp on a ratio to the offline model.
    tps = [(r["t_s"], r["measured"]["throughput_tps"]) for r in records if r.get("measured")]
    first = np.mean([v for t, v in tps if 60.0 < t <= SHIFT_S])
    second = np.mean([v for t, v in tps if SHIFT_S + 60.0 < t])
    assert second < 0.5 * first, (first, second)


# -- the learner alone ------------------------------------------------------------------------


A, B = Configuration(300.0, 64), Configuration(200.0, 16)


def test_a_confident_prediction_moves_slowly_an_uncertain_one_quickly():
    confident, uncertain = ResidualFilter(ResidualConfig()), ResidualFilter(ResidualConfig())
    for _ in range(4):
        confident.update(A, math.log(0.8), 0.5, rel_std=0.0)
        uncertain.update(A, math.log(0.8), 0.5, rel_std=0.3)
    assert 0.8 < uncertain.factor(A) < confident.factor(A) < 1.0


def test_the_pooled_residual_carries_to_unvisited_configurations():
    learnt = ResidualFilter(ResidualConfig())
    for _ in range(200):
        learnt.update(A, math.log(0.5), 0.5, rel_std=0.05)
    assert learnt.factor(A) == pytest.approx(0.5, rel=0.02)
    # One configuration cannot tell the level from its own shape: the split follows the priors
    # (level 0.05 + spread 0.05, shape 0.03 + spread 0.05 in log std), most of it carries.
    assert 0.5 < learnt.factor(B) < 0.75
    learnt.forget()  # after a shift the level is the uncertain part: it takes the new data
    for _ in range(60):
        learnt.update(A, math.log(0.25), 0.5, rel_std=0.05)
    assert learnt.factor(A) == pytest.approx(0.25, rel=0.03)
    assert learnt.factor(B) < 0.4


def test_a_shift_in_lengths_forgets_fast_and_the_level_reconverges():
    from pals.control.types import Observation

    def obs(prompt, output):
        return Observation(time_s=0.0, interval_s=0.5, throughput_tps=0.0, prompt_tps=0.0, gpu_power_w=0.0,
                           node_power_w=0.0, node_power_reading_w=None, generated_tokens=0.0, gpu_energy_j=0.0,
                           node_energy_j=0.0, requests_waiting=0, requests_running=0, power_cap_w=300.0, batch_cap=64,
                           mean_prompt_tokens=prompt, mean_output_tokens=output)

    learnt = ResidualCorrection()
    rng = np.random.default_rng(0)
    learnt.note_workload(obs(300.0, 250.0))
    for _ in range(400):  # 200 s at the model's prediction: a confident, slow filter
        learnt.record_throughput(A, 1000.0 * math.exp(rng.normal(0, 0.15)), 1000.0, 0.5, 0.02)
    assert learnt.factor(A) == pytest.approx(1.0, abs=0.03)
    assert learnt.note_workload(obs(1200.0, 80.0)) and learnt.shifts_ == 1
    for _ in range(60):  # 30 s at a third of it
        learnt.record_throughput(A, 330.0 * math.exp(rng.normal(0, 0.15)), 1000.0, 0.5, 0.02)
    assert learnt.factor(A) == pytest.approx(0.33, rel=0.05)


def test_a_one_sided_run_of_innovations_is_detected_without_length_telemetry():
    learnt = ResidualCorrection()
    rng = np.random.default_rng(1)
    for _ in range(400):
        learnt.record_throughput(A, 1000.0 * math.exp(rng.normal(0, 0.1)), 1000.0, 0.5, 0.02)
    for _ in range(80):
        learnt.record_throughput(A, 500.0 * math.exp(rng.normal(0, 0.1)), 1000.0, 0.5, 0.02)
    assert learnt.shifts_ >= 1
    assert learnt.factor(A) == pytest.approx(0.5, rel=0.05)


def test_residual_config_refuses_bad_knobs():
    with pytest.raises(ConfigError, match="factor_min"):
        ResidualConfig(factor_min=2.0)
    with pytest.raises(ConfigError, match="noise_smoothing"):
        ResidualConfig(noise_smoothing=1.5)
    with pytest.raises(ConfigError, match="sustained_intervals"):
        ResidualConfig(sustained_intervals=2.5)


# -- tokens/J against the hindsight optimum of each half ---------------------------------------------

HALF_SHARE_MIN = 0.95
"""PALS's tokens/J over each half must reach this share of that half's hindsight optimum (issue 12)."""
TARGET_OF_SECOND_HALF = 0.6
"""The throughput target, as a fraction of the second half's throughput at the maximum configuration:
the first half meets it at low caps, the second may need a higher one (Llama-2-7B's does)."""


def _half_figures(records, start_s: float, end_s: float) -> tuple[float, float]:
    """(tokens per node joule, strict QoS violations %) over the intervals in (start_s, end_s]."""
    rows = [r for r in records if start_s < r["t_s"] <= end_s and r.get("sample")]
    tokens = sum(r["sample"]["generated_tokens"] for r in rows)
    energy_j = sum(r["sample"]["node_power_w"] * r["interval_s"] for r in rows)
    return tokens / energy_j, 100.0 * sum(bool(r["qos_violation"]) for r in rows) / len(rows)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["Llama-2-7B", "Mixtral-8x7B"])
def test_tokens_per_joule_stays_near_the_hindsight_optimum_of_each_half(pals_cache, model):
    from pals.control.policies import PolicyOptions
    from pals.control.types import Configuration
    from pals.core.paper import PAPER_BATCH_CAPS, PAPER_POWER_CAPS_W

    duration_s = 240.0
    halves = ((0.0, SHIFT_S), (SHIFT_S, duration_s))
    top = shifting_run(model, "static", duration_s, PolicyOptions(fixed=Configuration(max(PAPER_POWER_CAPS_W), 64)))
    second_tps = np.mean([r["sample"]["throughput_tps"] for r in top if r["t_s"] > SHIFT_S + 30.0 and r.get("sample")])
    target_tps = TARGET_OF_SECOND_HALF * float(second_tps)
    pals = shifting_run(model, "pals", duration_s, target_tps=target_tps)
    statics = {(cap, batch): shifting_run(model, "static", duration_s, PolicyOptions(fixed=Configuration(cap, batch)),
                                          target_tps=target_tps)
               for cap in PAPER_POWER_CAPS_W for batch in PAPER_BATCH_CAPS}
    best_configs = []
    for start_s, end_s in halves:
        tpj, violations = _half_figures(pals, start_s, end_s)
        # The hindsight optimum of the half: the best fixed configuration with no more violations there.
        meeting = {config: f for config, f in ((c, _half_figures(r, start_s, end_s)) for c, r in statics.items())
                   if f[1] <= violations}
        assert meeting, (model, start_s, violations)
        best_config = max(meeting, key=lambda c: meeting[c][0])
        best_configs.append(best_config)
        assert tpj >= HALF_SHARE_MIN * meeting[best_config][0], (model, start_s, tpj, meeting[best_config], violations)
    # Where the two halves' optima differ, PALS moved with the shift.
    configs = {(r["decision"]["config"]["power_cap_w"], r["decision"]["config"]["batch_cap"]) for r in pals}
    if best_configs[0][0] != best_configs[1][0]:
        assert len(configs) > 1, (best_configs, configs)
