"""One closed-loop scenario on the simulated node: the run behind `pals run`, `pals demo`, the hindsight
oracle (`pals.runtime.hindsight`) and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pals.control.budget import BudgetSchedule, PowerBudget
from pals.control.policies import PolicyOptions
from pals.core.paper import CONTROL_INTERVAL_S
from pals.core.power import NodePowerModel
from pals.runtime.builder import ControlSettings, build_controller
from pals.runtime.deployment import Deployment
from pals.runtime.load import LoadSpec, make_workload
from pals.sim.node import NoiseConfig, SimNode


@dataclass
class ScenarioResult:
    """What one scenario produced."""

    summary: dict[str, Any]
    """The loop's run summary (`pals.control.summary`) plus policy and request counts."""
    records: list[dict[str, Any]] = field(repr=False)
    """The decision records, one per interval."""
    truth_summary: dict[str, Any] = field(default_factory=dict)
    """The simulator's exact GPU and node energy and generated tokens over the controlled span."""


def delivered_truth_for(deployment: Deployment, load: LoadSpec, duration_s: float, *, warmup_s: float = 0.0,
                        seed: int = 0, interval_s: float = CONTROL_INTERVAL_S):
    """The Oracle's truth for one run: every configuration held over the run's own request stream
    (same warm-up, seed and interval; `pals.runtime.delivered`)."""
    from pals.runtime.delivered import DeliveredTruth

    return DeliveredTruth(deployment, load, warmup_s + duration_s, start_s=warmup_s, seed=seed, interval_s=interval_s)


def run_scenario(
    deployment: Deployment,
    load: LoadSpec,
    policy_name: str,
    duration_s: float,
    target_tps: float | None = None,
    budget: PowerBudget | None = None,
    budget_schedule: BudgetSchedule | None = None,
    predictor=None,
    truth=None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    endpoint_port: int | None = None,
    interval_s: float = CONTROL_INTERVAL_S,
    noise: NoiseConfig | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    decision_log_name: str = "decisions.jsonl",
    options: PolicyOptions = PolicyOptions(),
    warmup_s: float = 0.0,
    power_model: NodePowerModel | None = None,
) -> ScenarioResult:
    """Run one policy on a fresh simulated node and summarise it.

    Every policy of a comparison gets the same node, seed and request stream: only the policy differs.

    Args:
        truth: the Oracle's ground truth of the delivered load; built here for the Oracle when None
            (`delivered_truth_for`).
        options: objective, the static policy's configuration, the Oracle's QoS allowance.
        warmup_s: simulated seconds the node serves its load at its initial configuration before
            control starts (a warm node: queues and batches at steady state). Units: s.
        power_model: the loop's node-power line (None: the predictor's fitted one, else the paper's).
    """
    if policy_name == "oracle" and truth is None:
        truth = delivered_truth_for(deployment, load, duration_s, warmup_s=warmup_s, seed=seed, interval_s=interval_s)
    node = SimNode(deployment.sim_spec(), make_workload(load), seed=seed, noise=noise)
    settings = ControlSettings(policy_name, options=options, interval_s=interval_s, budget=budget,
                               target_tps=target_tps, budget_schedule=budget_schedule, endpoint_port=endpoint_port,
                               decision_log=None if out_dir is None else Path(out_dir) / decision_log_name)
    controller = build_controller(node, settings, predictor=predictor, truth=truth, power_model=power_model)
    try:
        if warmup_s > 0:
            node.clock.wait_until(warmup_s)
        energy0, node_j0, tokens0 = node.energy_j_total(), node.node_energy_j_total(), node.generated_tokens_total()
        controller.run(duration_s=duration_s, on_step=on_step)
    finally:
        controller.close()
    loop = controller.loop
    summary = loop.summary()
    summary["policy"] = policy_name
    stats = node.request_stats()
    summary["requests_finished"] = stats.finished
    summary["requests_outstanding"] = stats.outstanding
    # Ground truth over the same span, for honesty checks of the telemetry-based figures.
    truth_summary = {
        "gpu_energy_j": node.energy_j_total() - energy0,
        "node_energy_j": node.node_energy_j_total() - node_j0,
        "generated_tokens": node.generated_tokens_total() - tokens0,
    }
    return ScenarioResult(summary=summary, records=loop.log.recent(), truth_summary=truth_summary)
