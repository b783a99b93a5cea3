"""Coordinator round time for N nodes over real HTTP on loopback, healthy and with faulty nodes.

Each node is a simulated PALS node (SimNode + ControlLoop) behind its real control Endpoint; the
coordinator reads every node's /status and /frontier in parallel, splits the cluster budget and
writes budgets and targets back. Every fifth round one node's budget is raised out of band (as
`curl -X PUT .../budget` would, to 10x a node's share) and the next round must put it back. The
coordinator's Prometheus metrics (`pals coordinate --metrics-port`) are fed each round and
rendered once per round, as a scrape would: "metrics ms" is that cost. The faulty runs add one node
whose port refuses connections and one that answers one byte every 50 ms (the per-request deadline,
--timeout-s, bounds the round).

    python benchmarks/bench_coordinator.py [--nodes 2,8,32,64] [--rounds 20] [--timeout-s 1]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
import urllib.request


def _sim_endpoint(seed: int):
    from pals.control.endpoint import Endpoint
    from pals.control.loop import ControlLoop
    from pals.control.policies import make_policy
    from pals.sim.node import SimNode, SimNodeSpec
    from pals.sim.workload import LengthDistribution, PoissonWorkload

    workload = PoissonWorkload(10.0, LengthDistribution.fixed(500), LengthDistribution.fixed(100), seed=seed)
    node = SimNode(SimNodeSpec("OLMoE-1B-7B", "A100-SXM4-80GB", tp=4), workload, seed=seed)
    loop = ControlLoop(node, make_policy("baseline"), node.clock, interval_s=0.5)
    for t in (0.5, 1.0):
        node.clock.wait_until(t)
        loop.step()
    return Endpoint(loop, port=0).start()


def _trickle_server(stop: threading.Event) -> int:
    """A port that accepts, reads the request, then answers one byte every 50 ms."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)

    def handle(conn):
        with conn:
            try:
                conn.recv(65536)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000:
                    if stop.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(0.05)
            except OSError:
                return

    def accept():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
        server.close()

    threading.Thread(target=accept, daemon=True).start()
    return server.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _put_budget(url: str, budget_w: float) -> None:
    request = urllib.request.Request(url + "/budget", data=json.dumps({"budget_w": budget_w}).encode(),
                                     method="PUT", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()


def run(nodes: int, rounds: int, timeout_s: float, faulty: bool) -> str:
    from pals.cluster.client import HttpNodeClient
    from pals.cluster.coordinator import Coordinator
    from pals.cluster.metrics import CoordinatorMetrics

    endpoints = [_sim_endpoint(seed) for seed in range(nodes)]
    stop = threading.Event()
    clients = [HttpNodeClient(e.url, name=f"n{i}", timeout_s=timeout_s) for i, e in enumerate(endpoints)]
    if faulty:
        clients.append(HttpNodeClient(f"http://127.0.0.1:{_closed_port()}", name="refused", timeout_s=timeout_s))
        clients.append(HttpNodeClient(f"http://127.0.0.1:{_trickle_server(stop)}", name="trickle",
                                      timeout_s=timeout_s, retries=0))
    share_w = 1500.0
    cluster_w = share_w * len(clients)
    coordinator = Coordinator(clients, cluster_budget_w=cluster_w, targets_tps={"n0": 800.0},
                              node_deadline_s=2 * timeout_s + 5)
    metrics = CoordinatorMetrics(cluster_w, nodes=[c.name for c in clients])
    durations, metrics_s, reconciled, over = [], [], 0, 0
    try:
        for i in range(rounds):
            if i and i % 5 == 0:
                _put_budget(endpoints[0].url, 10 * share_w)  # out of band
            report = coordinator.step()
            durations.append(report.duration_s)
            start_s = time.perf_counter()
            metrics.update(report, coordinator.targets_tps)
            metrics.exposition()
            metrics_s.append(time.perf_counter() - start_s)
            reconciled += sum(1 for n in report.nodes.values() if n.reconciled and n.drift == "changed")
            over += report.in_force_end_w > cluster_w + 1e-6
    finally:
        stop.set()
        for endpoint in endpoints:
            endpoint.stop()
    drifts = (rounds - 1) // 5
    label = f"{nodes} nodes" + (" + refused + trickle" if faulty else "")
    return (f"{label:28s} {statistics.median(durations) * 1000:8.1f} {max(durations) * 1000:8.1f} "
            f"{reconciled:>5d}/{drifts:<3d} {over:>6d} {statistics.median(metrics_s) * 1000:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="2,8,32,64")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--timeout-s", type=float, default=1.0)
    args = parser.parse_args()
    print(f"{args.rounds} rounds each, --timeout-s {args.timeout_s:g}; an out-of-band PUT of 10x a node's share every 5th round")
    print(f"{'cluster':28s} {'p50 ms':>8s} {'max ms':>8s} {'fixed':>9s} {'over':>6s} {'metrics ms':>10s}")
    for count in (int(x) for x in args.nodes.split(",")):
        print(run(count, args.rounds, args.timeout_s, faulty=False), flush=True)
    print(run(8, max(5, args.rounds // 2), args.timeout_s, faulty=True), flush=True)


if __name__ == "__main__":
    main()
