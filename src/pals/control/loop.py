"""The control loop: sample -> decide -> apply -> wait, once per interval, over any node.

Usage (the same on the simulated node and on a real one; only the clock differs)::

    loop = ControlLoop(node, make_policy("pals", predictor=p), clock,
                       interval_s=0.5, budget=PowerBudget(1500, "node"),
                       target=ThroughputTarget(2000), decision_log="run/decisions.jsonl")
    Endpoint(loop, port=9400).start()        # optional: HTTP control + /metrics
    loop.run(duration_s=600)                 # or run(stop=threading.Event()) until set
    summary = loop.summary()

`step()` runs exactly one interval's sample/decide/apply (no waiting), so tests and other
drivers can pace it themselves. `set_budget`, `set_target` and `status` are thread-safe: the
HTTP endpoint calls them from its own thread; a change is picked up at the next step and the
policy acts on it at once. A `BudgetSchedule` (demand response) overrides the budget as run time
passes its steps.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from pals.core.clock import Clock
from pals.control.budget import BudgetSchedule, PowerBudget, ThroughputTarget
from pals.control.decision_log import DecisionLog
from pals.control.metrics import ControllerMetrics
from pals.control.policies import Policy, capacity_limited
from pals.control.qos import DEFAULT_QOS_TOLERANCE, DEFAULT_QOS_WINDOW_S, QosWindow
from pals.core.power import NodePowerModel
from pals.control.types import Configuration, DecisionContext, observe
from pals.errors import ConfigError, PalsError
from pals.core.node import Actuation, Node, Sample

_WARNING_NUMBERS = re.compile(r"\d[\d.,]*")
"""Numbers inside a warning's text; warnings that differ only in them are one kind."""


class ControlLoop:
    """One controller for one node.

    Args:
        node: anything implementing the `Node` protocol.
        policy: a `Policy` (see `make_policy`).
        clock: the node's clock (`WallClock` for real nodes, the simulator's clock otherwise).
        interval_s: control interval. Units: s.
        budget: initial power budget (None: unconstrained).
        target: initial throughput target (None: maximise tokens/J).
        decision_log: path of the JSON-lines decision log, or a `DecisionLog`, or None (memory only).
        budget_schedule: optional step schedule; when given it sets the budget as time passes.
        power_model: node-power estimate used when the node reports no wall power.
        qos_tolerance, qos_window_s: the QoS-violation test (see `pals.control.qos`).
        registry: Prometheus `CollectorRegistry` for the metrics (a fresh one when None).
    """

    def __init__(
        self,
        node: Node,
        policy: Policy,
        clock: Clock,
        interval_s: float = 0.5,
        budget: PowerBudget | None = None,
        target: ThroughputTarget | None = None,
        decision_log: str | DecisionLog | None = None,
        budget_schedule: BudgetSchedule | None = None,
        power_model: NodePowerModel | None = None,
        qos_tolerance: float = DEFAULT_QOS_TOLERANCE,
        qos_window_s: float = DEFAULT_QOS_WINDOW_S,
        registry=None,
    ) -> None:
        if not interval_s > 0:
            raise ConfigError(f"interval_s must be positive, got {interval_s}")
        self.node = node
        self.policy = policy
        self.clock = clock
        self.interval_s = float(interval_s)
        self.power_model = power_model or NodePowerModel()
        self.qos_tolerance = qos_tolerance
        self.qos = QosWindow(qos_window_s, qos_tolerance)
        self.schedule = budget_schedule
        self.log = decision_log if isinstance(decision_log, DecisionLog) else DecisionLog(decision_log)
        self.metrics = ControllerMetrics(registry)
        self.constraints = node.constraints()
        self._lock = threading.RLock()
        self._budget = budget
        self._target = target
        self._changed = True
        self._previous: Sample | None = None
        self._last_record: dict[str, Any] | None = None
        self._in_force_prediction: dict[str, float | None] = {}
        self._warnings: dict[str, tuple[str, int]] = {}  # kind -> (latest text, intervals raised)
        self._current_warnings: tuple[str, ...] = ()
        self.interval_index = 0
        self.start_time_s: float | None = None
        self.config_changes = 0
        self.governor_trims = 0

    # -- external constraints (thread-safe) ------------------------------------------------

    def set_budget(self, budget: PowerBudget | None) -> None:
        """Replace the power budget; the policy reacts at the next interval."""
        with self._lock:
            if budget != self._budget:
                self._budget = budget
                self._changed = True

    def set_target(self, target: ThroughputTarget | None) -> None:
        """Replace the throughput target; the policy reacts at the next interval."""
        with self._lock:
            if target != self._target:
                self._target = target
                self._changed = True

    @property
    def budget(self) -> PowerBudget | None:
        with self._lock:
            return self._budget

    @property
    def target(self) -> ThroughputTarget | None:
        with self._lock:
            return self._target

    # -- one interval -------------------------------------------------------------------------

    def step(self) -> dict[str, Any]:
        """Sample, decide and apply once; append and return the interval's record."""
        sample = self.node.sample()
        if self.start_time_s is None:
            self.start_time_s = sample.time_s
        elapsed_s = sample.time_s - self.start_time_s
        obs = observe(self._previous, sample, self.power_model) if self._previous is not None else None
        with self._lock:
            if self.schedule is not None:
                scheduled = self.schedule.budget_at(elapsed_s)
                if scheduled is not None and scheduled != self._budget:
                    self._budget = scheduled
                    self._changed = True
            budget, target, changed = self._budget, self._target, self._changed
            self._changed = False
        current = Configuration(
            float(sum(sample.gpu_power_cap_w) / max(len(sample.gpu_power_cap_w), 1)), int(sample.batch_cap)
        )
        ctx = DecisionContext(
            constraints=self.constraints,
            current=current,
            observation=obs,
            budget=budget,
            target=target,
            constraints_changed=changed,
            interval_index=self.interval_index,
            power_model=self.power_model,
        )
        started = time.perf_counter()
        decision = self.policy.decide(ctx)
        decide_ms = (time.perf_counter() - started) * 1000.0
        warnings = list(decision.warnings) + [n for n in sample.notes if n not in decision.warnings]
        chosen = decision.config
        cap_moved = self.constraints.power_cap_settable and abs(chosen.power_cap_w - current.power_cap_w) > 0.5
        changed_config = cap_moved or chosen.batch_cap != current.batch_cap
        if changed_config:
            actuation = Actuation(
                power_cap_w=chosen.power_cap_w if self.constraints.power_cap_settable else None,
                batch_cap=chosen.batch_cap,
            )
            try:
                self.constraints.check(actuation)
                self.node.apply(actuation)
                if decision.governor_trim:
                    self.governor_trims += 1
                else:
                    self.config_changes += 1
            except PalsError as error:  # keep controlling; say so loudly
                warnings.append(f"could not apply {chosen.as_dict()}: {error}")
                changed_config = False
        record: dict[str, Any] = {
            "t_s": round(elapsed_s, 4),
            "time_s": round(sample.time_s, 4),
            "interval": self.interval_index,
            "interval_s": round(obs.interval_s, 4) if obs is not None else 0.0,
            "policy": getattr(self.policy, "name", type(self.policy).__name__),
            "sample": obs.summary() if obs is not None else None,
            "budget": None if budget is None else {"budget_w": budget.budget_w, "kind": budget.kind},
            "target": None if target is None else {"target_tps": target.target_tps},
            "decision": decision.as_dict(),
            "config_changed": changed_config,
            "governor_trim": bool(changed_config and decision.governor_trim),
            "at_max_config": bool(
                (not self.constraints.power_cap_settable or current.power_cap_w >= self.constraints.power_cap_max_w - 0.5)
                and current.batch_cap >= self.constraints.batch_cap_max
            ),
            "decide_ms": round(decide_ms, 3),
            "warnings": warnings,
        }
        if obs is not None:
            measured_power = None if budget is None else (obs.gpu_power_w if budget.kind == "gpu" else obs.node_power_w)
            record["predicted"] = dict(self._in_force_prediction)
            record["measured"] = {
                "throughput_tps": round(obs.throughput_tps, 3),
                "gpu_power_w": round(obs.gpu_power_w, 2),
                "node_power_w": round(obs.node_power_w, 2),
                "budget_power_w": None if measured_power is None else round(measured_power, 2),
            }
            window_tps, violation = self.qos.add(
                obs.generated_tokens, obs.interval_s, obs.requests_waiting, None if target is None else target.target_tps
            )
            record["measured"]["window_throughput_tps"] = round(window_tps, 3)
            record["capacity_limited"] = capacity_limited(obs, self.constraints.replicas)
            record["qos_violation"] = violation
        if decision.predicted_throughput_tps is not None and decision.candidates_considered > 0:
            self._in_force_prediction = {
                "throughput_tps": decision.predicted_throughput_tps,
                "gpu_power_w": decision.predicted_gpu_power_w,
                "node_power_w": decision.predicted_node_power_w,
            }
        elif changed_config:
            self._in_force_prediction = {}
        self.log.append(record)
        self.metrics.update(self.log.recent(1)[0])
        with self._lock:
            self._previous = sample
            self._last_record = record
            self._current_warnings = tuple(warnings)
            for w in warnings:
                # One entry per kind of warning: the live numbers in a text (a predicted maximum
                # that moves with every correction) would otherwise make each interval's unique.
                kind = _WARNING_NUMBERS.sub("#", w)
                _, count = self._warnings.get(kind, (w, 0))
                self._warnings[kind] = (w, count + 1)
        self.interval_index += 1
        return record

    # -- driving ---------------------------------------------------------------------------------

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None, on_step=None) -> None:
        """Step every `interval_s` until `duration_s` of node time has passed or `stop` is set.

        The first step (t = 0) only sets the initial configuration; the run then covers
        `duration_s / interval_s` observed intervals. On a real clock a step that overruns its
        slot starts the next one at once rather than trying to catch up.
        """
        if duration_s is not None and duration_s <= 0:
            raise ConfigError(f"duration_s must be positive, got {duration_s}")
        next_s = self.clock.now_s()
        first_s = next_s
        while True:
            if stop is not None and stop.is_set():
                break
            record = self.step()
            if on_step is not None:
                on_step(record)
            if duration_s is not None and self.clock.now_s() - first_s >= duration_s - 1e-9:
                break
            next_s += self.interval_s
            now_s = self.clock.now_s()
            if next_s < now_s:
                next_s = now_s
            self.clock.wait_until(next_s)

    def close(self) -> None:
        self.log.close()

    # -- introspection ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Configuration, last sample, budget, target, policy and warnings (JSON-ready)."""
        with self._lock:
            record = self._last_record
            budget, target = self._budget, self._target
            return {
                "policy": getattr(self.policy, "name", type(self.policy).__name__),
                "time_s": None if record is None else record["time_s"],
                "interval": self.interval_index,
                "interval_s": self.interval_s,
                "configuration": None if record is None else record["decision"]["config"],
                "reason": None if record is None else record["decision"]["reason"],
                "last_sample": None if record is None else record["sample"],
                "budget": None if budget is None else {"budget_w": budget.budget_w, "kind": budget.kind},
                "target": None if target is None else {"target_tps": target.target_tps},
                "constraints": {
                    "num_gpus": self.constraints.num_gpus,
                    "power_cap_min_w": self.constraints.power_cap_min_w,
                    "power_cap_max_w": self.constraints.power_cap_max_w,
                    "batch_cap_max": self.constraints.batch_cap_max,
                    "tp": self.constraints.tp,
                    "gpu": self.constraints.gpu_name,
                    "model": self.constraints.model_name,
                },
                "config_changes": self.config_changes,
                "governor_trims": self.governor_trims,
                "warnings": list(self._current_warnings),
            }

    def frontier(self) -> dict[str, Any]:
        """The policy's predicted table for the live workload (JSON-ready, for GET /frontier).

        One point per candidate configuration of the policy's last selection: predicted capacity
        (corrected by what the policy learnt) and busy GPU and node power. Policies without a
        predictor (Baseline) give an empty list and a reason.
        """
        table = getattr(self.policy, "predicted_table", None)
        if table is None:
            return {"points": [], "reason": f"policy {getattr(self.policy, 'name', '?')!r} has no predictor"}
        with self._lock:
            points = table()
        out: dict[str, Any] = {"points": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in point.items()} for point in points
        ]}
        if not points:
            out["reason"] = "no selection made yet"
        return out

    def warnings_seen(self) -> dict[str, int]:
        """Every warning raised during the run, with the number of intervals it was raised in."""
        with self._lock:
            return {latest: count for latest, count in self._warnings.values()}

    def summary(self) -> dict[str, Any]:
        """Run figures from the records held in memory (see `pals.control.summary`)."""
        from pals.control.summary import summarize

        out = summarize(self.log.recent(), qos_tolerance=self.qos_tolerance)
        seen = self.warnings_seen()
        out["warnings"] = sorted(seen, key=lambda w: -seen[w])
        return out
