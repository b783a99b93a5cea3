"""One place that wires a running controller: node + predictor + policy + loop + node-power line + endpoint.

`pals run`, `pals demo` (through `run_scenario`), `pals serve` and the experiments build their
controllers here; `pals profile` builds its node and load through `pals.runtime.load` and
`pals.runtime.profiling`. The node comes from the caller (a `SimNode`, a `VllmNode`), so the
builder never knows which kind it drives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pals.control.slo import Slo
from pals.control.budget import BudgetSchedule, PowerBudget, ThroughputTarget
from pals.control.decision_log import DecisionLog
from pals.control.endpoint import Endpoint
from pals.control.loop import ControlLoop
from pals.control.policies import PolicyOptions, check_fixed_configuration, make_policy
from pals.core.node import Node
from pals.core.paper import CONTROL_INTERVAL_S
from pals.core.power import NodePowerModel
from pals.runtime.predictors import node_power_model


@dataclass(frozen=True)
class ControlSettings:
    """What the operator asks of one controller (everything but the node and the models)."""

    policy: str
    """Policy name in the registry (`pals.control.policies.make_policy`)."""
    options: PolicyOptions = PolicyOptions()
    """Objective (node or GPU joules), the static policy's configuration, the Oracle's QoS allowance."""
    interval_s: float = CONTROL_INTERVAL_S
    """Control interval. Units: s."""
    budget: PowerBudget | None = None
    """Initial power budget (None: unconstrained)."""
    target_tps: float | None = None
    """Initial throughput target, generated tokens/s (None: maximise tokens/J)."""
    budget_schedule: BudgetSchedule | None = None
    """Budgets over run time; when given it sets the budget as time passes."""
    decision_log: str | Path | DecisionLog | None = None
    """JSON-lines decision log: a path (continued if it exists), an open `DecisionLog` (e.g. one started
    afresh with `append=False`), or None (kept in memory only)."""
    endpoint_port: int | None = None
    """Serve the HTTP endpoint (/status, /budget, /target, /decisions, /metrics) on this port; 0: any free one."""
    endpoint_host: str = "127.0.0.1"
    """Address the endpoint listens on (anything but loopback needs `endpoint_token`)."""
    endpoint_token: str | None = field(default=None, repr=False)
    """Bearer token the endpoint requires (`pals.control.auth.resolve_token`); None: none (loopback only).
    Kept out of repr so it never reaches a log line."""
    endpoint_allowed_hosts: tuple[str, ...] = ()
    """Extra names clients may put in Host/Origin (the node's DNS name when addressed by name)."""
    slo: Slo | None = None
    """Initial latency SLO (TPOT and/or TTFT at a quantile); None: throughput target only."""


def policy_for(name: str, *, power_cap_max_w: float, batch_cap_max: int, predictor=None, truth=None,
               options: PolicyOptions = PolicyOptions()):
    """The policy `name` from the registry, over the node's fixed knobs and the given models."""
    return make_policy(name, predictor=predictor, truth=truth, power_cap_max_w=power_cap_max_w,
                       batch_cap_max=batch_cap_max, options=options)


def build_loop(node: Node, policy, power_model: NodePowerModel, *, clock=None, interval_s: float = CONTROL_INTERVAL_S,
               budget: PowerBudget | None = None, target_tps: float | None = None,
               budget_schedule: BudgetSchedule | None = None,
               decision_log: str | Path | DecisionLog | None = None, slo: Slo | None = None) -> ControlLoop:
    """A `ControlLoop` for `node` on its own clock (unless `clock` is given)."""
    return ControlLoop(node, policy, clock if clock is not None else node.clock, interval_s=interval_s, budget=budget,
                       target=None if target_tps is None else ThroughputTarget(target_tps),
                       decision_log=decision_log, budget_schedule=budget_schedule, power_model=power_model, slo=slo)


@dataclass
class Controller:
    """A built controller: its loop and, when asked for, its HTTP endpoint (already listening)."""

    node: Node
    loop: ControlLoop
    endpoint: Endpoint | None = None

    def run(self, duration_s: float | None = None, stop=None, on_step: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.loop.run(duration_s=duration_s, stop=stop, on_step=on_step)

    def close(self) -> None:
        """Stop the endpoint and close the decision log (the node is the caller's to close)."""
        try:
            if self.endpoint is not None:
                self.endpoint.stop()
        finally:
            self.loop.close()


def build_controller(node: Node, settings: ControlSettings, *, predictor=None, truth=None, clock=None,
                     power_model: NodePowerModel | None = None, latency_model=None) -> Controller:
    """Wire `settings`' policy, the models and a loop around `node`; start the endpoint if a port is set.

    Args:
        node: any `Node`; its constraints fix the knobs a policy may not move.
        settings: policy, interval, budget, target, schedule, decision log, endpoint.
        predictor: the fitted power-performance predictor (all model-guided policies).
        truth: the simulator's ground truth of the delivered load (the Oracle only;
            `pals.runtime.delivered.DeliveredTruth`).
        clock: the node's clock by default.
        power_model: node-power line of the loop; None: the predictor's fitted one, else the paper's.
        latency_model: predicts TPOT/TTFT per candidate (`pals.model.latency.LatencyPredictor`), so a
            model-guided policy can keep to `settings.slo`; None: the SLO is judged but not predicted.
    """
    constraints = node.constraints()
    fixed = settings.options.fixed
    if fixed is not None:  # one clear line before anything runs
        check_fixed_configuration(fixed.power_cap_w, fixed.batch_cap, constraints, check_cap=constraints.power_cap_settable)
    # The live workload reaches the predictor here, when it does: this is where the node (whose
    # samples carry it) and the policy meet.
    policy = policy_for(settings.policy, predictor=predictor, truth=truth, options=settings.options,
                        power_cap_max_w=constraints.power_cap_max_w, batch_cap_max=constraints.batch_cap_max)
    if latency_model is not None and hasattr(policy, "latency_model"):
        policy.latency_model = latency_model
    loop = build_loop(node, policy, power_model if power_model is not None else node_power_model(predictor),
                      clock=clock, interval_s=settings.interval_s, budget=settings.budget,
                      target_tps=settings.target_tps, budget_schedule=settings.budget_schedule,
                      decision_log=settings.decision_log, slo=settings.slo)
    endpoint = None
    if settings.endpoint_port is not None:
        try:
            endpoint = Endpoint(loop, settings.endpoint_host, settings.endpoint_port, token=settings.endpoint_token,
                                allowed_hosts=settings.endpoint_allowed_hosts).start()
        except BaseException:
            loop.close()
            raise
    return Controller(node, loop, endpoint)
