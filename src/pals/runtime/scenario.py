"""One closed-loop scenario on the simulated node: the run behind `pals run`, `pals demo` and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pals.control.budget import BudgetSchedule, PowerBudget
from pals.core.paper import CONTROL_INTERVAL_S
from pals.runtime.builder import ControlSettings, build_controller
from pals.runtime.deployment import Deployment
from pals.runtime.load import LoadSpec, make_workload
from pals.runtime.truth import GroundTruth
from pals.sim.node import NoiseConfig, SimNode


@dataclass
class ScenarioResult:
    """What one scenario produced."""

    summary: dict[str, Any]
    """The loop's run summary (`pals.control.summary`) plus policy and request counts."""
    records: list[dict[str, Any]] = field(repr=False)
    """The decision records, one per interval."""
    truth_summary: dict[str, Any] = field(default_factory=dict)
    """The simulator's exact GPU and node energy and generated tokens over the run."""


def run_scenario(
    deployment: Deployment,
    load: LoadSpec,
    policy_name: str,
    duration_s: float,
    target_tps: float | None = None,
    budget: PowerBudget | None = None,
    budget_schedule: BudgetSchedule | None = None,
    predictor=None,
    truth: GroundTruth | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    endpoint_port: int | None = None,
    interval_s: float = CONTROL_INTERVAL_S,
    noise: NoiseConfig | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    decision_log_name: str = "decisions.jsonl",
) -> ScenarioResult:
    """Run one policy on a fresh simulated node and summarise it.

    Every policy of a comparison gets the same node, seed and request stream: only the policy differs.
    """
    node = SimNode(deployment.sim_spec(), make_workload(load), seed=seed, noise=noise)
    settings = ControlSettings(policy_name, interval_s=interval_s, budget=budget, target_tps=target_tps,
                               budget_schedule=budget_schedule, endpoint_port=endpoint_port,
                               decision_log=None if out_dir is None else Path(out_dir) / decision_log_name)
    controller = build_controller(node, settings, predictor=predictor, truth=truth)
    try:
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
        "gpu_energy_j": node.energy_j_total(),
        "node_energy_j": node.node_energy_j_total(),
        "generated_tokens": node.generated_tokens_total(),
    }
    return ScenarioResult(summary=summary, records=loop.log.recent(), truth_summary=truth_summary)
