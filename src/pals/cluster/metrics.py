"""Prometheus metrics of the cluster coordinator (`pals coordinate --metrics-port`), on their own registry.

Fed one `RoundReport` per round (`CoordinatorMetrics.update(coordinator.last_report, ...)`); every
`pals_coordinator_*` row of docs/metrics.md names the report field it comes from. Gauges describe
the last round; counters are cumulative since the coordinator started (one per node, created at 0
for every node so that `increase()` sees the first event).

One scrape shows one round: the families are built from the last report under a lock, by a
custom collector, so a scrape that lands while a round is being folded in never mixes two rounds
(a `Gauge` per series, set one after the other, could).

`MetricsServer` serves them with prometheus_client's own HTTP server (any path answers with the
metrics; there is nothing else to serve), on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from pals.cluster.report import RoundReport
from pals.errors import ConfigError

NAN = float("nan")

COUNTERS: dict[str, str] = {
    "pals_coordinator_reconciliations": "Budgets found drifted on the node (missing after a restart, or changed "
                                        "by someone else) and rewritten.",
    "pals_coordinator_clipped_raises": "Budget raises cut short so the budgets in force could not exceed the "
                                       "cluster budget.",
    "pals_coordinator_write_failures": "PUT /budget or PUT /target calls to the node that failed.",
    "pals_coordinator_budget_writes": "PUT /budget calls sent to the node (confirmed or not).",
}
"""Per-node counters (name without `_total`, which prometheus_client appends) and their help."""


def _flags(report: RoundReport) -> dict[str, dict[str, bool]]:
    """Per counter, per node: whether this round adds one."""
    return {
        "pals_coordinator_reconciliations": {n: r.reconciled for n, r in report.nodes.items()},
        "pals_coordinator_clipped_raises": {n: r.clipped for n, r in report.nodes.items()},
        "pals_coordinator_write_failures": {n: r.write_failed for n, r in report.nodes.items()},
        "pals_coordinator_budget_writes": {n: r.budget_written_w is not None for n, r in report.nodes.items()},
    }


def _value(x: float | None) -> float:
    """A gauge's value: NaN for "nothing to say" (None)."""
    return NAN if x is None else float(x)


class CoordinatorMetrics:
    """The coordinator's gauges and counters, rebuilt at each scrape from the last round's report.

    Args:
        cluster_budget_w: shown before the first round (after it, the report's). Units: W.
        nodes: node names whose counters start at 0 before the first round.
        registry: a `prometheus_client.CollectorRegistry`; a fresh one when None.
    """

    def __init__(self, cluster_budget_w: float | None = None, nodes: Sequence[str] = (), registry=None) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = registry if registry is not None else CollectorRegistry()
        self._lock = threading.Lock()
        self._cluster_budget_w = cluster_budget_w
        self._report: RoundReport | None = None
        self._targets_tps: dict[str, float] = {}
        self._rounds = 0
        self._counts: dict[str, dict[str, int]] = {name: {n: 0 for n in nodes} for name in COUNTERS}
        self._written_w: dict[str, float] = {}
        self._created_s = time.time()
        self.registry.register(_Collector(self))

    def update(self, report: RoundReport, targets_tps: Mapping[str, float] | None = None) -> None:
        """Fold one round in (call once per round, e.g. with `Coordinator.last_report`).

        Args:
            report: the round's report.
            targets_tps: the targets the coordinator holds per node (`Coordinator.targets_tps`);
                a node without one (or with 0) shows NaN.
        """
        with self._lock:
            self._report = report
            self._cluster_budget_w = report.cluster_budget_w
            self._targets_tps = {n: float(t) for n, t in (targets_tps or {}).items() if t}
            self._rounds += 1
            for name, per_node in _flags(report).items():
                counts = self._counts[name]
                for node, flag in per_node.items():
                    counts[node] = counts.get(node, 0) + int(flag)
            for node, round_ in report.nodes.items():
                if round_.budget_written_w is not None:
                    self._written_w[node] = round_.budget_written_w

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def families(self) -> list:
        """Every metric family as of the last round (what one scrape returns)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with self._lock:
            report, targets = self._report, dict(self._targets_tps)
            counts = {name: dict(c) for name, c in self._counts.items()}
            written, rounds, budget_w = dict(self._written_w), self._rounds, self._cluster_budget_w
        out = [
            GaugeMetricFamily("pals_coordinator_cluster_budget_watts",
                              "The cluster budget: total node wall power of all nodes.", value=_value(budget_w)),
            CounterMetricFamily("pals_coordinator_rounds", "Coordinator rounds run.", value=rounds,
                                created=self._created_s),
        ]
        for name, help_text in COUNTERS.items():
            family = CounterMetricFamily(name, help_text, labels=["node"])
            for node, count in sorted(counts[name].items()):
                family.add_metric([node], count, created=self._created_s)
            out.append(family)
        if report is not None:
            out += _round_families(report, targets, written, GaugeMetricFamily)
        return out


def _round_families(report: RoundReport, targets: Mapping[str, float], written: Mapping[str, float],
                    gauge) -> list:
    """The gauges that describe one round (absent before the first)."""
    cluster = [
        ("pals_coordinator_budget_in_force_watts", "Sum of the node budgets counted in force after the last round.",
         report.in_force_end_w),
        ("pals_coordinator_reserved_down_watts", "Budget held for nodes that are down, at their last safe budgets.",
         report.reserved_down_w),
        ("pals_coordinator_qos_fraction", "Share of the nodes' throughput targets the last split could serve.",
         report.allocation.qos_fraction),
        ("pals_coordinator_round_seconds", "Wall time of the last round, reads and writes.", report.duration_s),
        ("pals_coordinator_nodes_down", "Nodes that did not answer GET /status in the last round.",
         float(report.nodes_down)),
    ]
    out = [gauge(name, help_text, value=float(value)) for name, help_text, value in cluster]
    nodes = report.nodes
    per_node: list[tuple[str, str, Iterable[tuple[str, float]]]] = [
        ("pals_coordinator_node_budget_watts", "Budget counted in force for the node after the last round.",
         ((n, r.budget_in_force_w) for n, r in nodes.items())),
        ("pals_coordinator_node_planned_budget_watts", "The node's share of the cluster budget in the last round "
         "(NaN while down).", ((n, _value(r.budget_planned_w)) for n, r in nodes.items())),
        ("pals_coordinator_node_reported_budget_watts", "Node budget in force as the node reported it (NaN: down "
         "or no node budget).", ((n, _value(r.budget_reported_w)) for n, r in nodes.items())),
        ("pals_coordinator_node_written_budget_watts", "Last budget sent to the node with PUT /budget (NaN: none "
         "yet).", ((n, _value(written.get(n))) for n in nodes)),
        ("pals_coordinator_node_need_watts", "Power the node needs for its throughput target, from its frontier.",
         ((n, _value(report.allocation.need_w.get(n))) for n in nodes)),
        ("pals_coordinator_node_target_tokens_per_second", "Throughput target the coordinator holds for the node.",
         ((n, _value(targets.get(n))) for n in nodes)),
        ("pals_coordinator_node_demand_tokens_per_second", "The coordinator's estimate of the node's offered load "
         "(+Inf while work queues up; NaN while down).", ((n, _value(report.demand_tps.get(n))) for n in nodes)),
        ("pals_coordinator_node_up", "1 when the node answered GET /status in the last round.",
         ((n, 1.0 if r.up else 0.0) for n, r in nodes.items())),
    ]
    for name, help_text, values in per_node:
        family = gauge(name, help_text, labels=["node"])
        for node, value in values:
            family.add_metric([node], value)
        out.append(family)
    return out


class _Collector:
    """prometheus_client's collector interface over `CoordinatorMetrics.families`."""

    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self._metrics = metrics

    def collect(self):
        return self._metrics.families()


@dataclass
class MetricsServer:
    """prometheus_client's HTTP server over one registry, listening on `host:port`.

    Use `MetricsServer.start(registry, port, host)`; `port` 0 takes any free port (`self.port` says which).
    """

    server: object
    thread: threading.Thread
    host: str
    port: int

    @classmethod
    def start(cls, registry, port: int, host: str = "127.0.0.1") -> "MetricsServer":
        from prometheus_client import start_http_server

        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"the metrics port must be an integer from 0 to 65535, got {port!r}")
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as error:
            why = error.strerror or str(error)
            raise ConfigError(f"cannot serve metrics on {host}:{port} ({why}); choose another --metrics-port "
                              "or --metrics-host") from None
        return cls(server, thread, host, int(server.server_port))

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5.0)
