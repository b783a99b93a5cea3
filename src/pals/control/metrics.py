"""Prometheus metrics of a running controller, on its own `CollectorRegistry` (no global state).

Names carry base units; every series carries the labels `node` (the agent's name, `--node-name`,
default the host name) and `policy` (the control policy), and per-GPU series a `gpu` label
(docs/metrics.md lists them all). Gauges describe the interval just ended; counters are cumulative
since the controller started. An update never raises: a missing or non-finite value sets its gauge
to NaN and adds nothing to its counter (a NaN added to a counter would stay in it for good).

One scrape shows one interval: the families are built at each scrape from values kept under a
lock, by a custom collector, so a scrape that lands while an interval is folded in never mixes two
intervals, and renaming the node (`set_node`) relabels every series at the next scrape with the
counters' values kept.

Health counters (`pals_node_errors_total`, `pals_log_errors_total`, ...; `HEALTH_COUNTERS`) and
the `pals_safe_mode` gauge say when the loop kept going past a fault.
"""

from __future__ import annotations

import math
import re
import socket
import threading
import time
from typing import Any

from pals.control.record import IntervalRecord
from pals.control.slo import SLO_QUANTILES, slo_breaches
from pals.control.summary import counted_change
from pals.core.node import Constraints, Sample
from pals.errors import ConfigError

_QUANTILE_LABELS = {q: f"{q:g}" for q in SLO_QUANTILES}
"""Prometheus' own spelling of a quantile label ("0.5", "0.9", "0.99")."""

NODE_NAME_MAX_CHARS = 253
"""Longest node name (a DNS name's limit: host names and Kubernetes pod names fit)."""
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
"""A node name: letters, digits, '.', '_', ':' and '-', starting with a letter or digit."""

LABELS = ("node", "policy")
"""The labels every agent series carries."""

UNNAMED_NODE = "unnamed"
"""The `node` label of a `ControllerMetrics` given no name on a host whose name cannot be one."""

UNKNOWN_POLICY = "unknown"
"""The `policy` label before the controller names its policy (a bare `ControllerMetrics()` with no record yet)."""

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

GAUGES: dict[str, str] = {
    "pals_batch_cap": "Engine batch cap in force (max running sequences per replica).",
    "pals_batch_cap_max": "Largest batch cap (the engine's max-num-seqs).",
    "pals_gpu_power_watts": "Mean total GPU power over the last interval.",
    "pals_node_power_watts": "Node wall power over the last interval (measured or estimated).",
    "pals_throughput_tokens_per_second": "Generated tokens per second over the last interval.",
    "pals_tokens_per_joule": "Generated tokens per joule of node energy over the last interval.",
    "pals_throughput_target_tokens_per_second": "Throughput target in force (NaN when none).",
    "pals_requests_waiting": "Requests waiting at the end of the last interval.",
    "pals_requests_running": "Requests running at the end of the last interval.",
    "pals_decision_seconds": "Time the policy took for the last decision.",
    "pals_tpot_slo_seconds": "TPOT objective of the latency SLO in force (NaN when none).",
    "pals_ttft_slo_seconds": "TTFT objective of the latency SLO in force (NaN when none).",
    "pals_telemetry_age_seconds": "How old the engine-side data of the last sample was when it was read.",
    "pals_last_sample_timestamp_seconds": "Unix time at which the loop last folded in a sample (wall clock).",
    "pals_safe_mode": "1 while the safe configuration is in force (bad telemetry), else 0.",
}
"""Gauges with only the `node` and `policy` labels -> help text (NaN until first set)."""

LABELLED_GAUGES: dict[str, tuple[str, str]] = {
    "pals_power_budget_watts": ("kind", "Power budget in force, in the series of its kind (NaN when none)."),
    "pals_gpu_power_cap_watts": ("gpu", "Power limit in force per GPU, as the last sample read it back."),
    "pals_gpu_power_cap_max_watts": ("gpu", "The GPU's maximum power limit."),
    "pals_tpot_seconds": ("quantile", "Time per output token over the node's recent requests, by quantile."),
    "pals_ttft_seconds": ("quantile", "Time to first token over the node's recent requests, by quantile."),
}
"""Gauges with one more label -> (that label, help text)."""

COUNTERS: dict[str, str] = {
    "pals_control_intervals": "Control intervals run.",
    "pals_qos_violations": "Control intervals that violated the throughput target.",
    "pals_config_changes": "Configurations the policy chose and applied after the initial one "
                           "(governor trims not counted; as summary.json's config_changes).",
    "pals_governor_trims": "Cap moves after the initial configuration that only followed the budget governor's bound.",
    "pals_generated_tokens": "Generated tokens observed.",
    "pals_node_energy_joules": "Node energy observed (measured or estimated).",
    "pals_gpu_energy_joules": "GPU energy observed.",
    "pals_tpot_slo_violations": "Intervals whose TPOT at the SLO's quantile was above the objective.",
    "pals_ttft_slo_violations": "Intervals whose TTFT at the SLO's quantile was above the objective.",
    **{f"pals_{name}": text for name, text in HEALTH_COUNTERS.items()},
}
"""Counters (name without `_total`, which prometheus_client appends) -> help text."""


def check_node_name(name: Any, flag: str = "--node-name") -> str:
    """`name` if it can be the `node` label (the coordinator's `--node NAME=URL` must use the same
    string); else one ConfigError line naming the fix."""
    if not isinstance(name, str) or len(name) > NODE_NAME_MAX_CHARS or not _NODE_NAME.fullmatch(name):
        raise ConfigError(
            f"{flag} {name!r} cannot be a node name: use 1-{NODE_NAME_MAX_CHARS} letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit (the same NAME as the coordinator's --node NAME=URL)")
    return name


def resolve_node_name(name: str | None, flag: str = "--node-name") -> str:
    """The node's name: `name` when given, else the host name; checked by `check_node_name`."""
    if name is not None:
        return check_node_name(name, flag)
    host = socket.gethostname()
    try:
        return check_node_name(host, "the host name")
    except ConfigError as error:
        raise ConfigError(f"{error}; pass {flag} NAME") from None


def _host_name() -> str:
    """The host name as the default `node` label (`UNNAMED_NODE` when it cannot be one; the CLI refuses that)."""
    host = socket.gethostname()
    return host if isinstance(host, str) and len(host) <= NODE_NAME_MAX_CHARS and _NODE_NAME.fullmatch(host) \
        else UNNAMED_NODE


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
        node: the `node` label (`check_node_name`); None: the host name (`resolve_node_name`).
        policy: the `policy` label; None: the first record's policy.
        constraints: the node's fixed ranges (`set_constraints`), when known now.
    """

    def __init__(self, registry=None, *, node: str | None = None, policy: str | None = None,
                 constraints: Constraints | None = None) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._node = check_node_name(node, "node") if node is not None else _host_name()
        self._policy = policy
        self._gauges: dict[str, float] = dict.fromkeys(GAUGES, math.nan)
        self._gauges["pals_safe_mode"] = 0.0
        self._labelled: dict[str, dict[str, float]] = {name: {} for name in LABELLED_GAUGES}
        self._counters: dict[str, float] = dict.fromkeys(COUNTERS, 0.0)
        self._records = 0
        self._created_s = time.time()
        if constraints is not None:
            self.set_constraints(constraints)
        self.registry.register(_Collector(self))

    @property
    def node(self) -> str:
        return self._node

    def set_node(self, name: str) -> None:
        """Rename the node (the `node` label of every series from the next scrape on; counters keep their values)."""
        name = check_node_name(name)
        with self._lock:
            self._node = name

    def set_constraints(self, constraints: Constraints) -> None:
        """The node's maximum power limit per GPU and its largest batch cap (fixed for the run)."""
        with self._lock:
            self._labelled["pals_gpu_power_cap_max_watts"] = {
                str(i): _number(constraints.power_cap_max_w) for i in range(int(constraints.num_gpus))}
            self._gauges["pals_batch_cap_max"] = _number(constraints.batch_cap_max)

    def count(self, name: str, amount: float = 1.0) -> None:
        """Add to one of the `HEALTH_COUNTERS`."""
        key = f"pals_{name}"
        if key not in self._counters:
            raise KeyError(f"{name!r} is not one of HEALTH_COUNTERS")
        with self._lock:
            self._counters[key] += _increment(amount)

    def set_safe_mode(self, on: bool) -> None:
        with self._lock:
            self._gauges["pals_safe_mode"] = 1.0 if on else 0.0

    def update(self, record: IntervalRecord, sample: Sample | None = None) -> None:
        """Fold one interval's record into the metrics (never raises on missing or non-finite values).

        Args:
            record: the interval's record (records in order: the first is the run's initial configuration).
            sample: the node's sample the interval read (the telemetry guard's), when there was one:
                the per-GPU caps, the telemetry age and the last-sample time come from it.
        """
        with self._lock:
            if self._policy is None:
                self._policy = str(record.policy)
            self._update_record(record)
            if sample is not None:
                self._update_sample(sample)
            if record.sample is not None:
                self._update_interval(record)

    def _update_record(self, record: IntervalRecord) -> None:
        """What every record says: configuration, budget, target, SLO, decision; the interval and change counts."""
        nan, g, c = math.nan, self._gauges, self._counters
        g["pals_batch_cap"] = _number(record.decision.config.batch_cap)
        budget = record.budget
        self._labelled["pals_power_budget_watts"] = {
            kind: _number(budget.budget_w) if budget and budget.kind == kind else nan for kind in ("node", "gpu")}
        g["pals_throughput_target_tokens_per_second"] = _number(record.target.target_tps) if record.target else nan
        slo = record.slo
        g["pals_tpot_slo_seconds"] = nan if slo is None or slo.tpot_s is None else slo.tpot_s
        g["pals_ttft_slo_seconds"] = nan if slo is None or slo.ttft_s is None else slo.ttft_s
        g["pals_decision_seconds"] = _number(record.decide_ms) / 1000.0
        c["pals_control_intervals"] += 1
        # The summary's definition: the first record applies the initial configuration, and
        # governor trims are budget enforcement, not new choices (counted apart).
        change = counted_change(record, first=self._records == 0)
        self._records += 1
        if change is not None:
            c["pals_governor_trims" if change == "trim" else "pals_config_changes"] += 1

    def _update_sample(self, sample: Sample) -> None:
        """The raw sample's per-GPU caps, telemetry age and time (wall clock, which Prometheus compares with its own)."""
        try:
            caps = tuple(sample.gpu_power_cap_w)
        except TypeError:
            caps = ()
        if caps:
            self._labelled["pals_gpu_power_cap_watts"] = {str(i): _number(cap) for i, cap in enumerate(caps)}
        self._gauges["pals_telemetry_age_seconds"] = _number(sample.age_s)
        self._gauges["pals_last_sample_timestamp_seconds"] = time.time()

    def _update_interval(self, record: IntervalRecord) -> None:
        """What the interval measured: power, throughput, requests, tokens, energy, violations, latency."""
        nan, g, c, sample = math.nan, self._gauges, self._counters, record.sample
        gpu_w, node_w = _number(sample.gpu_power_w), _number(sample.node_power_w)
        throughput_tps, interval_s = _number(sample.throughput_tps), _number(record.interval_s)
        g["pals_gpu_power_watts"] = gpu_w
        g["pals_node_power_watts"] = node_w
        g["pals_throughput_tokens_per_second"] = throughput_tps
        g["pals_requests_waiting"] = _number(sample.requests_waiting)
        g["pals_requests_running"] = _number(sample.requests_running)
        g["pals_tokens_per_joule"] = throughput_tps / node_w if node_w > 0 else (nan if math.isnan(node_w) else 0.0)
        tokens = sample.generated_tokens if sample.generated_tokens is not None else throughput_tps * interval_s
        c["pals_generated_tokens"] += _increment(_number(tokens))
        c["pals_node_energy_joules"] += _increment(node_w * interval_s)
        c["pals_gpu_energy_joules"] += _increment(gpu_w * interval_s)
        if record.qos_violation:
            c["pals_qos_violations"] += 1
        self._update_latency(record)

    def _update_latency(self, record: IntervalRecord) -> None:
        """Latency gauges (NaN when the node reports none) and the SLO counters (as the record's `slo_violation`)."""
        sample = record.sample
        for kind in ("tpot", "ttft"):
            self._labelled[f"pals_{kind}_seconds"] = {
                label: _number(sample.latency_s(kind, q)) for q, label in _QUANTILE_LABELS.items()}
        slo = record.slo
        if slo is None or not record.slo_violation:
            return
        tpot, ttft = slo_breaches(slo, sample.latency_s("tpot", slo.quantile), sample.latency_s("ttft", slo.quantile), True)
        if tpot:
            self._counters["pals_tpot_slo_violations"] += 1
        if ttft:
            self._counters["pals_ttft_slo_violations"] += 1

    def families(self) -> list:
        """Every metric family as of the last interval (what one scrape returns)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            ident = [self._node, self._policy or UNKNOWN_POLICY]
            gauges, counters = dict(self._gauges), dict(self._counters)
            labelled = {name: dict(values) for name, values in self._labelled.items()}
        out = []
        for name, help_text in GAUGES.items():
            family = GaugeMetricFamily(name, help_text, labels=LABELS)
            family.add_metric(ident, gauges[name])
            out.append(family)
        for name, (label, help_text) in LABELLED_GAUGES.items():
            family = GaugeMetricFamily(name, help_text, labels=(*LABELS, label))
            for value_label, value in labelled[name].items():
                family.add_metric([*ident, value_label], value)
            out.append(family)
        for name, help_text in COUNTERS.items():
            family = CounterMetricFamily(name, help_text, labels=LABELS)
            family.add_metric(ident, counters[name], created=self._created_s)
            out.append(family)
        return out

    def sample_value(self, name: str, **labels: str) -> float | None:
        """The value a scrape shows now for sample `name` of this node and policy (`labels`: the series'
        other labels, e.g. `gpu="0"`); None when there is no such series."""
        with self._lock:
            ident = {"node": self._node, "policy": self._policy or UNKNOWN_POLICY}
        return self.registry.get_sample_value(name, {**ident, **labels})

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _Collector:
    """prometheus_client's collector interface over `ControllerMetrics.families`."""

    def __init__(self, metrics: ControllerMetrics) -> None:
        self._metrics = metrics

    def collect(self):
        return self._metrics.families()
