"""Run figures from a run's `IntervalRecord`s (the same keys for `pals run`, `pals demo` and experiments).

Definitions (each interval is one control interval; records without a measured sample, i.e. the
first one, are skipped; record fields are named as in `docs/decisions-schema.md`):

- `tokens_per_joule`: generated tokens / node energy (the record's node power: the node-power line
  of `pals.core.power` on GPU power). `tokens_per_joule_gpu`: the same over GPU energy.
- `qos_violation_pct`: share of intervals that violate the throughput target as defined in
  `pals.control.qos` (trailing-window throughput short of (1 - tol) x target while requests wait);
  `qos_violation_pct_raw`: the same test on each interval's own throughput.
- Power against a budget is judged on the trailing-window mean power, as throughput is for QoS:
  P is the mean power (in the budget's kind) over the trailing `power_window_s` (default
  `DEFAULT_QOS_WINDOW_S`: interval energy over the window / its duration; `pals.control.window`), the window
  restarting at each budget change. Single 500 ms intervals swing +-3-5 % at a fixed cap (the mix
  of prefill and decode steps), uncorrelated from one to the next, so a per-interval test would
  demand a mean ~6 % under the budget. The per-interval figures are kept as `*_interval_pct`.
- `budget_overshoot_pct`: share of budget intervals whose window-mean power exceeds the budget by
  more than `overshoot_tolerance`, not counting the first `settle_intervals` after each budget
  change. `max_budget_overshoot_pct`: the largest window-mean excess, same
  intervals. `budget_overshoot_interval_pct` and `max_budget_overshoot_interval_pct`: the same on
  each interval's own power (spikes).
- `power_tracking_error_pct`: how far power is from the budget where the controller could have
  closed the gap. P is the window-mean power (above), B the budget in force; only intervals after
  settling (`settle_intervals` after each budget change) count. An interval is *tracked* when
    (a) P > B (overshoot counts anywhere), or
    (b) the node needed power it did not get: it was capacity-limited (record field
        `capacity_limited`: requests waiting with every replica's batch at >= 90 % of its cap, see
        `pals.control.policies.capacity_limited`; older logs: requests waiting), the configuration in force was not the node's maximum (cap and batch at their maxima,
        record field `at_max_config`), and either the budget bound the policy
        (`decision.budget_bound`: without it the policy would have chosen a more power-hungry
        configuration) or the interval violated QoS (trailing throughput short of the target).
  The figure is the mean of |P - B| / B over the tracked intervals, in percent (0 when none). A
  node that draws less than its budget at its maximum configuration, or that meets its target
  below the budget, is not tracked: there is nothing for it to follow. `power_tracking_intervals`
  is the number of tracked intervals; `budget_bound_pct` the share of budget intervals in which
  `decision.budget_bound` was set. `power_tracking_error_interval_pct`: the same with P each
  interval's own power (tracked by the same rule on that power).
- `power_tracking_error_raw_pct`: the plain mean |P - B| / B over every settled budget interval,
  P each interval's own power.
- `config_changes`: configurations applied after the initial one; `config_change_pct` per interval.
  Cap moves that only follow the budget governor's bound are budget enforcement, not new choices:
  they are counted apart as `governor_trims`.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from pals.control.budget import PowerBudget
from pals.control.qos import DEFAULT_QOS_TOLERANCE, DEFAULT_QOS_WINDOW_S, is_qos_violation
from pals.control.record import IntervalRecord, IntervalSample
from pals.control.window import TrailingMeanPower

SUMMARY_KEYS = (
    "policy",
    "duration_s",
    "intervals",
    "tokens_per_joule",
    "tokens_per_joule_gpu",
    "throughput_tps",
    "qos_violation_pct",
    "qos_violation_pct_raw",
    "power_tracking_error_pct",
    "power_tracking_error_interval_pct",
    "power_tracking_error_raw_pct",
    "power_tracking_intervals",
    "budget_overshoot_pct",
    "max_budget_overshoot_pct",
    "budget_overshoot_interval_pct",
    "max_budget_overshoot_interval_pct",
    "budget_bound_pct",
    "mean_power_w",
    "mean_gpu_power_w",
    "energy_j",
    "gpu_energy_j",
    "generated_tokens",
    "config_changes",
    "config_change_pct",
    "decide_ms_p50",
    "decide_ms_p99",
)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))
    return float(ordered[index])


def _mean_pct(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


class _Totals:
    """Running sums over the measured intervals, in record order (energy and tokens by rectangles)."""

    def __init__(self, qos_tolerance: float) -> None:
        self.qos_tolerance = qos_tolerance
        self.duration_s = self.tokens = self.node_j = self.gpu_j = 0.0
        self.intervals = self.violations = self.raw_violations = 0

    def add(self, rec: IntervalRecord, sample: IntervalSample, dt: float) -> None:
        self.intervals += 1
        self.duration_s += dt
        self.tokens += sample.throughput_tps * dt
        self.node_j += sample.node_power_w * dt
        self.gpu_j += sample.gpu_power_w * dt
        if rec.qos_violation:
            self.violations += 1
        target_tps = None if rec.target is None else rec.target.target_tps
        if is_qos_violation(sample.throughput_tps, sample.requests_waiting, target_tps, self.qos_tolerance):
            self.raw_violations += 1


class _BudgetTally:
    """Power against the budget in force: overshoot, tracking error and how often the budget bound.

    `power` of an interval is its own mean power in the budget's kind; the window figures use the
    trailing-window mean power (restarted at each budget change by `budget_changed`).
    """

    def __init__(self, overshoot_tolerance: float, settle_intervals: int, power_window_s: float) -> None:
        self.overshoot_tolerance = overshoot_tolerance
        self.settle_intervals = settle_intervals
        self.window = TrailingMeanPower(power_window_s)
        self.since_budget_change = 10**9
        self.budget_intervals = self.bound_count = 0
        self.overshoot_count = self.overshoot_interval_count = 0
        self.max_over = self.max_over_interval = 0.0
        self.tracking: list[float] = []
        self.tracking_interval: list[float] = []
        self.raw_tracking: list[float] = []

    def budget_changed(self, clear_window: bool = True) -> None:
        self.since_budget_change = 0
        if clear_window:
            self.window.clear()  # a new budget is judged on power drawn since it was set

    def add(self, rec: IntervalRecord, sample: IntervalSample, budget: PowerBudget, dt: float) -> None:
        self.budget_intervals += 1
        self.since_budget_change += 1
        power = sample.gpu_power_w if budget.kind == "gpu" else sample.node_power_w
        rel_interval = power / budget.budget_w - 1.0
        rel = self.window.add(power, dt) / budget.budget_w - 1.0
        if self.since_budget_change > self.settle_intervals:
            self._add_settled(rec, sample, rel, rel_interval)

    def _add_settled(self, rec: IntervalRecord, sample: IntervalSample, rel: float, rel_interval: float) -> None:
        self.max_over = max(self.max_over, rel)
        self.max_over_interval = max(self.max_over_interval, rel_interval)
        self.overshoot_count += rel > self.overshoot_tolerance
        self.overshoot_interval_count += rel_interval > self.overshoot_tolerance
        self.raw_tracking.append(abs(rel_interval))
        bound = bool(rec.decision.budget_bound)
        limited = rec.capacity_limited if rec.capacity_limited is not None else sample.requests_waiting > 0
        needed = bool(limited) and not rec.at_max_config
        unused = needed and (bound or bool(rec.qos_violation))
        if bound:
            self.bound_count += 1
        if rel > 0 or unused:
            self.tracking.append(abs(rel))
        if rel_interval > 0 or unused:
            self.tracking_interval.append(abs(rel_interval))

    def figures(self) -> dict[str, Any]:
        n = self.budget_intervals
        return {
            "power_tracking_error_pct": 100.0 * sum(self.tracking) / len(self.tracking) if self.tracking else 0.0,
            "power_tracking_error_interval_pct": _mean_pct(self.tracking_interval),
            "power_tracking_error_raw_pct": (
                100.0 * sum(self.raw_tracking) / len(self.raw_tracking) if self.raw_tracking else 0.0
            ),
            "power_tracking_intervals": len(self.tracking),
            "budget_overshoot_pct": 100.0 * self.overshoot_count / n if n else 0.0,
            "max_budget_overshoot_pct": 100.0 * self.max_over if n else 0.0,
            "budget_overshoot_interval_pct": 100.0 * self.overshoot_interval_count / n if n else 0.0,
            "max_budget_overshoot_interval_pct": 100.0 * self.max_over_interval if n else 0.0,
            "budget_bound_pct": 100.0 * self.bound_count / n if n else 0.0,
        }


def _typed(records: Iterable[IntervalRecord | Mapping[str, Any]]) -> list[IntervalRecord]:
    return [rec if isinstance(rec, IntervalRecord) else IntervalRecord.from_json(rec) for rec in records]


def summarize(
    records: Iterable[IntervalRecord | Mapping[str, Any]],
    qos_tolerance: float = DEFAULT_QOS_TOLERANCE,
    overshoot_tolerance: float = 0.02,
    settle_intervals: int = 4,
    power_window_s: float = DEFAULT_QOS_WINDOW_S,
) -> dict[str, Any]:
    """Summarise a run's records (see the module docstring for each figure).

    `records` are `IntervalRecord`s, or decision-log lines as parsed JSON (read with
    `IntervalRecord.from_json`).
    """
    records = _typed(records)
    totals = _Totals(qos_tolerance)
    tally = _BudgetTally(overshoot_tolerance, settle_intervals, power_window_s)
    decide_ms: list[float] = []
    changes = trims = 0
    last_budget = None
    for index, rec in enumerate(records):
        decide_ms.append(float(rec.decide_ms))
        if index > 0 and rec.config_changed:
            if rec.governor_trim:
                trims += 1
            else:
                changes += 1
        budget = rec.budget
        # A budget set at this record's decision applies from the next interval on.
        sample = rec.sample
        if sample is None:
            last_budget = budget
            tally.budget_changed(clear_window=False)
            continue
        dt = float(rec.interval_s)
        totals.add(rec, sample, dt)
        if last_budget is not None:
            tally.add(rec, sample, last_budget, dt)
        if budget != last_budget:
            tally.budget_changed()
        last_budget = budget
    return _figures(records[0].policy if records else None, totals, tally, changes, trims, decide_ms)


def _figures(
    policy: str | None, totals: _Totals, tally: _BudgetTally, changes: int, trims: int, decide_ms: list[float]
) -> dict[str, Any]:
    """The summary dict, keys in their published order."""
    t = totals
    pct = (lambda n: 100.0 * n / t.intervals) if t.intervals else (lambda n: 0.0)
    return {
        "policy": policy,
        "duration_s": round(t.duration_s, 3),
        "intervals": t.intervals,
        "tokens_per_joule": t.tokens / t.node_j if t.node_j > 0 else 0.0,
        "tokens_per_joule_gpu": t.tokens / t.gpu_j if t.gpu_j > 0 else 0.0,
        "throughput_tps": t.tokens / t.duration_s if t.duration_s > 0 else 0.0,
        "qos_violation_pct": pct(t.violations),
        "qos_violation_pct_raw": pct(t.raw_violations),
        **tally.figures(),
        "mean_power_w": t.node_j / t.duration_s if t.duration_s > 0 else 0.0,
        "mean_gpu_power_w": t.gpu_j / t.duration_s if t.duration_s > 0 else 0.0,
        "energy_j": t.node_j,
        "gpu_energy_j": t.gpu_j,
        "generated_tokens": t.tokens,
        "config_changes": changes,
        "config_change_pct": pct(changes),
        "governor_trims": trims,
        "decide_ms_p50": _percentile(decide_ms, 50),
        "decide_ms_p99": _percentile(decide_ms, 99),
    }
