"""The dynamic Oracle's plan: one configuration per window of the run, the best objective under a QoS budget.

Pure functions over the truth table (`TruthTable`: per window and candidate, the tokens, energy and
QoS-violating intervals of that candidate held over the run's stream). The problem:

    choose c_w for every window w  to maximize  sum_w T[w, c_w] / sum_w E[w, c_w]
    subject to  sum_w V[w, c_w] <= V_max  and  c_w feasible in w (budget),

a ratio objective under one knapsack constraint. Three families of plans are searched:

- `best_constant`: one configuration throughout (the hindsight static optimum on the truth);
- `best_two_segment`: one configuration, then another from some window on (exhaustively: every
  pair and every switch point), as a controller that settles after its start would run;
- `lagrangian_plan`: any configuration per window, by Dinkelbach's method on the ratio (maximize
  sum T - q E, then q <- the plan's ratio, until q stops rising) with a Lagrange multiplier mu on
  the violations (per window, argmax T - q E - mu V; mu the smallest that keeps the total within
  V_max, found by bisection).

`candidate_plans` lists the varying ones worth trying, best first by the truth. The per-window
truth assumes each configuration was held all along, while a switch carries queues over: the
Oracle runs a varying plan before trusting it (`pals.control.policies.oracle`).

A policy that mixes configurations over time can reach trade-offs of efficiency against QoS that
no single configuration reaches (part of the run at an efficient setting that violates now and
then, part at a safe one); the plan can too, which is what makes it an upper bound on such policies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BUDGET_STEPS = 6
"""QoS budgets `candidate_plans` plans at, from the allowance down to zero."""
_BISECTION_STEPS = 60
_DINKELBACH_STEPS = 30


@dataclass(frozen=True)
class Plan:
    """The chosen candidate per window and what the truth says the plan achieves."""

    choice: np.ndarray
    """Candidate index per window."""
    tokens_per_joule: float
    """The plan's objective by the truth (tokens over energy in the objective's kind)."""
    violations: float
    """QoS-violating intervals the plan has by the truth."""
    constant: bool
    """True when the plan holds one configuration throughout (the best constant one)."""


def _totals(choice: np.ndarray, tokens: np.ndarray, energy: np.ndarray, violations: np.ndarray) -> tuple[float, float, float]:
    rows = np.arange(len(choice))
    return float(tokens[rows, choice].sum()), float(energy[rows, choice].sum()), float(violations[rows, choice].sum())


def best_constant(tokens: np.ndarray, energy: np.ndarray, violations: np.ndarray, feasible: np.ndarray,
                  max_violations: float) -> Plan | None:
    """The best single candidate feasible in every window and within `max_violations` (None: none is)."""
    ok = feasible.all(axis=0) & (violations.sum(axis=0) <= max_violations + 1e-9)
    if not ok.any():
        return None
    ratio = np.where(ok, tokens.sum(axis=0) / np.maximum(energy.sum(axis=0), 1e-12), -np.inf)
    best = int(np.argmax(ratio))
    choice = np.full(tokens.shape[0], best)
    return Plan(choice, float(ratio[best]), float(violations[:, best].sum()), True)


def _per_window(score: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    return np.argmax(np.where(feasible, score, -np.inf), axis=1)


def _lagrange(tokens, energy, violations, feasible, q: float, max_violations: float) -> np.ndarray:
    """Per-window argmax of T - qE - mu V with the smallest mu that keeps the plan within `max_violations`."""
    base = tokens - q * energy
    choice = _per_window(base, feasible)
    if _totals(choice, tokens, energy, violations)[2] <= max_violations + 1e-9:
        return choice
    lo, hi = 0.0, float(np.abs(base).max() + 1.0)
    best = _per_window(base - hi * violations, feasible)  # the fewest violations
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        trial = _per_window(base - mid * violations, feasible)
        if _totals(trial, tokens, energy, violations)[2] <= max_violations + 1e-9:
            hi, best = mid, trial
        else:
            lo = mid
    return best


def best_two_segment(tokens: np.ndarray, energy: np.ndarray, violations: np.ndarray, feasible: np.ndarray,
                     max_violations: float) -> Plan | None:
    """The best plan of one candidate up to some window and another after it, within `max_violations`."""
    n, c = tokens.shape
    if n < 2:
        return None
    cum = {name: np.vstack([np.zeros((1, c)), np.cumsum(a, axis=0)]) for name, a in
           (("t", tokens), ("e", energy), ("v", violations), ("bad", (~feasible).astype(float)))}
    split = np.arange(1, n)[:, None, None]  # windows [0, s) on A (axis 1), [s, n) on B (axis 2)

    def total(name: str) -> np.ndarray:
        a = cum[name]
        return a[split, np.arange(c)[None, :, None]] + (a[n][None, None, :] - a[split, np.arange(c)[None, None, :]])

    t, e, v, bad = total("t"), total("e"), total("v"), total("bad")
    ok = (bad < 0.5) & (v <= max_violations + 1e-9)
    if not ok.any():
        return None
    ratio = np.where(ok, t / np.maximum(e, 1e-12), -np.inf)
    s_index, a, b = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    choice = np.array([a] * (s_index + 1) + [b] * (n - s_index - 1))
    return Plan(choice, float(ratio[s_index, a, b]), float(v[s_index, a, b]), bool(a == b))


def candidate_plans(tokens: np.ndarray, energy: np.ndarray, violations: np.ndarray, feasible: np.ndarray,
                    max_violations: float) -> list[Plan]:
    """Distinct varying plans worth running, best first by the truth: two-segment and per-window plans
    at the QoS budget and at `BUDGET_STEPS` smaller budgets down to none (a plan run on the stream
    may violate more than planned, and by a few intervals: budgets are whole intervals)."""
    plans = []
    budgets = [max_violations] + sorted({float(math.floor(b)) for b in np.linspace(max_violations, 0.0, BUDGET_STEPS)
                                          if math.floor(b) < max_violations}, reverse=True)
    for budget in budgets:
        for plan in (best_two_segment(tokens, energy, violations, feasible, budget),
                     lagrangian_plan(tokens, energy, violations, feasible, budget)):
            if plan is not None and not plan.constant and all((plan.choice != p.choice).any() for p in plans):
                plans.append(plan)
    return sorted(plans, key=lambda p: -p.tokens_per_joule)


def lagrangian_plan(tokens: np.ndarray, energy: np.ndarray, violations: np.ndarray, feasible: np.ndarray,
                    max_violations: float) -> Plan:
    """The per-window plan (module docstring). Arrays are [window, candidate]; every window needs a feasible candidate.

    Args:
        tokens: output tokens of each candidate in each window.
        energy: energy in the objective's kind (node or GPU joules).
        violations: QoS-violating intervals.
        feasible: candidates allowed in each window (the budget).
        max_violations: the QoS budget: violating intervals allowed over all windows.
    """
    tokens, energy = np.asarray(tokens, float), np.asarray(energy, float)
    violations, feasible = np.asarray(violations, float), np.asarray(feasible, bool)
    if not feasible.any(axis=1).all():
        raise ValueError("every window needs at least one feasible candidate")
    constant = best_constant(tokens, energy, violations, feasible, max_violations)
    q = constant.tokens_per_joule if constant is not None else 0.0
    choice = None
    for _ in range(_DINKELBACH_STEPS):
        trial = _lagrange(tokens, energy, violations, feasible, q, max_violations)
        t, e, v = _totals(trial, tokens, energy, violations)
        ratio = t / max(e, 1e-12)
        if choice is not None and ratio <= q * (1 + 1e-12):
            break
        choice, q = trial, max(q, ratio) if v <= max_violations + 1e-9 else q
        if v > max_violations + 1e-9:
            break  # not even the fewest violations fit: keep that plan
    t, e, v = _totals(choice, tokens, energy, violations)
    return Plan(choice, t / max(e, 1e-12), v, bool((choice == choice[0]).all()))
