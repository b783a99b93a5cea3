"""The loop survives every fault `FaultyNode` injects, and its invariants hold through them.

The node is the simulator (a GPU stand-in) wrapped in `pals.node.faults.FaultyNode`; the
simulator's exact energy counter is the ground truth for the energy figures.
"""

from __future__ import annotations

import math

import pytest

from pals.control.budget import PowerBudget
from pals.control.loop import ControlLoop
from pals.control.policies import Baseline
from pals.control.types import Configuration, Decision
from pals.node.faults import FAULT_KINDS, Fault, FaultyNode
from pals.sim.node import SimNode, SimNodeSpec
from pals.sim.workload import LengthDistribution, PoissonWorkload

BUDGET_W = 1200.0
"""Node budget of the runs: below what Qwen on 4 x A100 draws at the highest cap, so it binds."""
FAULT_START_S, FAULT_END_S, RUN_S = 20.0, 30.0, 60.0


def sim_node(seed: int = 1) -> SimNode:
    workload = PoissonWorkload(6.0, LengthDistribution.fixed(300), LengthDistribution.fixed(100), seed=seed)
    return SimNode(SimNodeSpec("Qwen1.5-MoE-A2.7B", "A100-SXM4-80GB"), workload, seed=seed)


def faulty_loop(faults, policy=None, budget=PowerBudget(BUDGET_W), **kwargs):
    sim = sim_node()
    node = FaultyNode(sim, faults, seed=3)
    return ControlLoop(node, policy or Baseline(), sim.clock, budget=budget, **kwargs), node, sim


def run_logged(loop, duration_s=RUN_S):
    loop.run(duration_s=duration_s)
    records = loop.log.records()
    loop.close()
    return records


def _finite_sample(record) -> bool:
    s = record.sample
    values = (s.throughput_tps, s.gpu_power_w, s.node_power_w, s.power_cap_w, s.requests_waiting, s.requests_running)
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values)


# Energy is exact through any fault that leaves the energy counters alone: a dropped sample's
# interval is spanned by the next one, a bad reading is replaced while the counters still move.
COUNTERS_INTACT = {"sample_error", "apply_error", "nan_power", "inf_power", "negative_power", "huge_power",
                   "token_reset", "frozen_tokens", "nan_tokens", "stale", "delayed", "nan_time", "malformed"}


@pytest.mark.parametrize("kind", sorted(FAULT_KINDS))
def test_the_loop_survives_each_fault_and_its_invariants_hold(kind):
    start_s = 0.0 if kind == "apply_error" else FAULT_START_S  # the baseline applies its cap at the start
    fault = Fault(kind, start_s=start_s, end_s=FAULT_END_S)
    loop, node, sim = faulty_loop([fault])
    records = run_logged(loop)
    assert node.injected[kind] > 0
    summary = loop.summary()
    # The whole run is measured, every logged number is finite, no throughput is negative.
    assert summary["duration_s"] == pytest.approx(RUN_S, abs=1e-6)
    measured = [r for r in records if r.sample is not None]
    assert all(_finite_sample(r) for r in measured)
    # Each fault is reported: in the records' warnings and in the health counters.
    assert any(r.warnings for r in records if FAULT_START_S - 1 <= r.t_s <= FAULT_END_S + 1 or start_s == 0.0)
    assert summary["health"]["last_error"] is not None or sum(v for k, v in summary["health"].items()
                                                              if isinstance(v, int)) > 0
    # Control recovers: after the fault the node is back at the policy's choice, not in safe mode.
    assert not loop.safe_mode
    assert records[-1].decision.reason.startswith("maximum batch, cap clamped")
    assert sim.sample().gpu_power_cap_w[0] == pytest.approx(records[-1].decision.config.power_cap_w, abs=0.5)
    if kind in COUNTERS_INTACT:
        assert summary["gpu_energy_j"] == pytest.approx(sim.energy_j_total(), rel=1e-4)
    else:  # some intervals' energy comes from the (noisy, instantaneous) power readings
        assert summary["gpu_energy_j"] == pytest.approx(sim.energy_j_total(), rel=0.02)


@pytest.mark.parametrize("kind", ["sample_error", "stale", "delayed", "nan_time", "malformed", "nan_tokens"])
def test_bad_samples_in_a_row_move_the_node_to_the_safe_configuration_and_back(kind):
    loop, node, sim = faulty_loop([Fault(kind, start_s=FAULT_START_S, end_s=FAULT_END_S)])
    c = loop.constraints
    safe_cap_w = loop.power_model.gpu_w(BUDGET_W) / c.num_gpus  # the budget shared equally, worst case
    statuses = []
    loop.run(duration_s=RUN_S, on_step=lambda line: statuses.append(loop.status()))
    records = loop.log.records()
    loop.close()
    safe = [r for r in records if r.decision.extra.get("safe_mode")]
    # Six bad samples (3 s) in, the safe configuration: the cap the budget allows at worst case, full batch.
    assert safe and safe[0].t_s == pytest.approx(FAULT_START_S + 0.5 * (loop.telemetry.max_bad_samples - 1))
    assert all(r.decision.config.batch_cap == c.batch_cap_max for r in safe)
    assert all(r.decision.config.power_cap_w <= safe_cap_w + 1e-6 for r in safe)
    # Said in the status and the metrics while it lasts, and left once good samples return.
    assert any(s["safe_mode"] and s["health"]["bad_samples_in_a_row"] >= 6 for s in statuses)
    assert safe[-1].t_s < FAULT_END_S + 0.5 * loop.telemetry.recover_good_samples + 1e-6
    assert not statuses[-1]["safe_mode"] and loop.health["safe_mode_entries"] == 1
    assert loop.metrics.sample_value("pals_safe_mode") == 0.0


class _Fixed:
    """A policy that always asks for 250 W and batch 8."""

    name = "fixed"

    def decide(self, ctx) -> Decision:
        return Decision(Configuration(250.0, 8), "fixed")

    def reset(self) -> None:
        pass


def test_safe_configuration_without_a_budget_leaves_the_cap_and_opens_the_batch():
    loop, node, sim = faulty_loop([Fault("sample_error", start_s=FAULT_START_S, end_s=FAULT_END_S)],
                                  policy=_Fixed(), budget=None)
    records = run_logged(loop)
    safe = [r for r in records if r.decision.extra.get("safe_mode")]
    assert safe
    assert all(r.decision.config == Configuration(250.0, loop.constraints.batch_cap_max) for r in safe)
    assert records[-1].decision.config == Configuration(250.0, 8)  # the policy's again afterwards


def test_one_bad_energy_reading_does_not_drop_the_cap():
    """Once, one implausible energy delta read as ~2 MW sent the cap to its minimum for 40 s."""
    loop, node, sim = faulty_loop([Fault("energy_jump", start_s=FAULT_START_S, end_s=FAULT_START_S + 0.25)])
    records = run_logged(loop)
    assert node.injected["energy_jump"] == 1
    caps = [r.decision.config.power_cap_w for r in records if r.t_s >= FAULT_START_S - 5]
    assert max(caps) - min(caps) < 5.0, caps
    assert max(r.sample.gpu_power_w for r in records if r.sample is not None) < 4 * 1.5 * 400


def test_an_engine_restart_gives_no_negative_throughput_and_rebases():
    loop, node, sim = faulty_loop([Fault("token_reset", start_s=FAULT_START_S, end_s=FAULT_START_S + 0.25)])
    records = run_logged(loop)
    assert node.injected["token_reset"] == 1
    assert min(r.sample.throughput_tps for r in records if r.sample is not None) >= 0.0
    after = [r.sample.throughput_tps for r in records if r.sample is not None and r.t_s > FAULT_START_S + 1]
    assert sum(after) / len(after) > 100.0  # counted again from the restart
    assert any("went backwards" in w for r in records for w in r.warnings)


def test_an_apply_failure_is_reported_and_retried():
    loop, node, sim = faulty_loop([Fault("apply_error", start_s=0.0, end_s=2.0)])
    records = run_logged(loop, duration_s=10.0)
    failed = [r for r in records if any("could not apply" in w for w in r.warnings)]
    assert failed and not any(r.config_changed for r in failed)
    assert loop.health["node_errors"] == len(failed) == node.injected["apply_error"]
    assert records[-1].sample.power_cap_w < 400.0  # applied once the fault had passed
    assert loop.metrics.sample_value("pals_node_errors_total") == 4.0


class _BrokenPolicy:
    name = "broken"

    def __init__(self, fail_from: int) -> None:
        self.fail_from = fail_from
        self.calls = 0

    def decide(self, ctx) -> Decision:
        self.calls += 1
        if self.fail_from <= ctx.interval_index < self.fail_from + 3:
            raise ZeroDivisionError("policy bug")
        return Decision(ctx.current, "keep")

    def reset(self) -> None:
        pass


def test_a_policy_exception_holds_the_configuration_and_control_goes_on():
    policy = _BrokenPolicy(fail_from=5)
    loop, node, sim = faulty_loop([], policy=policy)
    records = run_logged(loop, duration_s=10.0)
    held = [r for r in records if r.decision.reason == "held: the policy failed"]
    assert [r.interval for r in held] == [5, 6, 7]
    assert loop.health["policy_errors"] == 3 and policy.calls == len(records)
    assert "ZeroDivisionError: policy bug" in loop.status()["health"]["last_error"]


def test_a_node_that_never_answers_goes_to_the_safe_configuration_without_a_sample():
    loop, node, sim = faulty_loop([Fault("sample_error")], budget=PowerBudget(1000.0))
    records = run_logged(loop, duration_s=5.0)
    assert all(r.sample is None for r in records)
    safe = [r for r in records if r.config_changed]
    assert safe and safe[0].decision.extra.get("safe_mode")  # applied without knowing the configuration
    assert sim.sample().gpu_power_cap_w[0] == pytest.approx(loop.power_model.gpu_w(1000.0) / 4)
