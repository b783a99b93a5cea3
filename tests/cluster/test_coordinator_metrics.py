"""The coordinator's Prometheus metrics (`pals.cluster.metrics`, `pals coordinate --metrics-port`):
each series says what the round report says, counters count per node, NaN where there is nothing to
say, and the HTTP server serves them on loopback or fails with one line."""

import math
import socket
import threading
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pals.cli import main
from pals.cluster.allocation import Frontier
from pals.cluster.client import parse_status
from pals.cluster.coordinator import Coordinator
from pals.cluster.metrics import CoordinatorMetrics, MetricsServer
from pals.control.endpoint import Endpoint
from pals.errors import ConfigError, EngineUnreachable


class MemoryNode:
    """A NodeClient over an in-memory node (a test double for a node endpoint, no GPU or HTTP)."""

    def __init__(self, name, hi_tps=2000):
        self.name = name
        self.budget_w = None
        self.target_tps = None
        self.up = True
        self.fail_writes = False
        self._frontier = Frontier.from_points([(800 + 150 * i, 400 + (hi_tps - 400) * i / 8) for i in range(9)])

    def _check(self):
        if not self.up:
            raise EngineUnreachable(f"node {self.name} does not answer (test: down)")

    def status(self):
        self._check()
        return parse_status(self.name, {
            "time_s": 5.0,
            "last_sample": {"throughput_tps": 1000.0, "node_power_w": 1500.0, "requests_waiting": 2},
            "constraints": {"num_gpus": 4, "power_cap_min_w": 100, "power_cap_max_w": 400},
            "budget": None if self.budget_w is None else {"budget_w": self.budget_w, "kind": "node"},
            "target": None if self.target_tps is None else {"target_tps": self.target_tps},
        })

    def set_budget(self, budget_w):
        self._check()
        if self.fail_writes:
            raise EngineUnreachable(f"node {self.name}: PUT /budget timed out (test)")
        self.budget_w = budget_w

    def set_target(self, target_tps):
        self._check()
        self.target_tps = target_tps

    def frontier(self):
        self._check()
        return self._frontier


def scrape(metrics):
    """{(name, labels as a sorted tuple): value} of one exposition."""
    text = metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def test_before_the_first_round_the_budget_and_zeroed_counters_show():
    metrics = CoordinatorMetrics(3000.0, nodes=["a", "b"])
    samples = scrape(metrics)
    assert value(samples, "pals_coordinator_cluster_budget_watts") == 3000.0
    assert value(samples, "pals_coordinator_rounds_total") == 0
    for name in ("reconciliations", "clipped_raises", "write_failures", "budget_writes"):
        assert value(samples, f"pals_coordinator_{name}_total", node="a") == 0
        assert value(samples, f"pals_coordinator_{name}_total", node="b") == 0
    assert not any(name == "pals_coordinator_node_up" for name, _ in samples)  # nothing known yet


def test_every_series_says_what_the_round_report_says():
    a, b = MemoryNode("a"), MemoryNode("b", hi_tps=1200)
    coordinator = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 1400})
    metrics = CoordinatorMetrics(3000.0, nodes=["a", "b"])
    report = coordinator.step()
    metrics.update(report, coordinator.targets_tps)
    samples = scrape(metrics)
    assert value(samples, "pals_coordinator_rounds_total") == 1
    assert value(samples, "pals_coordinator_budget_in_force_watts") == pytest.approx(report.in_force_end_w)
    assert value(samples, "pals_coordinator_budget_in_force_watts") <= 3000 + 1e-6
    assert value(samples, "pals_coordinator_reserved_down_watts") == 0
    assert value(samples, "pals_coordinator_qos_fraction") == pytest.approx(report.allocation.qos_fraction)
    assert value(samples, "pals_coordinator_round_seconds") == pytest.approx(report.duration_s)
    assert value(samples, "pals_coordinator_nodes_down") == 0
    for name, node in (("a", a), ("b", b)):
        nr = report.nodes[name]
        assert value(samples, "pals_coordinator_node_up", node=name) == 1
        assert value(samples, "pals_coordinator_node_budget_watts", node=name) == pytest.approx(node.budget_w)
        assert value(samples, "pals_coordinator_node_written_budget_watts", node=name) == pytest.approx(node.budget_w)
        assert value(samples, "pals_coordinator_node_planned_budget_watts", node=name) == pytest.approx(nr.budget_planned_w)
        # Both started without a budget: nothing reported, both written (a "missing" budget, rewritten).
        assert math.isnan(value(samples, "pals_coordinator_node_reported_budget_watts", node=name))
        assert value(samples, "pals_coordinator_budget_writes_total", node=name) == 1
        assert value(samples, "pals_coordinator_reconciliations_total", node=name) == 1
        assert value(samples, "pals_coordinator_node_demand_tokens_per_second", node=name) == math.inf  # queue
    assert value(samples, "pals_coordinator_node_target_tokens_per_second", node="a") == 1400
    assert math.isnan(value(samples, "pals_coordinator_node_target_tokens_per_second", node="b"))
    assert value(samples, "pals_coordinator_node_need_watts", node="a") == pytest.approx(report.allocation.need_w["a"])

    metrics.update(coordinator.step(), coordinator.targets_tps)
    samples = scrape(metrics)
    for name, node in (("a", a), ("b", b)):
        assert value(samples, "pals_coordinator_node_reported_budget_watts", node=name) == pytest.approx(
            report.nodes[name].budget_in_force_w, abs=1e-2)
        assert value(samples, "pals_coordinator_reconciliations_total", node=name) == 1  # nothing drifted since


def test_a_node_down_shows_its_reserve_and_nan_for_what_is_unknown():
    a, b = MemoryNode("a"), MemoryNode("b")
    coordinator = Coordinator([a, b], cluster_budget_w=3000)
    metrics = CoordinatorMetrics(3000.0, nodes=["a", "b"])
    metrics.update(coordinator.step())
    last_b = b.budget_w
    b.up = False
    metrics.update(coordinator.step())
    samples = scrape(metrics)
    assert value(samples, "pals_coordinator_node_up", node="b") == 0
    assert value(samples, "pals_coordinator_nodes_down") == 1
    assert value(samples, "pals_coordinator_reserved_down_watts") == pytest.approx(last_b)
    assert value(samples, "pals_coordinator_node_budget_watts", node="b") == pytest.approx(last_b)
    for name in ("planned_budget_watts", "reported_budget_watts", "demand_tokens_per_second", "need_watts"):
        assert math.isnan(value(samples, f"pals_coordinator_node_{name}", node="b")), name
    assert value(samples, "pals_coordinator_node_up", node="a") == 1


def test_counters_count_restarts_hand_edits_and_failed_writes_per_node():
    a, b = MemoryNode("a"), MemoryNode("b")
    coordinator = Coordinator([a, b], cluster_budget_w=3000)
    metrics = CoordinatorMetrics(3000.0, nodes=["a", "b"])
    metrics.update(coordinator.step())
    a.budget_w = None  # a restarted: its budget is gone
    metrics.update(coordinator.step())
    a.budget_w = 2900.0  # someone raised it by hand
    metrics.update(coordinator.step())
    b.budget_w, b.fail_writes = None, True  # b restarted and refuses the rewrite
    metrics.update(coordinator.step())
    samples = scrape(metrics)
    assert value(samples, "pals_coordinator_rounds_total") == 4
    assert value(samples, "pals_coordinator_reconciliations_total", node="a") == 3  # first write, restart, hand edit
    assert value(samples, "pals_coordinator_reconciliations_total", node="b") == 1  # the failed rewrite is not one
    assert value(samples, "pals_coordinator_write_failures_total", node="b") == 1
    assert value(samples, "pals_coordinator_write_failures_total", node="a") == 0


def test_a_changed_cluster_budget_shows_after_the_next_round():
    a, b = MemoryNode("a"), MemoryNode("b")
    coordinator = Coordinator([a, b], cluster_budget_w=3000)
    metrics = CoordinatorMetrics(3000.0, nodes=["a", "b"])
    metrics.update(coordinator.step())
    coordinator.cluster_budget_w = 2000.0
    metrics.update(coordinator.step())
    samples = scrape(metrics)
    assert value(samples, "pals_coordinator_cluster_budget_watts") == 2000.0
    assert value(samples, "pals_coordinator_budget_in_force_watts") <= 2000.0 + 1e-6


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_the_server_listens_on_loopback_and_serves_the_metrics():
    metrics = CoordinatorMetrics(1234.0, nodes=["a"])
    server = MetricsServer.start(metrics.registry, 0)
    try:
        assert server.host == "127.0.0.1" and server.port > 0
        status, text = _get(server.url)
        assert status == 200
        assert "pals_coordinator_cluster_budget_watts 1234.0" in text
    finally:
        server.stop()


def test_a_port_in_use_gets_one_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}.*--metrics-port"):
            MetricsServer.start(CoordinatorMetrics().registry, port)


@pytest.mark.parametrize("argv, needle", [
    (["--metrics-port", "70000"], "--metrics-port"),
    (["--metrics-port", "x"], "--metrics-port"),
    (["--metrics-host", "127.0.0.1"], "--metrics-host needs --metrics-port"),
    (["--metrics-port", "0", "--metrics-host", "192.0.2.1"], "cannot serve metrics"),
])
def test_bad_metrics_flags_get_one_line(capsys, argv, needle):
    try:
        code = main(["coordinate", "--node", "a=http://127.0.0.1:9", "--cluster-budget-w", "3000", "--once", *argv])
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and needle in lines[0], err


def test_pals_coordinate_serves_its_metrics_while_it_runs(capsys, live_loop):
    loop = live_loop()
    port = _free_port()
    codes = []
    with Endpoint(loop, port=0) as endpoint:
        argv = ["coordinate", "--node", f"gpu-a={endpoint.url}", "--cluster-budget-w", "3000", "--target",
                "gpu-a=500", "--interval-s", "0.2", "--duration-s", "4", "--metrics-port", str(port), "--quiet"]
        thread = threading.Thread(target=lambda: codes.append(main(argv)), daemon=True)
        thread.start()
        samples, deadline = {}, time.monotonic() + 15
        while time.monotonic() < deadline:  # poll until a round has been folded in
            try:
                text = _get(f"http://127.0.0.1:{port}/metrics")[1]
            except OSError:
                text = ""
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for f in text_string_to_metric_families(text) for s in f.samples}
            if samples.get(("pals_coordinator_rounds_total", ()), 0) >= 2:
                break
            time.sleep(0.1)
        budget_now = loop.budget.budget_w if loop.budget is not None else None
    thread.join(timeout=30)
    assert codes == [0]
    assert value(samples, "pals_coordinator_node_up", node="gpu-a") == 1
    assert value(samples, "pals_coordinator_node_target_tokens_per_second", node="gpu-a") == 500
    assert value(samples, "pals_coordinator_cluster_budget_watts") == 3000
    assert budget_now is not None
    assert value(samples, "pals_coordinator_node_budget_watts", node="gpu-a") == pytest.approx(budget_now, abs=0.01)
    assert f"metrics on http://127.0.0.1:{port}/metrics" in capsys.readouterr().err
