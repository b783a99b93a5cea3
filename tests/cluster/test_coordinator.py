"""Coordinator rounds: budgets within the cluster budget, decreases first, targets pushed once."""

import math

import pytest

from pals.cluster.allocation import Frontier
from pals.cluster.client import NodeStatus, parse_status
from pals.cluster.coordinator import Coordinator, linear_frontier
from pals.errors import ConfigError


class InMemoryClient:
    """A NodeClient over a dict instead of HTTP; records writes in order (shared log)."""

    def __init__(self, name, frontier, throughput_tps, waiting, log):
        self.name = name
        self._frontier = frontier
        self.throughput_tps = throughput_tps
        self.waiting = waiting
        self.budget_w = None
        self.target_tps = None
        self.log = log

    def status(self):
        return parse_status(
            self.name,
            {
                "time_s": 10.0,
                "observation": {"throughput_tps": self.throughput_tps, "node_power_w": 1500.0, "requests_waiting": self.waiting},
                "constraints": {"num_gpus": 4, "power_cap_min_w": 100, "power_cap_max_w": 400},
                "budget": None if self.budget_w is None else {"budget_w": self.budget_w},
            },
        )

    def set_budget(self, budget_w):
        self.budget_w = budget_w
        self.log.append((self.name, "budget", budget_w))
        in_force = sum(c.budget_w for c in self.peers if c.budget_w is not None)
        self.log.append(("sum", in_force))

    def set_target(self, target_tps):
        self.target_tps = target_tps
        self.log.append((self.name, "target", target_tps))

    def frontier(self):
        return self._frontier


def ramp(floor_w, ceiling_w, lo, hi):
    return Frontier.from_points([(floor_w + (ceiling_w - floor_w) * i / 8, lo + (hi - lo) * i / 8) for i in range(9)])


def make(log, a_tps=1000, b_tps=1000, waiting=(3, 3)):
    a = InMemoryClient("a", ramp(800, 2000, 400, 2400), a_tps, waiting[0], log)
    b = InMemoryClient("b", ramp(800, 2000, 400, 1200), b_tps, waiting[1], log)
    a.peers = b.peers = [a, b]
    return a, b


def test_round_writes_budgets_within_cluster_budget_and_targets_once():
    log = []
    a, b = make(log)
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 1400, "b": 800})
    first = coord.step()
    assert sum(first.allocation.budgets_w.values()) <= 3000 + 1e-6
    assert a.frontier().throughput_at(a.budget_w) >= 1400 - 1e-6
    assert b.frontier().throughput_at(b.budget_w) >= 800 - 1e-6
    assert a.target_tps == 1400 and b.target_tps == 800
    coord.step()
    assert sum(1 for entry in log if entry[1:2] == ("target",)) == 2  # not rewritten
    assert all(entry[1] <= 3000 + 1e-6 for entry in log if entry[0] == "sum")


def test_moving_power_between_nodes_writes_the_decrease_first():
    log = []
    a, b = make(log)
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 2000, "b": 500})
    coord.step()
    before = (a.budget_w, b.budget_w)
    coord.targets_tps = {"a": 500, "b": 1100}
    log.clear()
    coord.step()
    assert a.budget_w < before[0] and b.budget_w > before[1]
    writes = [entry[0] for entry in log if entry[1:2] == ("budget",)]
    assert writes.index("a") < writes.index("b")
    assert all(entry[1] <= 3000 + 1e-6 for entry in log if entry[0] == "sum")


def test_demand_limited_node_gets_no_slack_beyond_its_load():
    log = []
    # Node a serves all its load (nothing waiting) at 600 tok/s; b has a backlog.
    a, b = make(log, a_tps=600, b_tps=1000, waiting=(0, 5))
    coord = Coordinator([a, b], cluster_budget_w=3200, targets_tps={"a": 500, "b": 500}, demand_margin=0.0)
    result = coord.step()
    assert result.demand_tps["a"] == pytest.approx(600)
    assert math.isinf(result.demand_tps["b"])
    # Slack goes to b (it can use it) before a gets margin.
    assert b.budget_w == pytest.approx(2000)
    assert a.budget_w == pytest.approx(1200)


def test_small_moves_are_not_rewritten():
    log = []
    a, b = make(log)
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 1400, "b": 800}, min_change_w=50)
    coord.step()
    log.clear()
    again = coord.step()
    assert again.budgets_written == {}


def test_linear_frontier_spans_the_cap_range():
    status = parse_status("x", {"throughput_tps": 1000, "node_power_w": 1185, "num_gpus": 4, "power_cap_min_w": 100, "power_cap_max_w": 400})
    frontier = linear_frontier(status)
    assert frontier.node_power_w[0] == pytest.approx(1.05 * 400 + 345)
    assert frontier.node_power_w[-1] == pytest.approx(1.05 * 1600 + 345)
    assert frontier.throughput_at(1185) == pytest.approx(1000, rel=0.01)


def test_bad_configuration_names_the_fix():
    log = []
    a, b = make(log)
    with pytest.raises(ConfigError, match="unknown nodes"):
        Coordinator([a, b], cluster_budget_w=3000, targets_tps={"c": 1})
    with pytest.raises(ConfigError, match="cluster_budget_w"):
        Coordinator([a, b], cluster_budget_w=-1)
    with pytest.raises(ConfigError, match="--node"):
        Coordinator([], cluster_budget_w=100)


def test_parse_status_tolerates_missing_fields():
    status = parse_status("n", {})
    assert isinstance(status, NodeStatus) and status.throughput_tps is None and not status.demand_limited
