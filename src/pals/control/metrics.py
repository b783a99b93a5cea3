"""Prometheus metrics of a running controller, on its own `CollectorRegistry` (no global state).

Names carry base units. Gauges describe the interval just ended; counters are cumulative since
the controller started. An update never raises: a missing or non-finite value sets its gauge to
NaN and adds nothing to its counter (a NaN added to a counter would stay in it for good).

Health counters (`pals_node_errors_total`, `pals_log_errors_total`, ...; `HEALTH_COUNTERS`) and
the `pals_safe_mode` gauge say when the loop kept going past a fault.
"""

from __future__ import annotations

import math
from typing import Any

from pals.control.record import IntervalRecord
from pals.control.slo import SLO_QUANTILES, slo_breaches

_QUANTILE_LABELS = {q: f"{q:g}" for q in SLO_QUANTILES}
"""Prometheus' own spelling of a quantile label ("0.5", "0.9", "0.99")."""

HEALTH_COUNTERS = {
    "node_errors": "Exceptions from node.sample() or node.apply(); the loop went on.",
    "policy_errors": "Exceptions from the policy's decide(); the configuration was held.",
    "log_errors": "Decision-log file operations that failed (full disk, ...); records stayed in memory.",
    "rejected_samples": "Samples with a reading that had no usable current value (the last good one stood in, or the sample was dropped).",
    "repaired_samples": "Samples with a counter reset or stall that was repaired from current readings.",
    "merged_intervals": "Samples too close to the previous one to rate: merged into the next interval.",
    "ticks_skipped": "Control ticks skipped because a step overran its slot (not caught up).",
    "safe_mode_entries": "Times the loop moved to the safe configuration after bad telemetry.",
}
"""Counter name (after `pals_`, before `_total`) -> help text."""


def _number(value: Any) -> float:
    """`value` as a float for a gauge: NaN when missing or not a number."""
    if value is None or isinstance(value, bool):
        return math.nan if value is None else float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _increment(value: Any) -> float:
    """`value` as a counter increment: 0 unless a finite number > 0."""
    number = _number(value)
    return number if math.isfinite(number) and number > 0 else 0.0


class ControllerMetrics:
    """Gauges and counters updated once per control interval from the loop's `IntervalRecord`.

    Args:
        registry: a `prometheus_client.CollectorRegistry`; a fresh one when None.
    """

    def __init__(self, registry=None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.power_cap = Gauge("pals_gpu_power_cap_watts", "Power cap in force per GPU.", registry=r)
        self.batch_cap = Gauge("pals_batch_cap", "Engine batch cap in force (max running sequences per replica).", registry=r)
        self.gpu_power = Gauge("pals_gpu_power_watts", "Mean total GPU power over the last interval.", registry=r)
        self.node_power = Gauge("pals_node_power_watts", "Node wall power over the last interval (measured or estimated).", registry=r)
        self.throughput = Gauge("pals_throughput_tokens_per_second", "Generated tokens per second over the last interval.", registry=r)
        self.tokens_per_joule = Gauge("pals_tokens_per_joule", "Generated tokens per joule of node energy over the last interval.", registry=r)
        self.budget = Gauge("pals_power_budget_watts", "Power budget in force (NaN when none).", ["kind"], registry=r)
        self.target = Gauge("pals_throughput_target_tokens_per_second", "Throughput target in force (NaN when none).", registry=r)
        self.requests_waiting = Gauge("pals_requests_waiting", "Requests waiting at the end of the last interval.", registry=r)
        self.decide_seconds = Gauge("pals_decision_seconds", "Time the policy took for the last decision.", registry=r)
        self.violations = Counter("pals_qos_violations", "Control intervals that violated the throughput target.", registry=r)
        self.intervals = Counter("pals_control_intervals", "Control intervals run.", registry=r)
        self.config_changes = Counter(
            "pals_config_changes", "Configuration changes applied (governor trims not counted).", registry=r
        )
        self.governor_trims = Counter(
            "pals_governor_trims", "Cap moves that only followed the budget governor's bound.", registry=r
        )
        self.tokens = Counter("pals_generated_tokens", "Generated tokens observed.", registry=r)
        self.node_energy = Counter("pals_node_energy_joules", "Node energy observed (measured or estimated).", registry=r)
        self.gpu_energy = Counter("pals_gpu_energy_joules", "GPU energy observed.", registry=r)
        self.health = {name: Counter(f"pals_{name}", text, registry=r) for name, text in HEALTH_COUNTERS.items()}
        self.tpot = Gauge("pals_tpot_seconds", "Time per output token over the node's recent requests, by quantile.",
                          ["quantile"], registry=r)
        self.ttft = Gauge("pals_ttft_seconds", "Time to first token over the node's recent requests, by quantile.",
                          ["quantile"], registry=r)
        self.tpot_slo = Gauge("pals_tpot_slo_seconds", "TPOT objective of the latency SLO in force (NaN when none).", registry=r)
        self.ttft_slo = Gauge("pals_ttft_slo_seconds", "TTFT objective of the latency SLO in force (NaN when none).", registry=r)
        self.tpot_slo_violations = Counter("pals_tpot_slo_violations",
                                           "Intervals whose TPOT at the SLO's quantile was above the objective.", registry=r)
        self.ttft_slo_violations = Counter("pals_ttft_slo_violations",
                                           "Intervals whose TTFT at the SLO's quantile was above the objective.", registry=r)
        self.safe_mode = Gauge("pals_safe_mode", "1 while the safe configuration is in force (bad telemetry), else 0.", registry=r)

    def count(self, name: str, amount: float = 1.0) -> None:
        """Add to one of the `HEALTH_COUNTERS`."""
        self.health[name].inc(_increment(amount))

    def set_safe_mode(self, on: bool) -> None:
        self.safe_mode.set(1.0 if on else 0.0)

    def update(self, record: IntervalRecord) -> None:
        """Fold one interval's record into the metrics (never raises on missing or non-finite values)."""
        nan = math.nan
        config = record.decision.config
        self.power_cap.set(_number(config.power_cap_w))
        self.batch_cap.set(_number(config.batch_cap))
        budget = record.budget
        for kind in ("node", "gpu"):
            self.budget.labels(kind=kind).set(_number(budget.budget_w) if budget and budget.kind == kind else nan)
        target = record.target
        self.target.set(_number(target.target_tps) if target else nan)
        slo = record.slo
        self.tpot_slo.set(nan if slo is None or slo.tpot_s is None else slo.tpot_s)
        self.ttft_slo.set(nan if slo is None or slo.ttft_s is None else slo.ttft_s)
        self.intervals.inc()
        self.decide_seconds.set(_number(record.decide_ms) / 1000.0)
        if record.config_changed:
            # Governor trims are budget enforcement, not new choices: counted apart, as in the summary.
            (self.governor_trims if record.governor_trim else self.config_changes).inc()
        sample = record.sample
        if sample is None:
            return
        gpu_w, node_w = _number(sample.gpu_power_w), _number(sample.node_power_w)
        throughput_tps, interval_s = _number(sample.throughput_tps), _number(record.interval_s)
        self.gpu_power.set(gpu_w)
        self.node_power.set(node_w)
        self.throughput.set(throughput_tps)
        self.requests_waiting.set(_number(sample.requests_waiting))
        self.tokens_per_joule.set(throughput_tps / node_w if node_w > 0 else (nan if math.isnan(node_w) else 0.0))
        tokens = sample.generated_tokens if sample.generated_tokens is not None else throughput_tps * interval_s
        self.tokens.inc(_increment(_number(tokens)))
        self.node_energy.inc(_increment(node_w * interval_s))
        self.gpu_energy.inc(_increment(gpu_w * interval_s))
        if record.qos_violation:
            self.violations.inc()
        self._update_latency(record)

    def _update_latency(self, record: IntervalRecord) -> None:
        """Latency gauges (NaN when the node reports none) and the SLO counters (as the record's `slo_violation`)."""
        sample = record.sample
        for q, label in _QUANTILE_LABELS.items():
            self.tpot.labels(quantile=label).set(_number(sample.latency_s("tpot", q)))
            self.ttft.labels(quantile=label).set(_number(sample.latency_s("ttft", q)))
        slo = record.slo
        if slo is None or not record.slo_violation:
            return
        tpot, ttft = slo_breaches(slo, sample.latency_s("tpot", slo.quantile), sample.latency_s("ttft", slo.quantile), True)
        if tpot:
            self.tpot_slo_violations.inc()
        if ttft:
            self.ttft_slo_violations.inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
