"""One closed-loop scenario on the simulated node: the run behind `pals run`, `pals demo`, the hindsight
oracle (`pals.runtime.hindsight`) and the benchmarks."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pals.control.slo import Slo
from pals.control.budget import BudgetSchedule, PowerBudget
from pals.control.decision_log import DecisionLog
from pals.control.policies import PolicyOptions
from pals.core.paper import CONTROL_INTERVAL_S
from pals.core.power import NodePowerModel
from pals.runtime.builder import ControlSettings, Controller, build_controller
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
    interrupted: bool = False
    """True when `stop` ended the run before `duration_s` (the summary covers the span actually run)."""


@dataclass(frozen=True)
class EndpointSpec:
    """Where and how a scenario serves its control endpoint (`pals.control.endpoint.Endpoint`)."""

    port: int
    """TCP port; 0: any free one."""
    host: str = "127.0.0.1"
    """Address to bind; anything but loopback needs `token`."""
    token: str | None = field(default=None, repr=False)
    """Bearer token for mutating routes (`pals.control.auth.resolve_token`); kept out of repr."""
    allowed_hosts: tuple[str, ...] = ()
    """Extra names clients may put in Host/Origin."""


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
    endpoint: EndpointSpec | None = None,
    interval_s: float = CONTROL_INTERVAL_S,
    noise: NoiseConfig | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    decision_log_name: str = "decisions.jsonl",
    options: PolicyOptions = PolicyOptions(),
    warmup_s: float = 0.0,
    power_model: NodePowerModel | None = None,
    stop: threading.Event | None = None,
    on_start: Callable[[Controller], None] | None = None,
    slo: Slo | None = None, latency_model=None,
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
        endpoint_port: shorthand for `endpoint=EndpointSpec(endpoint_port)` (loopback, no token).
        endpoint: serve the control endpoint while running (host, port, token, allowed hosts).
        stop: set it (e.g. from a signal handler, `pals.control.stopping`) to end the run within one
            interval; the result is still summarised, with `interrupted` True.
        on_start: called with the built controller before the first step (e.g. to print the endpoint's URL).
        slo: latency SLO in force from the start; latency_model: what predicts it per candidate.

    The decision log (`out_dir/decision_log_name`) starts afresh for each scenario; an earlier one
    there is rotated away, not lost (`DecisionLog(append=False)`).
    """
    if policy_name == "oracle" and truth is None:
        truth = delivered_truth_for(deployment, load, duration_s, warmup_s=warmup_s, seed=seed, interval_s=interval_s)
    if endpoint is None and endpoint_port is not None:
        endpoint = EndpointSpec(endpoint_port)
    node = SimNode(deployment.sim_spec(), make_workload(load), seed=seed, noise=noise)
    log = None if out_dir is None else DecisionLog(Path(out_dir) / decision_log_name, append=False)
    settings = ControlSettings(policy_name, options=options, interval_s=interval_s, budget=budget,
                               target_tps=target_tps, budget_schedule=budget_schedule, decision_log=log, slo=slo,
                               **({} if endpoint is None else dict(
                                   endpoint_port=endpoint.port, endpoint_host=endpoint.host,
                                   endpoint_token=endpoint.token, endpoint_allowed_hosts=tuple(endpoint.allowed_hosts))))
    try:
        controller = build_controller(node, settings, predictor=predictor, truth=truth, power_model=power_model,
                                      latency_model=latency_model)
    except BaseException:
        if log is not None:
            log.close()
        raise
    try:
        if on_start is not None:
            on_start(controller)
        if warmup_s > 0:
            node.clock.wait_until(warmup_s)
        energy0, node_j0, tokens0 = node.energy_j_total(), node.node_energy_j_total(), node.generated_tokens_total()
        controller.run(duration_s=duration_s, stop=stop, on_step=on_step)
    finally:
        controller.close()
    loop = controller.loop
    interrupted = stop is not None and stop.is_set()
    summary = loop.summary()
    summary["policy"] = policy_name
    if interrupted:
        summary["interrupted"] = True
    stats = node.request_stats()
    summary["requests_finished"] = stats.finished
    summary["requests_outstanding"] = stats.outstanding
    # Ground truth over the same span, for honesty checks of the telemetry-based figures.
    truth_summary = {
        "gpu_energy_j": node.energy_j_total() - energy0,
        "node_energy_j": node.node_energy_j_total() - node_j0,
        "generated_tokens": node.generated_tokens_total() - tokens0,
    }
    return ScenarioResult(summary=summary, records=loop.log.recent(), truth_summary=truth_summary,
                          interrupted=interrupted)
