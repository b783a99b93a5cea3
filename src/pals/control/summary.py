"""Run figures from a run's `IntervalRecord`s (the same keys for `pals run`, `pals demo` and experiments).

Every figure is folded in one record at a time (`SummaryAccumulator`), so a summary covers the
whole run however long it is: the loop keeps only its last records in memory, but adds each one
to its accumulator as it is made. Sums and counts are exact; only the decision-time percentiles
(`decide_ms_p50`, `decide_ms_p99`) come from a bounded reservoir once a run passes
`DECIDE_MS_RESERVOIR` intervals.

Definitions (each interval is one control interval; records without a measured sample, i.e. the
first one and any interval whose telemetry was rejected or too short to rate, measure nothing:
the next measured interval spans them; record fields are named as in `docs/decisions-schema.md`):

- `tokens_per_joule`: generated tokens / node energy (the record's node power: the node-power line
  of `pals.core.power` on GPU power). `tokens_per_joule_gpu`: the same over GPU energy.
- `qos_violation_pct` (the headline, strict): share of intervals that violate the throughput target
  as defined in `pals.control.qos` (trailing-window throughput below the target while requests
  wait, no tolerance: the record's `qos_violation`); `qos_violation_pct_lenient` (secondary): the
  same with the 5 % tolerance (`LENIENT_QOS_TOLERANCE`, on the logged `measured.window_throughput_tps`);
  `qos_violation_pct_raw`: the strict test on each interval's own throughput.
- `slo_violation_pct`: share of intervals that broke the latency SLO in force (`pals.control.slo`:
  the node's TPOT or TTFT quantile above the objective while requests ran; the record's
  `slo_violation`); None when no SLO was in force in any measured interval.
- `tpot_p50_ms`, `tpot_p90_ms`, `tpot_p99_ms`, `ttft_p50_s`, `ttft_p90_s`, `ttft_p99_s`: run-level
  latency percentiles, pooled from the intervals' (`pals.control.latency_mix`); None when the
  node reported no latency.
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
import random
from typing import Any, Iterable, Mapping

from pals.control.budget import PowerBudget
from pals.control.latency_mix import LatencyMix
from pals.control.qos import DEFAULT_QOS_TOLERANCE, DEFAULT_QOS_WINDOW_S, LENIENT_QOS_TOLERANCE, is_qos_violation
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
    "qos_violation_pct_lenient",
    "qos_violation_pct_raw",
    "slo_violation_pct",
    "tpot_p50_ms",
    "tpot_p90_ms",
    "tpot_p99_ms",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
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


class _FloatSum:
    """A running float sum equal, bit for bit, to the builtin `sum()` of the same values in order.

    The summary once summed lists (`sum(tracking)`); it now sums as intervals arrive, so nothing
    grows with the run. CPython 3.12 made `sum()` of floats compensated (Neumaier); this mirrors
    whichever the interpreter does, so a run's figures do not move by a last bit.
    """

    __slots__ = ("total", "compensation", "count")

    def __init__(self) -> None:
        self.total = 0.0
        self.compensation = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        self.count += 1
        if not _COMPENSATED_SUM:
            self.total += value
            return
        t = self.total + value
        if abs(self.total) >= abs(value):
            self.compensation += (self.total - t) + value
        else:
            self.compensation += (value - t) + self.total
        self.total = t

    @property
    def value(self) -> float:
        c = self.compensation
        return self.total + c if c and math.isfinite(c) else self.total

    def mean_pct(self) -> float:
        return 100.0 * self.value / self.count if self.count else 0.0


_COMPENSATED_SUM = sum([0.1] * 10) == 1.0
"""True where `sum()` of floats is compensated (CPython >= 3.12): plain addition gives 0.9999999999999999."""

DECIDE_MS_RESERVOIR = 10_000
"""Decision times kept for the p50/p99: every one up to this many intervals (exact percentiles, as
before), then a uniform reservoir of this size (Vitter's algorithm R, fixed seed). A p99 from
10,000 uniform draws is within about +-0.1 percentile points (binomial standard error)."""


class _Reservoir:
    """Every value up to `size`, then a uniform sample of `size` of all values seen."""

    def __init__(self, size: int = DECIDE_MS_RESERVOIR, seed: int = 0) -> None:
        self.size = size
        self.values: list[float] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value

    def percentile(self, q: float) -> float:
        if not self.values:
            return 0.0
        ordered = sorted(self.values)
        index = min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))
        return float(ordered[index])


class _Totals:
    """Running sums over the measured intervals, in record order (energy and tokens by rectangles)."""

    def __init__(self, qos_tolerance: float) -> None:
        self.qos_tolerance = qos_tolerance
        self.duration_s = self.tokens = self.node_j = self.gpu_j = 0.0
        self.intervals = self.violations = self.raw_violations = self.lenient_violations = 0
        self.slo_intervals = self.slo_violations = 0
        self.latency = {kind: LatencyMix() for kind in ("tpot", "ttft")}

    def add(self, rec: IntervalRecord, sample: IntervalSample, dt: float) -> None:
        self.intervals += 1
        self.duration_s += dt
        # The counter's own delta when logged (exact whatever the samples' ages), else rate x time.
        self.tokens += sample.generated_tokens if sample.generated_tokens is not None else sample.throughput_tps * dt
        self.node_j += sample.node_power_w * dt
        self.gpu_j += sample.gpu_power_w * dt
        if rec.qos_violation:
            self.violations += 1
        target_tps = None if rec.target is None else rec.target.target_tps
        if is_qos_violation(sample.throughput_tps, sample.requests_waiting, target_tps, self.qos_tolerance):
            self.raw_violations += 1
        # Logs without `measured` (before the strict rule) counted QoS with the lenient tolerance.
        lenient = rec.qos_violation if rec.measured is None else is_qos_violation(
            rec.measured.window_throughput_tps, sample.requests_waiting, target_tps, LENIENT_QOS_TOLERANCE)
        self.lenient_violations += bool(lenient)
        if rec.slo is not None:
            self.slo_intervals += 1
            self.slo_violations += bool(rec.slo_violation)
        for kind, mix in self.latency.items():
            mix.add(*(getattr(sample, f"{kind}_{key}") for key in ("p50_s", "p90_s", "p99_s", "count")))

    def latency_figures(self) -> dict[str, Any]:
        """Run-level TPOT (ms) and TTFT (s) percentiles and the SLO violation share (module docstring)."""
        out: dict[str, Any] = {"slo_violation_pct": 100.0 * self.slo_violations / self.intervals
                               if self.slo_intervals else None}
        for kind, scale, unit in (("tpot", 1000.0, "ms"), ("ttft", 1.0, "s")):
            for q in (50, 90, 99):
                value = self.latency[kind].quantile_s(q / 100.0)
                out[f"{kind}_p{q}_{unit}"] = None if value is None else round(value * scale, 6)
        return out


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
        self.tracking = _FloatSum()
        self.tracking_interval = _FloatSum()
        self.raw_tracking = _FloatSum()

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
        self.raw_tracking.add(abs(rel_interval))
        bound = bool(rec.decision.budget_bound)
        limited = rec.capacity_limited if rec.capacity_limited is not None else sample.requests_waiting > 0
        needed = bool(limited) and not rec.at_max_config
        unused = needed and (bound or bool(rec.qos_violation))
        if bound:
            self.bound_count += 1
        if rel > 0 or unused:
            self.tracking.add(abs(rel))
        if rel_interval > 0 or unused:
            self.tracking_interval.add(abs(rel_interval))

    def figures(self) -> dict[str, Any]:
        n = self.budget_intervals
        return {
            "power_tracking_error_pct": self.tracking.mean_pct(),
            "power_tracking_error_interval_pct": self.tracking_interval.mean_pct(),
            "power_tracking_error_raw_pct": self.raw_tracking.mean_pct(),
            "power_tracking_intervals": self.tracking.count,
            "budget_overshoot_pct": 100.0 * self.overshoot_count / n if n else 0.0,
            "max_budget_overshoot_pct": 100.0 * self.max_over if n else 0.0,
            "budget_overshoot_interval_pct": 100.0 * self.overshoot_interval_count / n if n else 0.0,
            "max_budget_overshoot_interval_pct": 100.0 * self.max_over_interval if n else 0.0,
            "budget_bound_pct": 100.0 * self.bound_count / n if n else 0.0,
        }


def counted_change(rec: IntervalRecord, first: bool) -> str | None:
    """How the run's counts take `rec`'s configuration change (the one definition the summary's
    `config_changes`/`governor_trims` and the Prometheus counters share): "change" (the policy chose
    a configuration and it was applied), "trim" (a cap move that only followed the budget
    governor's bound), or None. The run's `first` record applies the initial configuration: no change."""
    if first or not rec.config_changed:
        return None
    return "trim" if rec.governor_trim else "change"


class SummaryAccumulator:
    """The run summary, folded in one record at a time: nothing in it grows with the run.

    `ControlLoop` adds every interval's record as it is made, so `figures()` covers the whole run
    however many records the loop still holds in memory. `summarize` feeds a list (a decision log
    read back) through the same arithmetic, so a log and the live loop give the same figures.

    A record without a sample after the first (an interval whose telemetry was rejected, or too
    short to rate and merged into the next) measures nothing: the next measured interval spans it.
    """

    def __init__(
        self,
        qos_tolerance: float = DEFAULT_QOS_TOLERANCE,
        overshoot_tolerance: float = 0.02,
        settle_intervals: int = 4,
        power_window_s: float = DEFAULT_QOS_WINDOW_S,
    ) -> None:
        self.policy: str | None = None
        self.totals = _Totals(qos_tolerance)
        self.tally = _BudgetTally(overshoot_tolerance, settle_intervals, power_window_s)
        self.decide_ms = _Reservoir()
        self.changes = self.trims = 0
        self.records = 0
        self._last_budget: PowerBudget | None = None

    def add(self, rec: IntervalRecord) -> None:
        """Fold in the next record of the run (records in order)."""
        first = self.records == 0
        self.records += 1
        if first:
            self.policy = rec.policy
        self.decide_ms.add(float(rec.decide_ms))
        change = counted_change(rec, first)
        self.changes += change == "change"
        self.trims += change == "trim"
        budget = rec.budget
        # A budget set at this record's decision applies from the next interval on.
        sample = rec.sample
        if sample is None:
            if first:
                self.tally.budget_changed(clear_window=False)
            elif budget != self._last_budget:
                self.tally.budget_changed()
            self._last_budget = budget
            return
        dt = float(rec.interval_s)
        self.totals.add(rec, sample, dt)
        if self._last_budget is not None:
            self.tally.add(rec, sample, self._last_budget, dt)
        if budget != self._last_budget:
            self.tally.budget_changed()
        self._last_budget = budget

    def figures(self) -> dict[str, Any]:
        """The summary dict, keys in their published order."""
        t = self.totals
        pct = (lambda n: 100.0 * n / t.intervals) if t.intervals else (lambda n: 0.0)
        return {
            "policy": self.policy,
            "duration_s": round(t.duration_s, 3),
            "intervals": t.intervals,
            "tokens_per_joule": t.tokens / t.node_j if t.node_j > 0 else 0.0,
            "tokens_per_joule_gpu": t.tokens / t.gpu_j if t.gpu_j > 0 else 0.0,
            "throughput_tps": t.tokens / t.duration_s if t.duration_s > 0 else 0.0,
            "qos_violation_pct": pct(t.violations),
            "qos_violation_pct_lenient": pct(t.lenient_violations),
            "qos_violation_pct_raw": pct(t.raw_violations),
            **t.latency_figures(),
            **self.tally.figures(),
            "mean_power_w": t.node_j / t.duration_s if t.duration_s > 0 else 0.0,
            "mean_gpu_power_w": t.gpu_j / t.duration_s if t.duration_s > 0 else 0.0,
            "energy_j": t.node_j,
            "gpu_energy_j": t.gpu_j,
            "generated_tokens": t.tokens,
            "config_changes": self.changes,
            "config_change_pct": pct(self.changes),
            "governor_trims": self.trims,
            "decide_ms_p50": self.decide_ms.percentile(50),
            "decide_ms_p99": self.decide_ms.percentile(99),
        }


def summarize(
    records: Iterable[IntervalRecord | Mapping[str, Any]],
    qos_tolerance: float = DEFAULT_QOS_TOLERANCE,
    overshoot_tolerance: float = 0.02,
    settle_intervals: int = 4,
    power_window_s: float = DEFAULT_QOS_WINDOW_S,
) -> dict[str, Any]:
    """Summarise a run's records (see the module docstring for each figure).

    `records` are `IntervalRecord`s, or decision-log lines as parsed JSON (read with
    `IntervalRecord.from_json`), oldest first; any iterable, read once.
    """
    acc = SummaryAccumulator(qos_tolerance, overshoot_tolerance, settle_intervals, power_window_s)
    for rec in records:
        acc.add(rec if isinstance(rec, IntervalRecord) else IntervalRecord.from_json(rec))
    return acc.figures()
