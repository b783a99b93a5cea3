"""The pure selection step on constructed arrays: no predictor, no policy state."""

from __future__ import annotations

import numpy as np
import pytest

from pals.control.budget import PowerBudget
from pals.control.policies.selection import (
    BudgetLimit, Candidates, Scores, candidate_grid, required_capacity_tps, score_candidates, select,
)
from pals.control.types import Configuration
from pals.core.node import Constraints
from pals.core.power import NodePowerModel

CONSTRAINTS = Constraints(num_gpus=4, power_cap_min_w=100, power_cap_max_w=400, batch_cap_max=64, tp=4)
ALPHA = 1.05


def candidates(*configs: tuple[float, int]) -> Candidates:
    caps = np.array([c for c, _ in configs], dtype=float)
    batches = np.array([b for _, b in configs], dtype=int)
    return Candidates(tuple(Configuration(c, b) for c, b in configs), caps, batches, np.ones(len(configs), bool))


def scores(capacity, gpu_w, node_w=None) -> Scores:
    capacity = np.asarray(capacity, float)
    gpu_w = np.asarray(gpu_w, float)
    node_w = ALPHA * gpu_w + 345.0 if node_w is None else np.asarray(node_w, float)
    return score_candidates(capacity, gpu_w, node_w, None, 0.0, ALPHA)


def choose(cands, sc, budget=None, target=None, required=None, current=Configuration(400.0, 64), tie=0.01):
    return select(cands, sc, budget=budget, target_tps=target, required_tps=required, current=current,
                  tie_tolerance=tie, error_threshold=0.05)


# -- candidates --------------------------------------------------------------------------------


def test_grid_clamps_caps_and_adds_the_budget_bound_between_grid_caps():
    grid = candidate_grid((50.0, 200.0, 400.0, 500.0), (1, 64, 128), CONSTRAINTS, Configuration(400.0, 64), 275.0)
    caps = sorted(set(grid.power_cap_w.tolist()))
    assert caps == [100.0, 200.0, 275.0, 400.0]  # 50 and 500 clamped to the GPU's range, the bound added
    assert sorted(set(grid.batch_cap.tolist())) == [1, 64]  # 128 clamped to the engine's maximum
    assert len(grid.configs) == 4 * 2
    assert not grid.in_grid[grid.power_cap_w == 275.0].any() and grid.in_grid[grid.power_cap_w != 275.0].all()
    assert grid.configs[0] == Configuration(100.0, 1) and grid.configs[1] == Configuration(100.0, 64)  # cap-major


def test_grid_without_settable_caps_holds_the_cap_in_force():
    locked = Constraints(num_gpus=4, power_cap_min_w=100, power_cap_max_w=400, batch_cap_max=64, power_cap_settable=False)
    grid = candidate_grid((200.0, 400.0), (8, 64), locked, Configuration(330.0, 64), 250.0)
    assert set(grid.power_cap_w.tolist()) == {330.0} and grid.in_grid.all()


# -- scores ------------------------------------------------------------------------------------


def test_saturated_scores_are_capacity_per_busy_power():
    sc = scores([100.0, 300.0], [400.0, 1000.0])
    assert sc.delivered_tps.tolist() == [100.0, 300.0]
    # The default objective: tokens per node joule (node power = 1.05 x GPU + 345 W here).
    assert sc.tokens_per_joule == pytest.approx([100.0 / (ALPHA * 400.0 + 345.0), 300.0 / (ALPHA * 1000.0 + 345.0)])
    assert sc.delivered_node_power_w.tolist() == sc.node_power_w.tolist()
    gpu = score_candidates(np.array([100.0, 300.0]), np.array([400.0, 1000.0]), ALPHA * np.array([400.0, 1000.0]) + 345.0,
                           None, 0.0, ALPHA, objective="gpu")
    assert gpu.tokens_per_joule == pytest.approx([0.25, 0.3])


def test_the_objective_decides_the_choice_and_the_node_line_counts():
    """A slow, frugal candidate wins on GPU joules; the node's fixed power makes the fast one win on node joules."""
    capacity, gpu_w = np.array([100.0, 300.0]), np.array([300.0, 1000.0])
    node_w = ALPHA * gpu_w + 345.0
    by_gpu = score_candidates(capacity, gpu_w, node_w, None, 0.0, ALPHA, objective="gpu")
    by_node = score_candidates(capacity, gpu_w, node_w, None, 0.0, ALPHA, objective="node")
    assert np.argmax(by_gpu.tokens_per_joule) == 0 and np.argmax(by_node.tokens_per_joule) == 1
    # With the loop's own node-power line the score counts that line, not the predictor's node power.
    line = NodePowerModel(1.0, 2000.0)
    counted = score_candidates(capacity, gpu_w, node_w, None, 0.0, ALPHA, objective="node", node_line=line)
    assert counted.tokens_per_joule == pytest.approx(capacity / (gpu_w + 2000.0))
    with pytest.raises(ValueError):
        score_candidates(capacity, gpu_w, node_w, None, 0.0, ALPHA, objective="joules")


def test_load_aware_scores_deliver_the_demand_at_interpolated_power():
    capacity, gpu_w = np.array([100.0, 400.0]), np.array([500.0, 1200.0])
    sc = score_candidates(capacity, gpu_w, ALPHA * gpu_w + 345.0, 200.0, 240.0, ALPHA)
    assert sc.delivered_tps.tolist() == [100.0, 200.0]
    # The slow one runs flat out; the fast one half the time busy, half idle.
    assert sc.delivered_gpu_power_w == pytest.approx([500.0, 0.5 * 1200.0 + 0.5 * 240.0])
    assert sc.delivered_node_power_w[1] == pytest.approx(ALPHA * 1200.0 + 345.0 + ALPHA * (720.0 - 1200.0))
    # Never more power from less load: an idle estimate above the busy draw counts as the busy draw.
    low = score_candidates(np.array([400.0]), np.array([200.0]), np.array([555.0]), 100.0, 240.0, ALPHA)
    assert low.delivered_gpu_power_w[0] == pytest.approx(200.0)


# -- required capacity -------------------------------------------------------------------------


def test_required_capacity():
    kw = dict(target_margin=0.1, pid_margin=0.05, burst_margin=0.3, demand_target_multiple=2.0)
    assert required_capacity_tps(None, demand_tps=None, demand_seen=False, **kw) is None
    # No demand estimate yet: the target gets the burst headroom.
    assert required_capacity_tps(1000.0, demand_tps=None, demand_seen=False, **kw) == pytest.approx(1000 * 1.15 * 1.3)
    # Saturated (seen, unknown): the target with its margins only.
    assert required_capacity_tps(1000.0, demand_tps=None, demand_seen=True, **kw) == pytest.approx(1150.0)
    # A demand above the target, with its burst headroom and the PID's margin (the target margin
    # is not stacked on the burst headroom: both stand for the same swing); counted up to twice the target.
    assert required_capacity_tps(1000.0, demand_tps=1200.0, demand_seen=True, **kw) == pytest.approx(1200 * 1.35)
    assert required_capacity_tps(1000.0, demand_tps=9e9, demand_seen=True, **kw) == pytest.approx(2000 * 1.35)
    # A demand just above the target whose headroom asks less than the target's margins: the target's.
    assert required_capacity_tps(1000.0, demand_tps=800.0, demand_seen=True, **kw) == pytest.approx(1150.0)


# -- the choice --------------------------------------------------------------------------------

GRID = candidates((200.0, 8), (200.0, 64), (400.0, 8), (400.0, 64))
#                  capacity tps, busy GPU W (tokens/J: 0.5, 1.0, 0.4, 0.75)
SCORES = scores([300.0, 800.0, 400.0, 1200.0], [600.0, 800.0, 1000.0, 1600.0])


def test_no_target_takes_the_highest_tokens_per_joule():
    choice = choose(GRID, SCORES)
    assert choice.index == 1 and "no target" in choice.reason
    assert choice.considered == 4 and choice.feasible == 4 and choice.meeting_target is None
    assert not choice.budget_bound and choice.warnings == ()


def test_target_takes_the_most_efficient_candidate_that_reaches_it():
    choice = choose(GRID, SCORES, target=900.0, required=1000.0)
    assert choice.index == 3 and "meeting the target" in choice.reason and choice.meeting_target == 1


def test_unreachable_target_takes_the_highest_capacity_and_warns():
    choice = choose(GRID, SCORES, target=2000.0, required=2200.0)
    assert choice.index == 3 and "highest predicted throughput" in choice.reason
    assert any("above the node's predicted maximum" in w for w in choice.warnings)


def test_the_configuration_in_force_wins_a_tie():
    sc = scores([300.0, 800.0, 400.0, 1195.0], [600.0, 800.0, 1000.0, 1000.0])  # 1.0 vs 1.195
    assert choose(GRID, sc).index == 3
    near = scores([300.0, 800.0, 400.0, 795.0], [600.0, 800.0, 1000.0, 800.0])  # 1.0 vs 0.994
    assert choose(GRID, near, current=Configuration(400.0, 64)).index == 3
    assert choose(GRID, near, current=Configuration(200.0, 8)).index == 1


def limit(budget_w, bound_w, kind="gpu", bias_w=0.0):
    return BudgetLimit(PowerBudget(budget_w, kind), bound_w, CONSTRAINTS.power_cap_min_w, 0.005, bias_w)


def test_budget_excludes_what_draws_too_much_and_flags_a_binding_budget():
    choice = choose(GRID, SCORES, budget=limit(900.0, 225.0), target=900.0, required=1000.0)
    # Only the 200 W caps are allowed; none reaches the target: the highest capacity under the budget.
    assert choice.index == 1 and choice.feasible == 2 and choice.budget_bound
    assert any("keeps throughput below the target" in w for w in choice.warnings)
    # The learnt bias counts: 800 W + 150 W no longer fits 900 W.
    assert choose(GRID, SCORES, budget=limit(900.0, 225.0, bias_w=150.0)).index == 0


def test_a_candidate_at_the_cap_bound_is_feasible_whatever_its_prediction():
    cands = candidates((200.0, 64), (250.0, 64))
    sc = scores([800.0, 900.0], [800.0, 1000.0])  # 1000 W predicted at 250 W > the 950 W budget
    assert choose(cands, sc, budget=limit(950.0, 250.0), target=800.0, required=850.0).index == 1
    assert choose(cands, sc, budget=limit(950.0, 260.0), target=800.0, required=850.0).index == 0  # not at the bound


def test_nothing_fits_takes_the_lowest_power_and_warns():
    choice = choose(GRID, SCORES, budget=limit(300.0, 150.0))  # no grid cap under the bound
    assert choice.index == 0 and choice.reason.startswith("nothing fits")
    assert any("below the predicted power of every configuration" in w for w in choice.warnings)
    # A bound under the GPU's minimum cap says so instead.
    below = choose(GRID, SCORES, budget=limit(300.0, 50.0))
    assert len(below.warnings) == 1 and "below what any configuration draws" in below.warnings[0]


def test_without_settable_caps_the_batch_holds_the_budget_else_the_smallest_batch():
    cands = candidates((300.0, 8), (300.0, 16), (300.0, 64))
    sc = scores([300.0, 500.0, 900.0], [500.0, 700.0, 1100.0])
    assert choose(cands, sc, budget=limit(800.0, None)).index == 1
    choice = choose(cands, sc, budget=limit(100.0, None))
    assert choice.index == 0 and choice.feasible == 1 and not choice.budget_bound
