"""The dynamic Oracle and its plan on constructed truth tables (no simulator: the tables are data)."""

from __future__ import annotations

import numpy as np
import pytest

from pals.control.budget import PowerBudget, ThroughputTarget
from pals.control.policies import Oracle, PlanOutcome, TruthTable
from pals.control.policies.oracle_plan import best_constant, best_two_segment, candidate_plans, lagrangian_plan
from pals.control.types import Configuration, DecisionContext, Observation
from pals.core.node import Constraints
from pals.core.power import NodePowerModel

CONSTRAINTS = Constraints(num_gpus=4, power_cap_min_w=100, power_cap_max_w=400, batch_cap_max=64, tp=4)


# -- the plan ----------------------------------------------------------------------------------------


def two_config_table(windows: int = 4):
    """Candidate 0: efficient (2 tok/J) but 3 violating intervals per window; candidate 1: 1 tok/J, none."""
    tokens = np.array([[200.0, 100.0]] * windows)
    energy = np.array([[100.0, 100.0]] * windows)
    violations = np.array([[3.0, 0.0]] * windows)
    return tokens, energy, violations, np.ones_like(tokens, dtype=bool)


def test_constant_plan_is_the_best_single_candidate_within_the_allowance():
    t, e, v, f = two_config_table()
    assert best_constant(t, e, v, f, 12.0).choice.tolist() == [0, 0, 0, 0]
    plan = best_constant(t, e, v, f, 11.0)
    assert plan.choice.tolist() == [1, 1, 1, 1] and plan.tokens_per_joule == pytest.approx(1.0)
    assert best_constant(t, e, v, ~f, 100.0) is None


def test_mixing_over_time_beats_every_single_candidate_at_the_same_violations():
    """With 6 violating intervals allowed, two windows on the efficient candidate are allowed: a mix
    no fixed configuration reaches (what makes the plan a bound on dynamic policies)."""
    t, e, v, f = two_config_table()
    constant = best_constant(t, e, v, f, 6.0)
    two = best_two_segment(t, e, v, f, 6.0)
    assert two.violations <= 6.0 and two.tokens_per_joule == pytest.approx(1.5) and not two.constant
    # Per window: where the efficient candidate violates least, it runs (windows 0 and 2 here).
    v[:, 0] = [1.0, 4.0, 1.0, 4.0]
    mixed = lagrangian_plan(t, e, v, f, 6.0)
    assert mixed.violations <= 6.0 and mixed.choice[0] == 0 and mixed.choice[2] == 0
    assert mixed.tokens_per_joule > constant.tokens_per_joule
    # Identical windows are one knapsack item each to the per-window relaxation, which cannot split
    # them; the two-segment search can (above), which is why both families are tried.
    plans = candidate_plans(t, e, v, f, 6.0)
    assert plans and all(p.violations <= 6.0 for p in plans)
    assert [p.tokens_per_joule for p in plans] == sorted((p.tokens_per_joule for p in plans), reverse=True)


def test_a_window_without_feasible_candidates_is_refused():
    t, e, v, f = two_config_table()
    f[2] = False
    with pytest.raises(ValueError, match="feasible"):
        lagrangian_plan(t, e, v, f, 6.0)


# -- the policy --------------------------------------------------------------------------------------


class TableTruth:
    """A `LoadTruth` from a table per (cap, batch): tokens, GPU energy and violations per window of 10 s."""

    caps_ = np.array([150.0, 400.0])
    batches_ = np.array([64])

    def __init__(self, per_config: dict, evaluate_violations: int | None = None, windows: int = 4):
        self.per_config = per_config
        self.windows = windows
        self.evaluate_violations = evaluate_violations
        self.evaluated: list = []

    def table(self, power_cap_w, batch_cap, target_tps, window_s):
        # Caps off the grid (the budget's bound) answer as the nearest grid cap.
        cols = [self.per_config[(float(self.caps_[np.argmin(np.abs(self.caps_ - c))]), int(b))]
                for c, b in zip(power_cap_w, batch_cap)]
        stack = lambda k: np.array([[col[k] for col in cols]] * self.windows)  # noqa: E731
        return TruthTable(window_start_s=np.arange(self.windows) * 10.0, window_s=np.full(self.windows, 10.0),
                          tokens=stack(0), gpu_energy_j=stack(1), violations=stack(2),
                          intervals=np.full(self.windows, 20), load_label="constructed")

    def evaluate(self, schedule, target_tps):
        self.evaluated.append(schedule)
        table = self.table(*zip(*[(c, b) for _, c, b in schedule]), target_tps, 10.0)
        tokens = float(table.tokens.mean(axis=1).sum())
        energy = float(table.gpu_energy_j.mean(axis=1).sum())
        violations = self.evaluate_violations if self.evaluate_violations is not None else int(table.violations.mean(axis=1).sum())
        return PlanOutcome(tokens, energy, violations, int(table.intervals.sum()))


# Per 10 s window: 150 W delivers 20,000 tokens on 4,000 J of GPU energy (7,650 J at the node: 2.6
# tok/J) but violates 3 of its 20 intervals; 400 W delivers the same on 8,000 J (1.7 tok/J), none.
TRUTH = {(150.0, 64): (20000.0, 4000.0, 3.0), (400.0, 64): (20000.0, 8000.0, 0.0)}


def context(obs_time_s=None, budget=None, changed=False, current=Configuration(400.0, 64)):
    obs = None
    if obs_time_s is not None:
        obs = Observation(time_s=obs_time_s, interval_s=0.5, throughput_tps=2000.0, prompt_tps=0.0, gpu_power_w=800.0,
                          node_power_w=NodePowerModel().node_w(800.0), node_power_reading_w=None, generated_tokens=1000.0,
                          gpu_energy_j=400.0, node_energy_j=0.0, requests_waiting=0, requests_running=10,
                          power_cap_w=current.power_cap_w, batch_cap=64)
    return DecisionContext(CONSTRAINTS, current, obs, budget, ThroughputTarget(1500.0), changed, 1)


def oracle(truth, allowance_pct):
    return Oracle(truth, (150.0, 400.0), (64,), max_qos_violation_pct=allowance_pct)


def test_oracle_holds_the_best_configuration_within_its_allowance():
    # 4 windows x 20 intervals: 3 % allows 2.4 intervals, under one window of 150 W.
    truth = TableTruth(TRUTH)
    policy = oracle(truth, 3.0)
    assert policy.decide(context()).config == Configuration(400.0, 64)
    # 20 % allows every window at 150 W: the efficient configuration throughout.
    assert oracle(TableTruth(TRUTH), 20.0).decide(context()).config == Configuration(150.0, 64)


def test_oracle_mixes_configurations_when_a_run_confirms_the_plan():
    truth = TableTruth(TRUTH)
    policy = oracle(truth, 8.0)  # 6.4 intervals: two windows of 150 W
    configs = [policy.decide(context(obs_time_s=t, current=Configuration(400.0, 64))).config.power_cap_w
               for t in (None, 10.0, 20.0, 30.0)]
    assert sorted(configs) == [150.0, 150.0, 400.0, 400.0] and truth.evaluated


def test_oracle_drops_a_plan_that_violates_more_once_run():
    """The per-window truth ignores queues carried over a switch; a plan that, run, breaks the allowance is dropped."""
    truth = TableTruth(TRUTH, evaluate_violations=50)
    policy = oracle(truth, 8.0)
    decisions = [policy.decide(context(obs_time_s=t)).config for t in (None, 10.0, 20.0, 30.0)]
    assert truth.evaluated and set(decisions) == {Configuration(400.0, 64)}


def test_oracle_under_a_budget_keeps_under_the_bound_and_the_budget():
    policy = oracle(TableTruth(TRUTH), 20.0)
    budget = PowerBudget(900.0, "node")  # below what 400 W x 4 GPUs may draw
    d = policy.decide(context(budget=budget, changed=True))
    assert d.config.power_cap_w <= 150.0 + 1e-6
