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
(`pals.control.record`), which the decision log, the metrics, `status()` and `summary()` read.
`set_budget`, `set_target`, `set_slo` and `status` are thread-safe: the HTTP endpoint calls them from its own
thread; a change is picked up at the next step and the policy acts on it at once. A
`BudgetSchedule` (demand response) overrides the budget as run time passes its steps.

The loop outlives its faults. Each sample passes the `TelemetryGuard` (`pals.control.telemetry_guard`:
non-finite or implausible readings rejected, counters rebased); an exception from the node, the
policy or the decision-log file is caught, counted (`health` in `status()`, `pals_*_errors_total`
in the metrics) and logged as a warning, and control goes on. An interval with no usable
telemetry, or one too short to rate, holds the configuration (unless the budget or target just
changed: then the policy acts at once); after `max_bad_samples` bad samples in a row the node goes
to the safe configuration (`safe_configuration`) until good samples return. `summary()` covers the
whole run (`SummaryAccumulator`), however few records stay in memory. To stop a run cleanly and
still summarise it, pass `run(stop=event)` and set the event (`install_stop_signals` maps
SIGINT/SIGTERM to it).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from typing import Any

from pals.control.budget import BudgetSchedule, PowerBudget, ThroughputTarget
from pals.control.decision_log import DecisionLog
from pals.control.metrics import HEALTH_COUNTERS, ControllerMetrics
from pals.control.policies import Policy, capacity_limited
from pals.control.qos import DEFAULT_QOS_TOLERANCE, DEFAULT_QOS_WINDOW_S, QosWindow
from pals.control.record import IntervalRecord, IntervalSample, Measured, Prediction, json_ready, logged_budget, logged_target, plain
from pals.control.slo import Slo, slo_breaches
from pals.control.summary import SummaryAccumulator
from pals.control.telemetry_guard import TelemetryGuard, TelemetryGuardConfig, safe_configuration
from pals.control.types import Configuration, Decision, DecisionContext, Observation, observe
from pals.core.clock import Clock, WallClock
from pals.core.node import Actuation, Node, Sample
from pals.core.power import NodePowerModel
from pals.errors import ConfigError, PalsError

_WARNING_NUMBERS = re.compile(r"\d[\d.,]*")
"""Numbers inside a warning's text; warnings that differ only in them are one kind."""
_MAX_WARNING_KINDS = 200
"""Kinds of warning remembered for the summary; later kinds are counted together (a fault whose
message changes every time must not grow the loop's memory)."""
_OTHER_WARNINGS = "other warnings (more kinds than the summary keeps)"

_log = logging.getLogger(__name__)


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
        telemetry: limits on telemetry and the safe-mode trigger (`TelemetryGuardConfig`).
        slo: initial latency SLO (`pals.control.slo.Slo`; None: none).
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
        telemetry: TelemetryGuardConfig | None = None,
        slo: Slo | None = None,
    ) -> None:
        if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s) and interval_s > 0):
            raise ConfigError(f"interval_s must be a finite number > 0, got {interval_s}")
        self.node = node
        self.policy = policy
        self.clock = clock
        self.interval_s = float(interval_s)
        self.power_model = power_model or NodePowerModel()
        self.qos_tolerance = qos_tolerance
        self.qos = QosWindow(qos_window_s, qos_tolerance)
        self.schedule = budget_schedule
        self.log = decision_log if isinstance(decision_log, DecisionLog) else DecisionLog(decision_log)
        self.constraints = node.constraints()
        self.metrics = ControllerMetrics(registry, policy=self.policy_name, constraints=self.constraints)
        self.telemetry = telemetry or TelemetryGuardConfig()
        self.guard = TelemetryGuard(self.constraints, self.telemetry, self.power_model)
        self.min_span_s = self.telemetry.min_span_frac * self.interval_s
        self._summary = SummaryAccumulator(qos_tolerance=qos_tolerance)
        self._lock = threading.RLock()
        self._budget = budget
        self._target = target
        self._slo = _checked_slo(slo)
        self._generation = 1
        """Bumped at every budget, target or SLO change; the policy has acted on `_decided_generation`."""
        self._decided_generation = 0
        self._previous: Sample | None = None
        """The sample the next observation is measured from (the last one rated, or the first)."""
        self._known_config: Configuration | None = None
        self._last_record: IntervalRecord | None = None
        self._last_sample: IntervalSample | None = None
        """The last interval measured (`status()` serves it through held intervals)."""
        self.last_json: dict[str, Any] | None = None
        """The last record as logged (`IntervalRecord.to_json()`, computed once per step; read only)."""
        self._in_force_prediction: Prediction | None = None
        self._warnings: dict[str, tuple[str, int]] = {}  # kind -> (latest text, intervals raised)
        self._current_warnings: tuple[str, ...] = ()
        self._pending_warnings: list[str] = []
        self._log_errors_seen = 0
        self.health: dict[str, int] = dict.fromkeys(HEALTH_COUNTERS, 0)
        """Faults the loop went past (keys as `pals.control.metrics.HEALTH_COUNTERS`)."""
        self.last_error: str | None = None
        self.safe_mode_intervals = 0
        self.interval_index = 0
        self.start_time_s: float | None = None
        self.config_changes = 0
        self.governor_trims = 0
        self.metrics.set_safe_mode(False)

    # -- external constraints (thread-safe) ------------------------------------------------

    def set_budget(self, budget: PowerBudget | None) -> None:
        """Replace the power budget; the policy reacts at the next interval."""
        with self._lock:
            if budget != self._budget:
                self._budget = budget
                self._generation += 1

    def set_target(self, target: ThroughputTarget | None) -> None:
        """Replace the throughput target; the policy reacts at the next interval."""
        with self._lock:
            if target != self._target:
                self._target = target
                self._generation += 1

    def set_slo(self, slo: Slo | None) -> None:
        """Replace the latency SLO (None removes it); the policy reacts at the next interval."""
        slo = _checked_slo(slo)
        with self._lock:
            if slo != self._slo:
                self._slo = slo
                self._generation += 1

    @property
    def slo(self) -> Slo | None:
        with self._lock:
            return self._slo

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

    @property
    def safe_mode(self) -> bool:
        """True while the safe configuration is in force (bad telemetry)."""
        return self.guard.safe

    # -- one interval -------------------------------------------------------------------------

    def step(self) -> IntervalRecord:
        """Sample, decide and apply once; append and return the interval's record. Never raises
        for a fault of the node, the policy or the log file (see the module docstring)."""
        telemetry_warnings = self._take_pending_warnings()
        sample = self._read_sample(telemetry_warnings)
        time_s = sample.time_s if sample is not None else self.clock.now_s()
        if self.start_time_s is None:
            self.start_time_s = time_s
        elapsed_s = time_s - self.start_time_s
        obs, hold = self._observe(sample)
        if sample is not None:
            caps = sample.gpu_power_cap_w
            self._known_config = Configuration(float(sum(caps) / max(len(caps), 1)), int(sample.batch_cap))
        current = self._known_config
        budget, target, slo, generation = self._constraints_at(elapsed_s)
        decision, decide_ms = self._choose(current, obs, hold, budget, target, slo, generation, telemetry_warnings)
        notes = sample.notes if sample is not None else ()
        warnings = list(decision.warnings) + [n for n in notes if n not in decision.warnings] + telemetry_warnings
        changed_config = self._apply(decision, current, warnings)
        predicted, measured, limited, violation = (
            self._measure(obs, budget, target) if obs is not None else (None, None, None, False)
        )
        nominal = current or decision.config
        record = IntervalRecord(
            t_s=plain(round(elapsed_s, 4)),
            time_s=plain(round(time_s, 4)),
            interval=self.interval_index,
            interval_s=plain(round(obs.interval_s, 4)) if obs is not None else 0.0,
            policy=self.policy_name,
            sample=IntervalSample.from_observation(obs) if obs is not None else None,
            budget=logged_budget(budget),
            target=logged_target(target),
            decision=decision.as_logged(),
            config_changed=changed_config,
            governor_trim=bool(changed_config and decision.governor_trim),
            at_max_config=self._at_max(nominal),
            decide_ms=round(decide_ms, 3),
            warnings=tuple(warnings),
            predicted=predicted,
            measured=measured,
            capacity_limited=limited,
            qos_violation=violation,
            slo=slo,
            slo_violation=obs is not None and any(_slo_breaches(slo, obs)),
        )
        self._remember_prediction(decision, changed_config)
        self.last_json = self.log.append(record)
        self._note_log_errors()
        self.metrics.update(record, sample)
        self._summary.add(record)
        self._remember(record)
        self.interval_index += 1
        return record

    def _read_sample(self, warnings: list[str]) -> Sample | None:
        """The node's sample through the telemetry guard; None when there is none to use."""
        try:
            raw = self.node.sample()
        except Exception as error:  # any fault of the node: keep controlling, say so
            self._fault("node_errors", f"node.sample() failed: {type(error).__name__}: {error}", warnings)
            self._safe_mode_changed(self.guard.failed(), warnings)
            return None
        try:
            result, toggled = self.guard.check(raw)
        except Exception as error:  # fields of the wrong type: the sample cannot be read at all
            self._fault("rejected_samples", f"node.sample() returned a malformed sample: {type(error).__name__}: {error}",
                        warnings)
            self._safe_mode_changed(self.guard.failed(), warnings)
            return None
        warnings.extend(result.warnings)
        if result.bad:
            self._count("rejected_samples")
        elif result.warnings:
            self._count("repaired_samples")
        self._safe_mode_changed(toggled, warnings)
        return result.sample

    def _observe(self, sample: Sample | None) -> tuple[Observation | None, str | None]:
        """The interval's observation, or None and why there is none (None again on the first interval)."""
        if sample is None:
            return None, "no usable telemetry this interval"
        if self._previous is None:
            self._previous = sample
            return None, None
        previous = self._previous
        span_s = sample.time_s - previous.time_s
        engine_span_s = (sample.time_s - sample.age_s) - (previous.time_s - previous.age_s)
        if min(span_s, engine_span_s) < self.min_span_s:
            # A rate over a few milliseconds (a step that ran late, then one on time) is noise, and
            # engine counters that have not moved on (a scrape that failed and was reused) rate
            # nothing now and everything later: this sample is dropped and the next interval spans both.
            self._count("merged_intervals")
            what = "" if span_s < self.min_span_s else "engine data "
            return None, (f"only {min(span_s, engine_span_s):.3f} s of new {what}data since the last rated "
                          "sample: merged into the next interval")
        obs = observe(self._previous, sample, self.power_model)
        self._previous = sample
        return obs, None

    def _constraints_at(self, elapsed_s: float) -> tuple[PowerBudget | None, ThroughputTarget | None, Slo | None, int]:
        """Budget, target and SLO for this interval (the schedule applied) and their generation."""
        with self._lock:
            if self.schedule is not None:
                scheduled = self.schedule.budget_at(elapsed_s)
                if scheduled is not None and scheduled != self._budget:
                    self._budget = scheduled
                    self._generation += 1
            return self._budget, self._target, self._slo, self._generation

    def _choose(
        self,
        current: Configuration | None,
        obs: Observation | None,
        hold: str | None,
        budget: PowerBudget | None,
        target: ThroughputTarget | None,
        slo: Slo | None,
        generation: int,
        warnings: list[str],
    ) -> tuple[Decision, float]:
        """This interval's decision: the safe configuration, a hold, or the policy's (with its wall time, ms)."""
        if self.guard.safe:
            self.safe_mode_intervals += 1
            config = safe_configuration(self.constraints, budget, current, self.power_model)
            reason = (f"safe configuration: {self.guard.bad_streak} bad samples in a row; "
                      f"waiting for {self.telemetry.recover_good_samples} good ones")
            return Decision(config, reason, candidates_considered=0, candidates_feasible=0,
                            extra={"safe_mode": True}), 0.0
        changed = generation != self._decided_generation
        if current is None or (obs is None and hold is not None and not changed):
            why = hold if current is not None else "the node has not reported its configuration yet"
            return self._held(current, f"held: {why}"), 0.0
        decision, decide_ms = self._decide(current, obs, budget, target, slo, changed, warnings)
        if decision is None:
            return self._held(current, "held: the policy failed"), decide_ms
        self._decided_generation = generation
        return decision, decide_ms

    def _held(self, current: Configuration | None, reason: str) -> Decision:
        """Keep the configuration in force (the nominal maximum stands in when none is known: nothing is applied)."""
        c = self.constraints
        config = current if current is not None else Configuration(c.power_cap_max_w, c.batch_cap_max)
        return Decision(config, reason, candidates_considered=0, candidates_feasible=0)

    def _decide(
        self,
        current: Configuration,
        obs: Observation | None,
        budget: PowerBudget | None,
        target: ThroughputTarget | None,
        slo: Slo | None,
        changed: bool,
        warnings: list[str],
    ) -> tuple[Decision | None, float]:
        """The policy's decision for this interval (None when it raised) and the wall time it took (ms)."""
        ctx = DecisionContext(
            constraints=self.constraints,
            current=current,
            observation=obs,
            budget=budget,
            target=target,
            constraints_changed=changed,
            interval_index=self.interval_index,
            power_model=self.power_model,
            slo=slo,
        )
        started = time.perf_counter()
        try:
            decision = self.policy.decide(ctx)
        except Exception as error:  # a policy fault must not stop control (vLLM keeps serving)
            _log.exception("policy %s failed", self.policy_name)
            self._fault("policy_errors", f"policy {self.policy_name} failed: {type(error).__name__}: {error}", warnings)
            decision = None
        return decision, (time.perf_counter() - started) * 1000.0

    def _apply(self, decision: Decision, current: Configuration | None, warnings: list[str]) -> bool:
        """Apply the decided configuration if it differs from `current`; True when it was applied.

        A hold with nothing known is never applied. A failed actuation is appended to `warnings`
        and the loop keeps controlling (the next interval tries again if still needed).
        """
        chosen = decision.config
        settable = self.constraints.power_cap_settable
        if current is None:
            if not self.guard.safe:
                return False
            cap_moved, batch_moved = settable, True
        else:
            cap_moved = settable and abs(chosen.power_cap_w - current.power_cap_w) > 0.5
            batch_moved = chosen.batch_cap != current.batch_cap
        if not (cap_moved or batch_moved):
            return False
        actuation = Actuation(power_cap_w=chosen.power_cap_w if settable else None, batch_cap=chosen.batch_cap)
        try:
            self.constraints.check(actuation)
        except PalsError as error:
            warnings.append(f"could not apply {chosen.as_dict()}: {error}")
            return False
        try:
            self.node.apply(actuation)
        except Exception as error:  # keep controlling; say so loudly
            kind = "" if isinstance(error, PalsError) else f"{type(error).__name__}: "
            self._fault("node_errors", f"could not apply {chosen.as_dict()}: {kind}{error}", warnings)
            return False
        self._known_config = chosen
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

    def _remember(self, record: IntervalRecord) -> None:
        """Keep the record and its warnings for `status()` and the summary."""
        with self._lock:
            self._last_record = record
            if record.sample is not None:
                self._last_sample = record.sample
            self._current_warnings = record.warnings
            for w in record.warnings:
                # One entry per kind of warning: the live numbers in a text (a predicted maximum
                # that moves with every correction) would otherwise make each interval's unique.
                kind = _WARNING_NUMBERS.sub("#", w)
                if kind not in self._warnings and len(self._warnings) >= _MAX_WARNING_KINDS:
                    kind = w = _OTHER_WARNINGS
                _, count = self._warnings.get(kind, (w, 0))
                self._warnings[kind] = (w, count + 1)

    # -- faults ------------------------------------------------------------------------------------

    def _count(self, name: str, amount: int = 1) -> None:
        self.health[name] += amount
        self.metrics.count(name, amount)

    def _fault(self, name: str, message: str, warnings: list[str]) -> None:
        """Count a caught fault, keep its message for `status()`, and warn in this interval's record."""
        self._count(name)
        self.last_error = message
        warnings.append(message)
        if self.health[name] in (1, 10, 100) or self.health[name] % 1000 == 0:
            _log.warning("%s (%s: %d so far)", message, name, self.health[name])

    def _safe_mode_changed(self, toggled: bool, warnings: list[str]) -> None:
        if not toggled:
            return
        if self.guard.safe:
            self._count("safe_mode_entries")
            message = (f"{self.guard.bad_streak} bad telemetry samples in a row: "
                       "moved to the safe configuration (budget-safe cap, full batch)")
        else:
            # Back to the policy, which re-decides at once on the telemetry that has returned.
            self._decided_generation = -1
            message = f"{self.telemetry.recover_good_samples} good samples in a row: control returns to the policy"
        _log.warning(message)
        warnings.append(message)
        self.metrics.set_safe_mode(self.guard.safe)

    def _note_log_errors(self) -> None:
        """Count the decision log's new failures and warn about them in the next record."""
        errors = self.log.errors
        if errors > self._log_errors_seen:
            self._count("log_errors", errors - self._log_errors_seen)
            self._log_errors_seen = errors
            self.last_error = f"decision log: {self.log.last_error}"
            self._pending_warnings.append(f"decision log {self.log.path}: {self.log.last_error} "
                                          f"({self.log.lines_lost} lines kept in memory only)")

    def _take_pending_warnings(self) -> list[str]:
        pending, self._pending_warnings = self._pending_warnings, []
        return pending

    # -- driving ---------------------------------------------------------------------------------

    def run(self, duration_s: float | None = None, stop: threading.Event | None = None, on_step=None) -> None:
        """Step every `interval_s` until `duration_s` of node time has passed or `stop` is set.

        The first step (t = 0) only sets the initial configuration; the run then covers
        `duration_s / interval_s` observed intervals. Ticks are slots on a fixed grid: on a real
        clock a step that overruns its slot skips the slots it missed (counted as
        `ticks_skipped`) and the next one starts on the next slot boundary, never in a burst.
        Setting `stop` ends the run after the step in progress (within one interval); the loop
        then returns normally, so the caller can write the summary.

        `on_step` is called after each step with the record's JSON form (`IntervalRecord.to_json()`,
        the logged line, shared with the log: read it, don't modify it), which the CLI's progress
        lines still index by key.
        """
        if duration_s is not None and not duration_s > 0:
            raise ConfigError(f"duration_s must be positive, got {duration_s}")
        next_s = self.clock.now_s()
        first_s = next_s
        while True:
            if stop is not None and stop.is_set():
                break
            self.step()
            if on_step is not None:
                on_step(self.last_json)
            if duration_s is not None and self.clock.now_s() - first_s >= duration_s - 1e-9:
                break
            next_s += self.interval_s
            now_s = self.clock.now_s()
            if next_s < now_s:
                missed = math.floor((now_s - next_s) / self.interval_s) + 1
                next_s += missed * self.interval_s
                self._count("ticks_skipped", missed)
            self._wait_until(next_s, stop)

    def _wait_until(self, t_s: float, stop: threading.Event | None) -> None:
        """Wait for the next tick; on the wall clock a set `stop` cuts the wait short."""
        if stop is not None and isinstance(self.clock, WallClock):
            stop.wait(max(0.0, t_s - self.clock.now_s()))
            if stop.is_set():
                return
        self.clock.wait_until(t_s)

    def close(self) -> None:
        self.log.close()

    # -- introspection ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Configuration, last sample, budget, target, policy, warnings and health (JSON-ready)."""
        with self._lock:
            record = self._last_record
            budget, target, slo = self._budget, self._target, self._slo
            sample = self._last_sample
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
                "slo": None if slo is None else slo.to_json(),
                "constraints": self._constraints_json(),
                "config_changes": self.config_changes,
                "governor_trims": self.governor_trims,
                "warnings": list(self._current_warnings),
                "safe_mode": self.guard.safe,
                "health": self.health_json(),
            }

    def health_json(self) -> dict[str, Any]:
        """Faults the loop went past so far, the safe mode and the last error (JSON-ready)."""
        return {
            **self.health,
            "safe_mode": self.guard.safe,
            "safe_mode_intervals": self.safe_mode_intervals,
            "bad_samples_in_a_row": self.guard.bad_streak,
            "log_lines_lost": self.log.lines_lost,
            "last_error": self.last_error,
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

    def restart_summary(self) -> None:
        """Score from here on: the run's figures (`summary`) cover only the intervals after this call.

        For a run whose first part is not scored (an experiment's warm-up, during which the policy
        already observes and controls the node); the policy, the QoS window and the log carry on.
        """
        with self._lock:
            self._summary = SummaryAccumulator(qos_tolerance=self.qos_tolerance)

    def warnings_seen(self) -> dict[str, int]:
        """Every warning raised during the run, with the number of intervals it was raised in."""
        with self._lock:
            return {latest: count for latest, count in self._warnings.values()}

    def summary(self) -> dict[str, Any]:
        """Run figures over the whole run (see `pals.control.summary`), the warnings raised, and,
        when the loop went past any fault, `health` (`health_json()`; absent on a clean run)."""
        out = self._summary.figures()
        seen = self.warnings_seen()
        out["warnings"] = sorted(seen, key=lambda w: -seen[w])
        if any(self.health.values()) or self.safe_mode_intervals or self.log.lines_lost:
            out["health"] = self.health_json()
        return out


def _checked_slo(slo: Slo | None) -> Slo | None:
    if slo is not None and not isinstance(slo, Slo):
        raise ConfigError(f"slo must be a pals.control.slo.Slo or None, got {slo!r}")
    return slo


def _slo_breaches(slo: Slo | None, obs: Observation) -> tuple[bool, bool]:
    """(TPOT broken, TTFT broken) over the interval just observed (`pals.control.slo.slo_breaches`)."""
    if slo is None:
        return False, False
    tpot = None if obs.tpot is None or not obs.tpot.count else obs.tpot.quantile_s(slo.quantile)
    ttft = None if obs.ttft is None or not obs.ttft.count else obs.ttft.quantile_s(slo.quantile)
    return slo_breaches(slo, tpot, ttft, obs.requests_running + obs.requests_waiting > 0)
