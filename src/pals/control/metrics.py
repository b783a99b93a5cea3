"""Prometheus metrics of a running controller, on its own `CollectorRegistry` (no global state).

Names carry base units. Gauges describe the interval just ended; counters are cumulative since
the controller started.
"""

from __future__ import annotations

from pals.control.record import IntervalRecord


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

    def update(self, record: IntervalRecord) -> None:
        """Fold one interval's record into the metrics."""
        nan = float("nan")
        config = record.decision.config
        self.power_cap.set(config.power_cap_w)
        self.batch_cap.set(config.batch_cap)
        budget = record.budget
        for kind in ("node", "gpu"):
            self.budget.labels(kind=kind).set(budget.budget_w if budget and budget.kind == kind else nan)
        target = record.target
        self.target.set(target.target_tps if target else nan)
        self.intervals.inc()
        self.decide_seconds.set(record.decide_ms / 1000.0)
        if record.config_changed:
            # Governor trims are budget enforcement, not new choices: counted apart, as in the summary.
            (self.governor_trims if record.governor_trim else self.config_changes).inc()
        sample = record.sample
        if sample is None:
            return
        self.gpu_power.set(sample.gpu_power_w)
        self.node_power.set(sample.node_power_w)
        self.throughput.set(sample.throughput_tps)
        self.requests_waiting.set(sample.requests_waiting)
        node_w = sample.node_power_w
        self.tokens_per_joule.set(sample.throughput_tps / node_w if node_w > 0 else 0.0)
        interval_s = record.interval_s
        self.tokens.inc(max(0.0, sample.throughput_tps * interval_s))
        self.node_energy.inc(max(0.0, node_w * interval_s))
        self.gpu_energy.inc(max(0.0, sample.gpu_power_w * interval_s))
        if record.qos_violation:
            self.violations.inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
