"""The coordinator over real HTTP endpoints of simulated nodes (H4's Endpoint + H2's SimNode)."""

import pytest

from pals.cluster.client import HttpNodeClient
from pals.cluster.coordinator import Coordinator
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


def test_coordinator_reads_status_and_writes_budgets_over_http():
    nodes = [make_loop("OLMoE-1B-7B", 4, 20.0, 1), make_loop("Mixtral-8x7B", 4, 5.0, 2)]
    endpoints = [Endpoint(loop, port=0).start() for _, loop in nodes]
    clients = [HttpNodeClient(e.url, name=f"n{i}") for i, e in enumerate(endpoints)]
    try:
        for t in (0.5, 1.0, 1.5):
            for node, loop in nodes:
                node.clock.wait_until(t)
                loop.step()
        status = clients[0].status()
        assert status.num_gpus == 4 and status.power_cap_max_w == 400
        assert status.throughput_tps is not None and status.node_power_w is not None
        assert clients[0].frontier() is None  # the endpoint serves no /frontier: linear fallback is used
        coordinator = Coordinator(clients, cluster_budget_w=2400.0, targets_tps={"n0": 1500.0, "n1": 400.0})
        result = coordinator.step()
        assert result.allocation.total_w <= 2400.0 + 1e-6
        for (node, loop), name in zip(nodes, ("n0", "n1")):
            assert loop.budget.kind == "node"
            assert loop.budget.budget_w == pytest.approx(result.allocation.budgets_w[name], abs=0.01)
            assert isinstance(loop.target, ThroughputTarget)
        assert nodes[1][1].target.target_tps == 400.0
    finally:
        for client in clients:
            client.close()
        for endpoint in endpoints:
            endpoint.stop()


def test_cli_coordinate_once_against_a_live_node(capsys):
    from pals.cli import main

    node, loop = make_loop("OLMoE-1B-7B", 4, 20.0, 3)
    node.clock.wait_until(0.5)
    loop.step()
    node.clock.wait_until(1.0)
    loop.step()
    with Endpoint(loop, port=0) as endpoint:
        code = main(["coordinate", "--node", f"a={endpoint.url}", "--cluster-budget-w", "1300",
                     "--target", "a=1000", "--once"])
    assert code == 0
    assert "round 0: a" in capsys.readouterr().out
    assert loop.budget.budget_w <= 1300.0
