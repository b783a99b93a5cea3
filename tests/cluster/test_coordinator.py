"""Coordinator rounds against in-memory nodes: the cluster budget is enforced against what each node
reports (drift, restarts), down or faulty nodes keep their last safe budget counted and never stop the
coordinator, writes go down before up, and a property test over random node histories."""

import math
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pals.cluster.allocation import Frontier
from pals.cluster.client import NodeStatus, parse_status
from pals.cluster.coordinator import DEFAULT_UNKNOWN_NODE_MAX_W, MIN_BUDGET_W, Coordinator, linear_frontier
from pals.errors import ConfigError, EngineUnreachable

MAX_DRAW_W = DEFAULT_UNKNOWN_NODE_MAX_W  # 4 GPUs at 400 W on the paper's power line: 2,025 W


class Cluster:
    """The truth the coordinator cannot see directly: every node's budget in force, checked at every write."""

    def __init__(self, budget_w):
        self.budget_w = budget_w
        self.nodes = []
        self.log = []  # (node, "budget"|"target", value) in write order
        self.sums_w = []  # true sum in force right after each budget write

    def true_sum_w(self):
        # A node without a budget may draw up to its maximum: that is what it holds of the cluster.
        return sum(MAX_DRAW_W if n.budget_w is None else n.budget_w for n in self.nodes)


class FakeNode:
    """A NodeClient over an in-memory node (a test double for a node endpoint, no GPU or HTTP).

    `up=False`: every call raises, as a client does for a node that is down. `fail_write`: the next
    budget write raises, "before" without taking effect, "after" having taken effect (a timeout
    after the node applied it)."""

    def __init__(self, cluster, name, hi_tps, throughput_tps=1000, waiting=3):
        self.cluster = cluster
        self.name = name
        self._frontier = ramp(800, 2000, 400, hi_tps)
        self.throughput_tps = throughput_tps
        self.waiting = waiting
        self.budget_w = None
        self.target_tps = None
        self.up = True
        self.fail_write = None
        cluster.nodes.append(self)

    def _check_up(self):
        if not self.up:
            raise EngineUnreachable(f"node {self.name} does not answer (test: down)")

    def status(self):
        self._check_up()
        return parse_status(
            self.name,
            {
                "time_s": 10.0,
                "last_sample": {"throughput_tps": self.throughput_tps, "node_power_w": 1500.0,
                                "requests_waiting": self.waiting},
                "constraints": {"num_gpus": 4, "power_cap_min_w": 100, "power_cap_max_w": 400},
                "budget": None if self.budget_w is None else {"budget_w": self.budget_w, "kind": "node"},
                "target": None if self.target_tps is None else {"target_tps": self.target_tps},
            },
        )

    def set_budget(self, budget_w):
        self._check_up()
        fail, self.fail_write = self.fail_write, None
        if fail == "before":
            raise EngineUnreachable(f"node {self.name}: PUT /budget timed out (test: not applied)")
        self.budget_w = budget_w
        self.cluster.log.append((self.name, "budget", budget_w))
        self.cluster.sums_w.append(self.cluster.true_sum_w())
        if fail == "after":
            raise EngineUnreachable(f"node {self.name}: PUT /budget timed out (test: applied)")

    def set_target(self, target_tps):
        self._check_up()
        self.target_tps = target_tps
        self.cluster.log.append((self.name, "target", target_tps))

    def frontier(self):
        self._check_up()
        return self._frontier


def ramp(floor_w, ceiling_w, lo, hi):
    return Frontier.from_points([(floor_w + (ceiling_w - floor_w) * i / 8, lo + (hi - lo) * i / 8) for i in range(9)])


def make(budget_w=3000, a_tps=1000, b_tps=1000, waiting=(3, 3)):
    cluster = Cluster(budget_w)
    a = FakeNode(cluster, "a", 2400, a_tps, waiting[0])
    b = FakeNode(cluster, "b", 1200, b_tps, waiting[1])
    return cluster, a, b


def assert_no_write_raised_the_total_above_budget(cluster, start_w):
    """Each budget write either kept the true total within the budget or lowered it."""
    previous_w = start_w
    for total_w in cluster.sums_w:
        assert total_w <= max(cluster.budget_w, previous_w) + 1e-6
        previous_w = total_w


def budget_writes(cluster):
    return [(name, value) for name, kind, value in cluster.log if kind == "budget"]


def test_round_writes_budgets_within_cluster_budget_and_targets_once():
    cluster, a, b = make()
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 1400, "b": 800})
    first = coord.step()
    assert first.in_force_end_w <= 3000 + 1e-6
    assert a.frontier().throughput_at(a.budget_w) >= 1400 - 1e-6
    assert b.frontier().throughput_at(b.budget_w) >= 800 - 1e-6
    assert a.target_tps == 1400 and b.target_tps == 800
    # Both nodes started without a budget (4,050 W of possible draw): every write lowered the total.
    assert_no_write_raised_the_total_above_budget(cluster, 2 * MAX_DRAW_W)
    cluster.sums_w.clear()
    coord.step()
    assert sum(1 for entry in cluster.log if entry[1] == "target") == 2  # not rewritten
    assert cluster.sums_w == []  # nothing moved: nothing rewritten


def test_moving_power_between_nodes_writes_the_decrease_first():
    cluster, a, b = make()
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 2000, "b": 500})
    coord.step()
    before = (a.budget_w, b.budget_w)
    coord.targets_tps = {"a": 500, "b": 1100}
    cluster.log.clear()
    cluster.sums_w.clear()
    coord.step()
    assert a.budget_w < before[0] and b.budget_w > before[1]
    writes = [name for name, _ in budget_writes(cluster)]
    assert writes.index("a") < writes.index("b")
    assert max(cluster.sums_w) <= 3000 + 1e-6


def test_demand_limited_node_gets_no_slack_beyond_its_load():
    # Node a serves all its load (nothing waiting) at 600 tok/s; b has a backlog.
    cluster, a, b = make(3200, a_tps=600, b_tps=1000, waiting=(0, 5))
    coord = Coordinator([a, b], cluster_budget_w=3200, targets_tps={"a": 500, "b": 500}, demand_margin=0.0)
    result = coord.step()
    assert result.demand_tps["a"] == pytest.approx(600)
    assert math.isinf(result.demand_tps["b"])
    # Slack goes to b (it can use it) before a gets margin.
    assert b.budget_w == pytest.approx(2000)
    assert a.budget_w == pytest.approx(1200)


def test_small_moves_are_not_rewritten():
    cluster, a, b = make()
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 1400, "b": 800}, min_change_w=50)
    coord.step()
    again = coord.step()
    assert again.budgets_written == {}
    assert again.actions == ()


def test_an_out_of_band_raise_is_overwritten_next_round_before_any_raise():
    cluster, a, b = make()
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 1400, "b": 800})
    coord.step()
    planned_a = a.budget_w
    a.budget_w = 5000.0  # someone ran: curl -X PUT -d '{"budget_w": 5000}' node-a/budget
    cluster.log.clear()
    report = coord.step()
    assert report.nodes["a"].drift == "changed" and report.nodes["a"].reconciled
    assert report.nodes["a"].budget_reported_w == 5000.0
    assert report.in_force_start_w > 3000 and report.in_force_end_w <= 3000 + 1e-6
    assert a.budget_w == pytest.approx(planned_a, abs=1.0)
    assert budget_writes(cluster)[0][0] == "a"  # the drifted node is brought down first
    assert any("a: budget 5000 W ->" in line and "did not write" in line for line in report.actions)


def test_a_restarted_node_without_budget_or_target_gets_both_again():
    cluster, a, b = make()
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 1400, "b": 800})
    coord.step()
    b.budget_w, b.target_tps = None, None  # restarted: it came back with nothing
    report = coord.step()
    assert report.nodes["b"].drift == "missing" and report.nodes["b"].reconciled
    assert b.budget_w is not None and b.target_tps == 800
    assert cluster.true_sum_w() <= 3000 + 1e-6
    assert report.nodes["a"].drift is None and not report.nodes["a"].reconciled


def test_a_down_node_keeps_its_last_budget_counted_and_the_rest_is_rebalanced():
    cluster, a, b = make()
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 2400, "b": 800})
    coord.step()
    last_b = b.budget_w
    b.up = False
    report = coord.step()  # does not raise
    assert not report.nodes["b"].up and "down" in report.nodes["b"].error
    assert report.reserved_down_w == pytest.approx(last_b)
    assert report.nodes["b"].budget_in_force_w == pytest.approx(last_b)
    assert a.budget_w <= 3000 - last_b + 1e-6
    assert any(line.startswith("b: down") and f"{last_b:.0f} W" in line for line in report.actions)
    b.up = True
    back = coord.step()
    assert back.nodes["b"].up and back.reserved_down_w == 0
    assert cluster.true_sum_w() <= 3000 + 1e-6


def test_a_node_never_heard_from_is_counted_at_its_maximum_draw():
    cluster, a, b = make()
    b.up = False
    report = Coordinator([a, b], cluster_budget_w=3000).step()
    assert report.reserved_down_w == pytest.approx(MAX_DRAW_W)
    assert a.budget_w <= 3000 - MAX_DRAW_W + 1e-6
    known = Coordinator([a, b], cluster_budget_w=3000, max_node_power_w={"b": 1200}).step()
    assert known.reserved_down_w == pytest.approx(1200)


def test_when_down_nodes_hold_the_whole_budget_the_others_are_held_at_the_minimum():
    cluster, a, b = make(budget_w=1500)
    b.up = False  # never seen: counted at 2,025 W, more than the cluster budget
    report = Coordinator([a, b], cluster_budget_w=1500).step()
    assert a.budget_w == MIN_BUDGET_W
    assert not report.allocation.feasible
    assert any("cannot fund" in line for line in report.actions)


def test_a_failed_decrease_blocks_the_raise_it_would_pay_for():
    cluster, a, b = make()
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 2000, "b": 500})
    coord.step()
    coord.targets_tps = {"a": 500, "b": 1100}
    a.fail_write = "before"  # a's decrease never lands
    cluster.sums_w.clear()
    report = coord.step()
    assert report.nodes["a"].up and report.nodes["a"].error is not None
    before_b = report.nodes["b"].budget_counted_start_w
    assert report.nodes["b"].clipped and b.budget_w == before_b  # held back: no room was freed
    assert cluster.true_sum_w() <= 3000 + 1e-6
    assert cluster.sums_w == []  # nothing landed
    assert any("b: raise to" in line and "held back" in line for line in report.actions)


def test_a_write_that_may_have_landed_is_counted_at_the_larger_budget():
    cluster, a, b = make()
    coord = Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": 500, "b": 1100})
    coord.step()
    coord.targets_tps = {"a": 2000, "b": 500}
    before_a = a.budget_w
    b.fail_write = "after"  # b's decrease lands but the answer is lost
    cluster.sums_w.clear()
    report = coord.step()
    assert report.nodes["b"].budget_in_force_w == pytest.approx(report.nodes["b"].budget_counted_start_w)
    assert report.in_force_end_w <= 3000 + 1e-6
    assert a.budget_w >= before_a  # a was raised only into what is surely free
    assert max(cluster.sums_w) <= 3000 + 1e-6


class _HangingNode(FakeNode):
    def __init__(self, cluster, name, release):
        super().__init__(cluster, name, 1200)
        self.release = release

    def status(self):
        self.release.wait(60)  # a client that does not bound its own call
        return super().status()


def test_a_node_that_hangs_is_down_for_the_round_and_the_round_finishes():
    cluster = Cluster(3000)
    a = FakeNode(cluster, "a", 2400)
    release = threading.Event()
    hung = _HangingNode(cluster, "h", release)
    try:
        report = Coordinator([a, hung], cluster_budget_w=3000, node_deadline_s=2.0).step()
        assert not report.nodes["h"].up and "no answer within" in report.nodes["h"].error
        assert a.budget_w <= 3000 - MAX_DRAW_W + 1e-6
    finally:
        release.set()


class _BrokenNode(FakeNode):
    def status(self):
        raise ValueError("garbage in /status")  # not a PALS error: still only this node's fault


def test_any_exception_from_one_node_makes_it_down_not_the_coordinator():
    cluster = Cluster(3000)
    a = FakeNode(cluster, "a", 2400)
    broken = _BrokenNode(cluster, "x", 1200)
    report = Coordinator([a, broken], cluster_budget_w=3000).step()
    assert not report.nodes["x"].up and "garbage" in report.nodes["x"].error
    assert report.nodes["a"].up and a.budget_w is not None


def test_run_skips_missed_ticks_instead_of_catching_up():
    class Clock:
        def __init__(self):
            self.t = 0.0
            self.waits = []

        def now_s(self):
            return self.t

        def wait_until(self, t):
            self.waits.append(t)
            self.t = max(self.t, t)

    cluster, a, b = make()
    coord = Coordinator([a, b], cluster_budget_w=3000)
    clock = Clock()
    real_step = coord.step

    def slow_step():
        clock.t += 2.5  # a round that takes 2.5 intervals
        return real_step()

    coord.step = slow_step
    coord.run(clock, interval_s=1.0, duration_s=10.0)
    assert clock.waits[:3] == [3.0, 6.0, 9.0]


def test_linear_frontier_spans_the_cap_range_and_ignores_absurd_constraints():
    status = parse_status("x", {"throughput_tps": 1000, "node_power_w": 1185, "num_gpus": 4, "power_cap_min_w": 100, "power_cap_max_w": 400})
    frontier = linear_frontier(status)
    assert frontier.node_power_w[0] == pytest.approx(1.05 * 400 + 345)
    assert frontier.node_power_w[-1] == pytest.approx(1.05 * 1600 + 345)
    assert frontier.throughput_at(1185) == pytest.approx(1000, rel=0.01)
    garbled = parse_status("x", {"throughput_tps": -5, "num_gpus": -3, "power_cap_min_w": 500, "power_cap_max_w": 1e300})
    assert linear_frontier(garbled).node_power_w[-1] == pytest.approx(MAX_DRAW_W)


def test_bad_configuration_names_the_fix():
    cluster, a, b = make()
    with pytest.raises(ConfigError, match="unknown nodes"):
        Coordinator([a, b], cluster_budget_w=3000, targets_tps={"c": 1})
    for bad in (-1, 0, math.nan, math.inf, 1e308, True):
        with pytest.raises(ConfigError, match="cluster_budget_w"):
            Coordinator([a, b], cluster_budget_w=bad)
    with pytest.raises(ConfigError, match="--node"):
        Coordinator([], cluster_budget_w=100)
    with pytest.raises(ConfigError, match="priority"):
        Coordinator([a, b], cluster_budget_w=3000, priorities={"a": 0})
    with pytest.raises(ConfigError, match="target"):
        Coordinator([a, b], cluster_budget_w=3000, targets_tps={"a": math.nan})


def test_parse_status_tolerates_missing_and_garbled_fields():
    status = parse_status("n", {})
    assert isinstance(status, NodeStatus) and status.throughput_tps is None and not status.demand_limited
    garbled = parse_status("n", {"budget": {"budget_w": True}, "last_sample": "x", "num_gpus": 10**400,
                                 "target": {"target_tps": "fast"}})
    assert garbled.budget_w is None and garbled.target_tps is None and garbled.node_budget_w is None
    gpu_only = parse_status("n", {"budget": {"budget_w": 800, "kind": "gpu"}})
    assert gpu_only.budget_w == 800 and gpu_only.node_budget_w is None  # not a node budget: rewritten


# -- property: random node histories never break the cluster budget ---------------------------------

EVENTS = ("steady", "down", "up", "drift", "restart", "fail_before", "fail_after", "targets")


EVENT = st.tuples(st.sampled_from(EVENTS), st.sampled_from(("a", "b", "c")), st.floats(0, 6000), st.floats(0, 2500))


def _apply(coord, nodes, event, name, value_w, target_tps):
    node = nodes[name]
    if event == "down":
        node.up = False
    elif event == "up":
        node.up = True
    elif event == "drift" and node.up:
        node.budget_w = max(1.0, value_w)
    elif event == "restart" and node.up:
        node.budget_w, node.target_tps = None, None
    elif event in ("fail_before", "fail_after"):
        node.fail_write = event.split("_")[1]
    elif event == "targets":
        coord.targets_tps = {"a": max(1.0, target_tps), "b": 600}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(budget_w=st.floats(1700, 4500), history=st.lists(st.lists(EVENT, max_size=3), min_size=1, max_size=10))
def test_no_round_ever_puts_more_than_the_cluster_budget_in_force(budget_w, history):
    """Before each round, up to three random events (a node goes down or comes back, someone PUTs a
    random budget, a node restarts without budget, its next write fails before or after landing,
    targets move), then a coordinator round. Checked with the nodes' true budgets: no budget write
    ever raises the total above the cluster budget (it may only lower an excess someone else caused),
    every round where all writes landed ends within the budget, and the coordinator never counts less
    than is really in force. Down nodes are counted at their last safe budget; a drift is only made on
    a node that answers the next round (no coordinator could see one on a node it cannot reach)."""
    cluster = Cluster(budget_w)
    nodes = {n: FakeNode(cluster, n, hi) for n, hi in (("a", 2400), ("b", 1200), ("c", 1800))}
    coord = Coordinator(list(nodes.values()), cluster_budget_w=budget_w, targets_tps={"a": 1400, "b": 600})
    for events in history:
        for event in sorted(events, key=lambda e: e[0] != "down"):  # downs first: a drift is then seen
            _apply(coord, nodes, *event)
        start_w = cluster.true_sum_w()
        cluster.sums_w.clear()
        report = coord.step()
        assert_no_write_raised_the_total_above_budget(cluster, start_w)
        true_w = cluster.true_sum_w()
        assert report.in_force_end_w >= true_w - 1e-6, "the coordinator counted less than is in force"
        writes_failed = any(n.error is not None for n in report.nodes.values() if n.up)
        reserve_ok = report.reserved_down_w + MIN_BUDGET_W * report.nodes_up <= budget_w
        if not writes_failed and reserve_ok:
            assert true_w <= budget_w + 1e-6
            assert report.in_force_end_w <= budget_w + 1e-6


def test_a_failing_or_garbled_frontier_source_falls_back_to_the_linear_estimate():
    cluster, a, b = make()

    def broken(status):
        raise RuntimeError("predictor file vanished")

    report = Coordinator([a, b], cluster_budget_w=3000,
                         frontier_sources={"a": broken, "b": lambda status: "not a frontier"}).step()
    assert report.nodes["a"].up and report.nodes["b"].up
    assert a.budget_w is not None and b.budget_w is not None
    assert cluster.true_sum_w() <= 3000 + 1e-6
