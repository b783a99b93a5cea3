"""The control loop: sample -> decide -> apply -> wait, once per interval, over any node.

Usage (the same on the simulated node and on a real one; only the clock differs)::

    loop = ControlLoop(node, make_policy("pals", predictor=p), clock,
                       interval_s=0.5, budget=PowerBudget(1500, "node"),
                       target=ThroughputTarget(2000), decision_log="run/decisions.jsonl")
    Endpoint(loop, port=9400).start()        # optional: HTTP control + /metrics
    loop.run(duration_s=600)                 # or run(stop=threading.Event()) until set
    summary = loop.summary()

`step()` runs exactly one interval's sample/decide/apply (no waiting), so tests and other
drivers can pace it themselves, and returns the interval's `IntervalRecord`
(`pals.control.record`), which the decision log, the metrics, `status()` and `summary()` read. `set_budget`, `set_target` and `status` are thread-safe: the
HTTP endpoint calls them from its own thread; a change is picked up at the next step and the
policy acts on it at once. A `BudgetSchedule` (demand response) overrides the budget as run time
passes its steps.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from pals.control.budget import BudgetSchedule, PowerBudget, ThroughputTarget
from pals.control.decision_log import DecisionLog
from pals.control.metrics import ControllerMetrics
from pals.control.policies import Policy, capacity_limited
from pals.control.qos import DEFAULT_QOS_TOLERANCE, DEFAULT_QOS_WINDOW_S, QosWindow
from pals.control.record import IntervalRecord, IntervalSample, Measured, Prediction, json_ready, logged_budget, logged_target, plain
from pals.control.summary import summarize
from pals.control.types import Configuration, Decision, DecisionContext, Observation, observe
from pals.core.clock import Clock
from pals.core.node import Actuation, Node, Sample
from pals.core.power import NodePowerModel
from pals.errors import ConfigError, PalsError

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
        self._last_record: IntervalRecord | None = None
        self._in_force_prediction: Prediction | None = None
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
    def policy_name(self) -> str:
        """The policy's registered name (its class name when it has none)."""
        return getattr(self.policy, "name", type(self.policy).__name__)

    @property
    def budget(self) -> PowerBudget | None:
        with self._lock:
            return self._budget

    @property
    def target(self) -> ThroughputTarget | None:
        with self._lock:
            return self._target

    # -- one interval -------------------------------------------------------------------------

    def step(self) -> IntervalRecord:
        """Sample, decide and apply once; append and return the interval's record."""
        sample = self.node.sample()
        if self.start_time_s is None:
            self.start_time_s = sample.time_s
        elapsed_s = sample.time_s - self.start_time_s
        obs = observe(self._previous, sample, self.power_model) if self._previous is not None else None
        budget, target, changed = self._constraints_at(elapsed_s)
        current = Configuration(
            float(sum(sample.gpu_power_cap_w) / max(len(sample.gpu_power_cap_w), 1)), int(sample.batch_cap)
        )
        decision, decide_ms = self._decide(current, obs, budget, target, changed)
        warnings = list(decision.warnings) + [n for n in sample.notes if n not in decision.warnings]
        changed_config = self._apply(decision, current, warnings)
        predicted, measured, limited, violation = (
            self._measure(obs, budget, target) if obs is not None else (None, None, None, False)
        )
        record = IntervalRecord(
            t_s=plain(round(elapsed_s, 4)),
            time_s=plain(round(sample.time_s, 4)),
            interval=self.interval_index,
            interval_s=plain(round(obs.interval_s, 4)) if obs is not None else 0.0,
            policy=self.policy_name,
            sample=IntervalSample.from_observation(obs) if obs is not None else None,
            budget=logged_budget(budget),
            target=logged_target(target),
            decision=decision.as_logged(),
            config_changed=changed_config,
            governor_trim=bool(changed_config and decision.governor_trim),
            at_max_config=self._at_max(current),
            decide_ms=round(decide_ms, 3),
            warnings=tuple(warnings),
            predicted=predicted,
            measured=measured,
            capacity_limited=limited,
            qos_violation=violation,
        )
        self._remember_prediction(decision, changed_config)
        self.log.append(record)
        self.metrics.update(record)
        self._remember(sample, record)
        self.interval_index += 1
        return record

    def _constraints_at(self, elapsed_s: float) -> tuple[PowerBudget | None, ThroughputTarget | None, bool]:
        """Budget and target for this interval (the schedule applied) and whether either changed."""
        with self._lock:
            if self.schedule is not None:
                scheduled = self.schedule.budget_at(elapsed_s)
                if scheduled is not None and scheduled != self._budget:
                    self._budget = scheduled
                    self._changed = True
            budget, target, changed = self._budget, self._target, self._changed
            self._changed = False
        return budget, target, changed

    def _decide(
        self,
        current: Configuration,
        obs: Observation | None,
        budget: PowerBudget | None,
        target: ThroughputTarget | None,
        changed: bool,
    ) -> tuple[Decision, float]:
        """The policy's decision for this interval and the wall time it took (ms)."""
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
        return decision, (time.perf_counter() - started) * 1000.0

    def _apply(self, decision: Decision, current: Configuration, warnings: list[str]) -> bool:
        """Apply the decided configuration if it differs from `current`; True when it was applied.

        A failed actuation is appended to `warnings` and the loop keeps controlling.
        """
        chosen = decision.config
        cap_moved = self.constraints.power_cap_settable and abs(chosen.power_cap_w - current.power_cap_w) > 0.5
        if not (cap_moved or chosen.batch_cap != current.batch_cap):
            return False
        actuation = Actuation(
            power_cap_w=chosen.power_cap_w if self.constraints.power_cap_settable else None,
            batch_cap=chosen.batch_cap,
        )
        try:
            self.constraints.check(actuation)
            self.node.apply(actuation)
        except PalsError as error:  # keep controlling; say so loudly
            warnings.append(f"could not apply {chosen.as_dict()}: {error}")
            return False
        if decision.governor_trim:
            self.governor_trims += 1
        else:
            self.config_changes += 1
        return True

    def _at_max(self, current: Configuration) -> bool:
        """True when `current` is the node's maximum configuration (a settable cap at its top too)."""
        c = self.constraints
        return bool(
            (not c.power_cap_settable or current.power_cap_w >= c.power_cap_max_w - 0.5)
            and current.batch_cap >= c.batch_cap_max
        )

    def _measure(
        self, obs: Observation, budget: PowerBudget | None, target: ThroughputTarget | None
    ) -> tuple[Prediction | None, Measured, bool, bool]:
        """The prediction in force vs the measurement, capacity-limited, and the QoS test."""
        window_tps, violation = self.qos.add(
            obs.generated_tokens, obs.interval_s, obs.requests_waiting, None if target is None else target.target_tps
        )
        measured = Measured.from_observation(obs, budget, window_tps)
        limited = bool(capacity_limited(obs, self.constraints.replicas))
        return self._in_force_prediction, measured, limited, bool(violation)

    def _remember_prediction(self, decision: Decision, changed_config: bool) -> None:
        """The prediction the next interval's measurement is set against (kept until replaced)."""
        if decision.predicted_throughput_tps is not None and decision.candidates_considered > 0:
            self._in_force_prediction = Prediction.from_decision(decision)
        elif changed_config:
            self._in_force_prediction = None

    def _remember(self, sample: Sample, record: IntervalRecord) -> None:
        """Keep the sample for the next observation and the record and warnings for `status()`."""
        with self._lock:
            self._previous = sample
            self._last_record = record
            self._current_warnings = record.warnings
            for w in record.warnings:
                # One entry per kind of warning: the live numbers in a text (a predicted maximum
                # that moves with every correction) would otherwise make each interval's unique.
                kind = _WARNING_NUMBERS.sub("#", w)
                _, count = self._warnings.get(kind, (w, 0))
                self._warnings[kind] = (w, count + 1)

    # -- driving ---------------------------------------------------------------------------------

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None, on_step=None) -> None:
        """Step every `interval_s` until `duration_s` of node time has passed or `stop` is set.

        The first step (t = 0) only sets the initial configuration; the run then covers
        `duration_s / interval_s` observed intervals. On a real clock a step that overruns its
        slot starts the next one at once rather than trying to catch up.

        `on_step` is called after each step with the record's JSON form (`IntervalRecord.to_json()`,
        the logged line), which the CLI's progress lines still index by key.
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
                on_step(record.to_json())
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
            sample = None if record is None else record.sample
            return {
                "policy": self.policy_name,
                "time_s": None if record is None else record.time_s,
                "interval": self.interval_index,
                "interval_s": self.interval_s,
                "configuration": None if record is None else record.decision.config.as_dict(),
                "reason": None if record is None else record.decision.reason,
                "last_sample": None if sample is None else json_ready(sample.to_json()),
                "budget": None if budget is None else {"budget_w": budget.budget_w, "kind": budget.kind},
                "target": None if target is None else {"target_tps": target.target_tps},
                "constraints": self._constraints_json(),
                "config_changes": self.config_changes,
                "governor_trims": self.governor_trims,
                "warnings": list(self._current_warnings),
            }

    def _constraints_json(self) -> dict[str, Any]:
        c = self.constraints
        return {
            "num_gpus": c.num_gpus,
            "power_cap_min_w": c.power_cap_min_w,
            "power_cap_max_w": c.power_cap_max_w,
            "batch_cap_max": c.batch_cap_max,
            "tp": c.tp,
            "gpu": c.gpu_name,
            "model": c.model_name,
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
        out = summarize(self.log.records(), qos_tolerance=self.qos_tolerance)
        seen = self.warnings_seen()
        out["warnings"] = sorted(seen, key=lambda w: -seen[w])
        return out
