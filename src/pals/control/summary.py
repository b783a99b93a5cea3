"""Run figures from a decision log (the same keys for `pals run`, `pals demo` and experiments).

Definitions (each interval is one control interval; records without a measured sample, i.e. the
first one, are skipped):

- `tokens_per_joule`: generated tokens / node energy (node power measured, or estimated from GPU
  power as 1.05 x sum(P_gpu) + 345 W). `tokens_per_joule_gpu`: the same over GPU energy.
- `qos_violation_pct`: share of intervals that violate the throughput target as defined in
  `pals.control.qos` (trailing 5 s throughput short of (1 - tol) x target while requests wait);
  `qos_violation_pct_raw`: the same test on each interval's own throughput.
- Power against a budget is judged on the trailing-window mean power, as throughput is for QoS:
  P is the mean power (in the budget's kind) over the trailing `DEFAULT_QOS_WINDOW_S` (5 s, ten
  intervals: interval energy over the window / its duration; `pals.control.window`), the window
  restarting at each budget change. Single 500 ms intervals swing +-3-5 % at a fixed cap (the mix
  of prefill and decode steps), uncorrelated from one to the next, so a per-interval test would
  demand a mean ~6 % under the budget. The per-interval figures are kept as `*_interval_pct`.
- `budget_overshoot_pct`: share of budget intervals whose window-mean power exceeds the budget by
  more than `overshoot_tolerance` (2 %), not counting the first `settle_intervals` (4, i.e. 2 s)
  after each budget change. `max_budget_overshoot_pct`: the largest window-mean excess, same
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
from typing import Any, Iterable

from pals.control.qos import DEFAULT_QOS_TOLERANCE, DEFAULT_QOS_WINDOW_S, is_qos_violation
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


def summarize(
    records: Iterable[dict[str, Any]],
    qos_tolerance: float = DEFAULT_QOS_TOLERANCE,
    overshoot_tolerance: float = 0.02,
    settle_intervals: int = 4,
    power_window_s: float = DEFAULT_QOS_WINDOW_S,
) -> dict[str, Any]:
    """Summarise decision-log records (see the module docstring for each figure)."""
    records = list(records)
    policy = records[0]["policy"] if records else None
    duration_s = tokens = node_j = gpu_j = 0.0
    intervals = violations = raw_violations = changes = trims = 0
    overshoot_count = overshoot_interval_count = budget_intervals = bound_count = 0
    max_over = max_over_interval = 0.0
    tracking: list[float] = []
    tracking_interval: list[float] = []
    window = TrailingMeanPower(power_window_s)
    raw_tracking: list[float] = []
    decide_ms: list[float] = []
    since_budget_change = 10**9
    last_budget = None
    for index, rec in enumerate(records):
        decide_ms.append(float(rec.get("decide_ms", 0.0)))
        if index > 0 and rec.get("config_changed"):
            if rec.get("governor_trim"):
                trims += 1
            else:
                changes += 1
        budget = rec.get("budget")
        # A budget set at this record's decision applies from the next interval on.
        sample = rec.get("sample")
        if sample is None:
            last_budget = budget
            since_budget_change = 0
            continue
        intervals += 1
        dt = float(rec.get("interval_s", 0.0))
        duration_s += dt
        tokens += sample["throughput_tps"] * dt
        node_j += sample["node_power_w"] * dt
        gpu_j += sample["gpu_power_w"] * dt
        target = rec.get("target")
        if rec.get("qos_violation"):
            violations += 1
        if is_qos_violation(sample["throughput_tps"], sample["requests_waiting"],
                            None if target is None else target["target_tps"], qos_tolerance):
            raw_violations += 1
        if last_budget is not None:
            budget_intervals += 1
            since_budget_change += 1
            power = sample["gpu_power_w"] if last_budget["kind"] == "gpu" else sample["node_power_w"]
            rel_interval = power / last_budget["budget_w"] - 1.0
            rel = window.add(power, dt) / last_budget["budget_w"] - 1.0
            if since_budget_change > settle_intervals:
                max_over = max(max_over, rel)
                max_over_interval = max(max_over_interval, rel_interval)
                overshoot_count += rel > overshoot_tolerance
                overshoot_interval_count += rel_interval > overshoot_tolerance
                raw_tracking.append(abs(rel_interval))
                bound = bool(rec["decision"].get("budget_bound"))
                needed = bool(rec.get("capacity_limited", sample["requests_waiting"] > 0)) and not rec.get("at_max_config", False)
                unused = needed and (bound or bool(rec.get("qos_violation")))
                if bound:
                    bound_count += 1
                if rel > 0 or unused:
                    tracking.append(abs(rel))
                if rel_interval > 0 or unused:
                    tracking_interval.append(abs(rel_interval))
        if budget != last_budget:
            since_budget_change = 0
            window.clear()  # a new budget is judged on power drawn since it was set
        last_budget = budget
    pct = (lambda n: 100.0 * n / intervals) if intervals else (lambda n: 0.0)
    return {
        "policy": policy,
        "duration_s": round(duration_s, 3),
        "intervals": intervals,
        "tokens_per_joule": tokens / node_j if node_j > 0 else 0.0,
        "tokens_per_joule_gpu": tokens / gpu_j if gpu_j > 0 else 0.0,
        "throughput_tps": tokens / duration_s if duration_s > 0 else 0.0,
        "qos_violation_pct": pct(violations),
        "qos_violation_pct_raw": pct(raw_violations),
        "power_tracking_error_pct": 100.0 * sum(tracking) / len(tracking) if tracking else 0.0,
        "power_tracking_error_interval_pct": _mean_pct(tracking_interval),
        "power_tracking_error_raw_pct": 100.0 * sum(raw_tracking) / len(raw_tracking) if raw_tracking else 0.0,
        "power_tracking_intervals": len(tracking),
        "budget_overshoot_pct": 100.0 * overshoot_count / budget_intervals if budget_intervals else 0.0,
        "max_budget_overshoot_pct": 100.0 * max_over if budget_intervals else 0.0,
        "budget_overshoot_interval_pct": 100.0 * overshoot_interval_count / budget_intervals if budget_intervals else 0.0,
        "max_budget_overshoot_interval_pct": 100.0 * max_over_interval if budget_intervals else 0.0,
        "budget_bound_pct": 100.0 * bound_count / budget_intervals if budget_intervals else 0.0,
        "mean_power_w": node_j / duration_s if duration_s > 0 else 0.0,
        "mean_gpu_power_w": gpu_j / duration_s if duration_s > 0 else 0.0,
        "energy_j": node_j,
        "gpu_energy_j": gpu_j,
        "generated_tokens": tokens,
        "config_changes": changes,
        "config_change_pct": pct(changes),
        "governor_trims": trims,
        "decide_ms_p50": _percentile(decide_ms, 50),
        "decide_ms_p99": _percentile(decide_ms, 99),
    }
