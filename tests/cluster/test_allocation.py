"""Cluster budget allocation: QoS first, then marginal tokens/J, never over budget."""

import math

import pytest

from pals.cluster.allocation import Frontier, NodeDemand, allocate
from pals.errors import ConfigError


def linear_frontier(floor_w, ceiling_w, tps_at_floor, tps_at_ceiling, points=9):
    step = (ceiling_w - floor_w) / (points - 1)
    return Frontier.from_points(
        [
            (floor_w + i * step, tps_at_floor + (tps_at_ceiling - tps_at_floor) * i / (points - 1))
            for i in range(points)
        ]
    )


def node(name, target, floor=800.0, ceiling=2000.0, lo=500.0, hi=2500.0, demand=math.inf, priority=1.0):
    return NodeDemand(
        name=name,
        floor_w=floor,
        ceiling_w=ceiling,
        target_tps=target,
        frontier=linear_frontier(floor, ceiling, lo, hi),
        demand_tps=demand,
        priority=priority,
    )


def test_frontier_is_upper_envelope_and_inverts():
    frontier = Frontier.from_points([(1000, 900), (800, 500), (1000, 1000), (1200, 950), (1400, 1500)])
    assert frontier.node_power_w == (800, 1000, 1200, 1400)
    # 1200 W can reuse the 1000 W configuration, so its throughput is not below it.
    assert frontier.throughput_tps == (500, 1000, 1000, 1500)
    assert frontier.throughput_at(900) == pytest.approx(750)
    assert frontier.throughput_at(100) == 0.0
    assert frontier.power_for(750) == pytest.approx(900)
    assert frontier.power_for(1000) == pytest.approx(1000)
    assert math.isinf(frontier.power_for(2000))


def test_needs_fit_each_node_gets_at_least_its_need_and_total_within_budget():
    nodes = [node("a", 1500), node("b", 1000), node("c", 2000)]
    result = allocate(nodes, cluster_budget_w=5000)
    assert result.feasible and result.qos_fraction == 1.0
    for n in nodes:
        assert result.budgets_w[n.name] >= result.need_w[n.name] - 1e-6
        assert n.frontier.throughput_at(result.budgets_w[n.name]) >= n.target_tps - 1e-6
    assert result.total_w <= 5000 + 1e-6


def test_needs_exceed_budget_water_fills_equal_fraction_of_target():
    nodes = [node("a", 2400), node("b", 2400, lo=1000, hi=3000)]
    result = allocate(nodes, cluster_budget_w=2800)
    assert result.total_w <= 2800 + 1e-6
    assert 0 < result.qos_fraction < 1
    served = [n.frontier.throughput_at(result.budgets_w[n.name]) / n.target_tps for n in nodes]
    # Max-min fairness: both nodes reach the same fraction of their target.
    assert served[0] == pytest.approx(served[1], abs=0.01)
    assert served[0] == pytest.approx(result.qos_fraction, abs=0.01)


def test_priority_node_is_filled_first():
    nodes = [node("a", 2400, priority=2.0), node("b", 2400)]
    result = allocate(nodes, cluster_budget_w=2800)
    served = {n.name: n.frontier.throughput_at(result.budgets_w[n.name]) / n.target_tps for n in nodes}
    assert served["a"] > served["b"]


def test_slack_goes_where_it_buys_the_most_tokens_per_joule():
    # Both need their floor only; "steep" gains 3 tok/s per W, "flat" 0.5 tok/s per W.
    steep = node("steep", 100, lo=500, hi=4100)
    flat = node("flat", 100, lo=500, hi=1100)
    result = allocate([steep, flat], cluster_budget_w=800 + 800 + 600)
    assert result.budgets_w["steep"] == pytest.approx(1400, abs=1e-6)
    assert result.budgets_w["flat"] == pytest.approx(800, abs=1e-6)


def test_slack_stops_at_offered_load_and_margin_is_spread_within_ceilings():
    # Node a's load (600 tok/s) is served at its floor: extra power buys it nothing.
    a = node("a", 100, demand=600)
    b = node("b", 100, demand=1500)
    result = allocate([a, b], cluster_budget_w=10_000)
    assert result.budgets_w["a"] == pytest.approx(a.ceiling_w)
    assert result.budgets_w["b"] == pytest.approx(b.ceiling_w)
    assert result.unallocated_w == pytest.approx(10_000 - 4000)
    tight = allocate([a, b], cluster_budget_w=2600)
    # b needs 1250 W for its load; the greedy pass gives it exactly that first.
    assert tight.budgets_w["b"] >= 1250 - 1e-6
    assert tight.total_w == pytest.approx(2600)


def test_floors_over_budget_is_infeasible_and_still_within_budget():
    nodes = [node("a", 1000), node("b", 1000)]
    result = allocate(nodes, cluster_budget_w=1200)
    assert not result.feasible
    assert result.total_w == pytest.approx(1200)
    assert result.budgets_w["a"] == pytest.approx(600)


@pytest.mark.parametrize("budget", [1700, 2100, 2600, 3300, 4100, 6000])
def test_total_never_exceeds_budget_and_nodes_stay_in_range(budget):
    nodes = [node("a", 2000), node("b", 900, floor=700, ceiling=1500), node("c", 1800, demand=1200)]
    result = allocate(nodes, cluster_budget_w=budget, step_w=7.0)
    assert result.total_w <= budget + 1e-6
    # Floors total 2,300 W: below that the allocation is flagged, and scaled, not range-checked.
    assert result.feasible == (budget >= 2300)
    for n in nodes if result.feasible else []:
        assert n.floor_w - 1e-6 <= result.budgets_w[n.name] <= n.ceiling_w + 1e-6


def test_bad_inputs_name_the_field():
    with pytest.raises(ConfigError, match="cluster_budget_w"):
        allocate([node("a", 1)], cluster_budget_w=0)
    with pytest.raises(ConfigError, match="unique"):
        allocate([node("a", 1), node("a", 1)], cluster_budget_w=5000)
    with pytest.raises(ConfigError, match="floor_w"):
        node("a", 1, floor=900, ceiling=800)
    with pytest.raises(ConfigError, match="frontier"):
        Frontier.from_points([])


# -- properties (hypothesis) ------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def demands(draw):
    """1-6 nodes with random floors, ceilings, frontiers (which may start above the floor), targets,
    offered loads and priorities."""
    count = draw(st.integers(1, 6))
    nodes = []
    for i in range(count):
        floor_w = draw(st.floats(0, 3000))
        ceiling_w = floor_w + draw(st.floats(0, 3000))
        points = draw(st.lists(st.tuples(st.floats(1, 6000), st.floats(0, 5000)), min_size=1, max_size=8))
        demand = draw(st.one_of(st.just(math.inf), st.floats(0, 5000)))
        nodes.append(NodeDemand(
            name=f"n{i}", floor_w=floor_w, ceiling_w=ceiling_w, target_tps=draw(st.floats(0, 5000)),
            frontier=Frontier.from_points(points), demand_tps=demand, priority=draw(st.floats(0.1, 5)),
        ))
    return nodes


def _tol(budget_w):
    return 1e-6 * max(1.0, budget_w)


@settings(max_examples=300, deadline=None)
@given(nodes=demands(), budget_w=st.floats(1, 20000), step_w=st.floats(10, 200))
def test_allocation_never_exceeds_the_budget_and_meets_floors_and_needs_when_they_fit(nodes, budget_w, step_w):
    result = allocate(nodes, budget_w, step_w=step_w)
    assert result.total_w <= budget_w + _tol(budget_w)
    assert all(b >= 0 for b in result.budgets_w.values())
    floors_fit = sum(n.floor_w for n in nodes) <= budget_w
    assert result.feasible == floors_fit
    if floors_fit:
        for n in nodes:
            assert n.floor_w - _tol(budget_w) <= result.budgets_w[n.name] <= n.ceiling_w + _tol(budget_w)
    if sum(result.need_w.values()) <= budget_w:
        assert result.qos_fraction == 1.0
        for n in nodes:
            assert result.budgets_w[n.name] >= result.need_w[n.name] - _tol(budget_w)


@settings(max_examples=200, deadline=None)
@given(nodes=demands(), low_w=st.floats(1, 15000), extra_w=st.floats(0, 5000))
def test_more_cluster_budget_never_means_less_allocated_or_less_qos(nodes, low_w, extra_w):
    small = allocate(nodes, low_w, step_w=25.0)
    large = allocate(nodes, low_w + extra_w, step_w=25.0)
    assert large.total_w >= small.total_w - _tol(low_w + extra_w)
    assert large.qos_fraction >= small.qos_fraction - 1e-9
    assert large.feasible or not small.feasible


@settings(max_examples=100, deadline=None)
@given(nodes=demands(), budget_w=st.floats(1, 20000))
def test_node_order_plays_no_part_in_the_qos_split(nodes, budget_w):
    forward = allocate(nodes, budget_w)
    backward = allocate(list(reversed(nodes)), budget_w)
    assert forward.qos_fraction == pytest.approx(backward.qos_fraction, abs=1e-12)
    assert forward.feasible == backward.feasible


def test_a_frontier_that_starts_above_the_floor_does_not_push_the_total_over():
    # Found by the property above before the fix: with target 0 the need was the frontier's first
    # point (1,000 W), not the floor (100 W), and the QoS pass overspent.
    nodes = [NodeDemand("a", 100.0, 2000.0, 0.0, Frontier.from_points([(1000.0, 10.0), (2000.0, 20.0)])),
             NodeDemand("b", 100.0, 2000.0, 0.0, Frontier.from_points([(1000.0, 10.0), (2000.0, 20.0)]))]
    result = allocate(nodes, 500.0)
    assert result.total_w <= 500.0 + 1e-9
