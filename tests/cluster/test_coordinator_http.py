"""The coordinator over real HTTP endpoints of simulated nodes (the control Endpoint + SimNode), and
against raw sockets that misbehave: the issue's repro (an out-of-band PUT, a restarted node, a node
that is down) and a node that answers one byte at a time."""

import json
import socket
import threading
import time
import urllib.request

import pytest

from pals.cluster.client import HttpNodeClient
from pals.cluster.coordinator import DEFAULT_UNKNOWN_NODE_MAX_W, Coordinator
from pals.control.budget import ThroughputTarget
from pals.control.endpoint import Endpoint
from pals.control.loop import ControlLoop
from pals.control.policies import make_policy
from pals.sim.node import SimNode, SimNodeSpec
from pals.sim.workload import LengthDistribution, PoissonWorkload


def make_loop(model, tp, rate_rps, seed):
    workload = PoissonWorkload(rate_rps, LengthDistribution.fixed(500), LengthDistribution.fixed(100), seed=seed)
    node = SimNode(SimNodeSpec(model, "A100-SXM4-80GB", tp=tp), workload, seed=seed)
    return node, ControlLoop(node, make_policy("baseline"), node.clock, interval_s=0.5)


def warm(node, loop, steps=3):
    for i in range(1, steps + 1):
        node.clock.wait_until(0.5 * i)
        loop.step()


def test_coordinator_reads_status_and_writes_budgets_over_http():
    nodes = [make_loop("OLMoE-1B-7B", 4, 20.0, 1), make_loop("Mixtral-8x7B", 4, 5.0, 2)]
    endpoints = [Endpoint(loop, port=0).start() for _, loop in nodes]
    clients = [HttpNodeClient(e.url, name=f"n{i}") for i, e in enumerate(endpoints)]
    try:
        for node, loop in nodes:
            warm(node, loop)
        status = clients[0].status()
        assert status.num_gpus == 4 and status.power_cap_max_w == 400
        assert status.throughput_tps is not None and status.node_power_w is not None
        assert clients[0].frontier() is None  # the endpoint serves no /frontier: linear fallback is used
        coordinator = Coordinator(clients, cluster_budget_w=2400.0, targets_tps={"n0": 1500.0, "n1": 400.0})
        result = coordinator.step()
        assert result.allocation.total_w <= 2400.0 + 1e-6
        assert result.in_force_end_w <= 2400.0 + 1e-6
        for (node, loop), name in zip(nodes, ("n0", "n1")):
            assert loop.budget.kind == "node"
            assert loop.budget.budget_w == pytest.approx(result.allocation.budgets_w[name], abs=0.01)
            assert isinstance(loop.target, ThroughputTarget)
        assert nodes[1][1].target.target_tps == 400.0
    finally:
        for endpoint in endpoints:
            endpoint.stop()


def _put(url, payload):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="PUT",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def test_issue_repro_out_of_band_raise_restart_and_a_down_node():
    """Two nodes, 3,000 W: a PUT of 5,000 W on one is overwritten next round; the other restarts and
    gets its budget back; then it stays down: the coordinator goes on and rebalances."""
    (node_a, loop_a), (node_b, loop_b) = make_loop("OLMoE-1B-7B", 4, 20.0, 1), make_loop("Mixtral-8x7B", 4, 5.0, 2)
    warm(node_a, loop_a)
    warm(node_b, loop_b)
    endpoint_a = Endpoint(loop_a, port=0).start()
    endpoint_b = Endpoint(loop_b, port=0).start()
    port_b = endpoint_b.port
    clients = [HttpNodeClient(endpoint_a.url, name="a", timeout_s=5.0),
               HttpNodeClient(endpoint_b.url, name="b", timeout_s=5.0)]
    coordinator = Coordinator(clients, cluster_budget_w=3000.0, targets_tps={"a": 1500.0, "b": 400.0})
    try:
        first = coordinator.step()
        assert first.in_force_end_w <= 3000.0 + 1e-6
        planned_a = loop_a.budget.budget_w

        assert _put(endpoint_a.url + "/budget", {"budget_w": 5000}) == 200  # out of band
        assert loop_a.budget.budget_w == 5000
        second = coordinator.step()
        assert second.nodes["a"].drift == "changed" and second.nodes["a"].reconciled
        assert loop_a.budget.budget_w == pytest.approx(planned_a, abs=1.0)
        assert loop_a.budget.budget_w + loop_b.budget.budget_w <= 3000.0 + 1e-6

        endpoint_b.stop()  # restart node b: a fresh controller, no budget, no target
        node_b, loop_b = make_loop("Mixtral-8x7B", 4, 5.0, 3)
        warm(node_b, loop_b)
        assert loop_b.budget is None
        endpoint_b = Endpoint(loop_b, port=port_b).start()
        third = coordinator.step()
        assert third.nodes["b"].drift == "missing" and third.nodes["b"].reconciled
        assert loop_b.budget is not None and loop_b.target.target_tps == 400.0
        assert loop_a.budget.budget_w + loop_b.budget.budget_w <= 3000.0 + 1e-6

        last_b = loop_b.budget.budget_w
        endpoint_b.stop()  # node b goes down for good
        fourth = coordinator.step()  # does not raise
        assert not fourth.nodes["b"].up
        assert fourth.reserved_down_w == pytest.approx(last_b, abs=0.01)
        assert loop_a.budget.budget_w <= 3000.0 - last_b + 1e-6
        fifth = coordinator.step()  # and goes on
        assert fifth.round_index == 4 and not fifth.nodes["b"].up and fifth.nodes["a"].up
    finally:
        endpoint_a.stop()
        endpoint_b.stop()


class RawServer:
    """A loopback TCP server whose every connection is handled by `serve(conn)` in a thread."""

    def __init__(self, serve):
        self.serve = serve
        self.stopped = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(4096)
                self.requests.append((head.decode("latin-1"), body))
                self.serve(conn, self)
            except OSError:
                return

    def close(self):
        self.stopped.set()
        self.sock.close()


def trickle(conn, server):
    """Answer one byte every 50 ms: a full answer would take minutes."""
    status = json.dumps({"budget": {"budget_w": 100.0, "kind": "node"}, "pad": "x" * 4000}).encode()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(status), status)
    for byte in answer:
        if server.stopped.is_set():
            return
        conn.sendall(bytes([byte]))
        time.sleep(0.05)


def test_a_node_answering_one_byte_at_a_time_cannot_hang_the_round():
    node, loop = make_loop("OLMoE-1B-7B", 4, 20.0, 1)
    warm(node, loop)
    slow = RawServer(trickle)
    try:
        with Endpoint(loop, port=0) as endpoint:
            clients = [HttpNodeClient(endpoint.url, name="a", timeout_s=5.0),
                       HttpNodeClient(slow.url, name="slow", timeout_s=1.0, retries=0)]
            report = Coordinator(clients, cluster_budget_w=3000.0).step()
        assert not report.nodes["slow"].up and "timed out" in report.nodes["slow"].error
        # The trickle would take over 200 s; the deadline ended it (generous bound for a loaded machine).
        assert report.duration_s < 60
        assert report.nodes["a"].up and loop.budget.budget_w <= 3000.0 - DEFAULT_UNKNOWN_NODE_MAX_W + 1e-6
    finally:
        slow.close()


def _answer(raw):
    def serve(conn, server):
        conn.sendall(raw)
    return serve


@pytest.mark.parametrize("raw, expected", [
    (b"hello there\r\n\r\n", "not an HTTP answer"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n<html>", "before the whole body"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>", "JSON object"),
    (b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom", "HTTP 500"),
    (b"", "empty answer"),
])
def test_a_node_answering_garbage_is_down_with_the_reason(raw, expected):
    server = RawServer(_answer(raw))
    try:
        client = HttpNodeClient(server.url, name="g", timeout_s=2.0, retries=0)
        report = Coordinator([client], cluster_budget_w=3000.0).step()
    finally:
        server.close()
    assert not report.nodes["g"].up and expected in report.nodes["g"].error


def test_chunked_answers_are_read():
    body = json.dumps({"budget": {"budget_w": 900.0, "kind": "node"}}).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    server = RawServer(_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked))
    try:
        status = HttpNodeClient(server.url, timeout_s=2.0).status()
    finally:
        server.close()
    assert status.node_budget_w == 900.0


def recorder(conn, server):
    head = server.requests[-1][0]
    if head.startswith("GET /status"):
        body = json.dumps({"budget": None, "constraints": {"num_gpus": 4, "power_cap_min_w": 100,
                                                           "power_cap_max_w": 400}}).encode()
    elif "authorization: bearer s3cret" not in head.lower():
        body, code = b'{"error": "token required"}', b"401 Unauthorized"
        conn.sendall(b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (code, len(body), body))
        return
    else:
        body = b'{"budget": {"budget_w": 1.0, "kind": "node"}}'
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


def test_writes_carry_the_bearer_token_and_a_json_content_type():
    server = RawServer(recorder)
    try:
        with_token = HttpNodeClient(server.url, name="t", timeout_s=2.0, token="s3cret")
        with_token.set_budget(1500.0)
        head, body = server.requests[-1]
        assert head.startswith("PUT /budget HTTP/1.1")
        lines = {line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:]}
        assert lines["authorization"] == "Bearer s3cret"
        assert lines["content-type"] == "application/json"
        assert lines["host"] == f"127.0.0.1:{server.port}"
        assert json.loads(body) == {"budget_w": 1500.0, "kind": "node"}
        without = HttpNodeClient(server.url, name="t", timeout_s=2.0)
        report = Coordinator([without], cluster_budget_w=3000.0).step()  # the node refuses: 401
    finally:
        server.close()
    assert report.nodes["t"].up and "401" in report.nodes["t"].error and "token" in report.nodes["t"].error
    assert report.nodes["t"].budget_in_force_w == pytest.approx(DEFAULT_UNKNOWN_NODE_MAX_W)  # still uncapped


def test_cli_coordinate_once_against_a_live_node(capsys):
    from pals.cli import main

    node, loop = make_loop("OLMoE-1B-7B", 4, 20.0, 3)
    warm(node, loop, steps=2)
    with Endpoint(loop, port=0) as endpoint:
        code = main(["coordinate", "--node", f"a={endpoint.url}", "--cluster-budget-w", "1300",
                     "--target", "a=1000", "--once"])
    assert code == 0
    out = capsys.readouterr().out
    assert "round 0: a" in out and "a: budget none ->" in out
    assert loop.budget.budget_w <= 1300.0


def test_node_urls_are_parsed_with_defaults_and_kept_prefixes():
    from pals.cluster.client import parse_node_url

    assert parse_node_url("127.0.0.1:9100") == ("127.0.0.1", 9100, "")
    assert parse_node_url("http://node-a/pals/") == ("node-a", 80, "/pals")
    assert parse_node_url("http://[::1]:9100") == ("::1", 9100, "")
    assert HttpNodeClient("http://[::1]:9100").url == "http://[::1]:9100"
