"""The dynamic Oracle: the best plan by the simulator's ground truth of the load being served (simulated
node only). An upper bound, not a better-informed PALS.

What makes it a bound rather than PALS with a perfect model:

- Its model (`LoadTruth`, built by the runtime: `pals.runtime.delivered.DeliveredTruth`) is each
  configuration held over the run's own request stream, read as the loop reads a run: per window
  of `plan_window_s`, the tokens it delivers, the energy it draws and the intervals in which it
  would violate the throughput target (the summaries' own test). It knows the future of the stream.
- It uses none of PALS's margins: no target margin, no burst headroom, no PID, no hysteresis, no
  demand estimate.
- It plans the whole run at once (`oracle_plan.plan_windows`): one configuration per window, the
  best objective (the one the headline reports: tokens per node joule through the loop's
  node-power line, or per GPU joule) with at most `max_qos_violation_pct` of the intervals
  violating the target over the run. Mixing configurations over time reaches trade-offs no single
  configuration reaches, as a dynamic policy can; and the plan is never worse, by the truth, than
  the best single configuration (the hindsight static optimum: `pals.runtime.hindsight`).
- A plan that changes configuration is run on the stream before it is trusted
  (`LoadTruth.evaluate`; planned at the start without a budget): switching carries queues over,
  which the per-window truth does not see. Up to `ORACLE_PLAN_CHECKS` varying plans are run (the
  best by the truth first: `oracle_plan.candidate_plans`); the best that, run, stays within the
  QoS allowance and beats the best constant plan by `ORACLE_MIN_GAIN` is kept, else the constant
  plan stands. Plans made mid-run or under a budget are not run first; they are the constant plan
  or, when better by `ORACLE_MIN_GAIN`, one switch (`oracle_plan.best_two_segment`).
- It re-plans when the budget or the target changes, or when the budget guard's cap bound moved.

Budgets bind it as they bind every policy: the same guard (`BudgetGuard`); candidates at or under
its cap bound (plus the bound itself) whose true mean power in a window fits the budget; the
planned cap is clamped to the bound as it moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from pals.control.policies.budget_guard import BudgetGuard, clamp_cap
from pals.control.policies.config import DEFAULT_OBJECTIVE, OBJECTIVES
from pals.control.policies.oracle_plan import (
    Plan, best_constant, best_two_segment, candidate_plans, lagrangian_plan,
)
from pals.control.policies.selection import Candidates, candidate_grid
from pals.control.types import Configuration, Decision, DecisionContext
from pals.errors import ConfigError

ORACLE_MAX_QOS_VIOLATION_PCT = 1.0
"""Share of intervals the Oracle lets a configuration violate the target (by the truth's count)
unless told otherwise. Experiments pass the threshold their hindsight optimum is held to. Units: %."""


ORACLE_PLAN_WINDOW_S = 10.0
"""Span of each window the Oracle plans one configuration for (two QoS windows). Units: s."""
ORACLE_PLAN_CHECKS = 12
"""How many varying plans the Oracle runs on the stream (each one run of the span) before it settles."""
ORACLE_MIN_GAIN = 0.005
"""A varying plan must beat the best constant one by this fraction, once run (switching has costs)."""
ORACLE_REPLAN_STEP_W = 5.0
"""The Oracle re-plans when the budget's cap bound moved this far since the plan. Units: W per GPU."""


@dataclass(frozen=True)
class TruthTable:
    """Ground truth of candidates held over the run's stream, per window (arrays [window, candidate])."""

    window_start_s: np.ndarray
    """Node time each window starts at. Units: s."""
    window_s: np.ndarray
    """Length of each window (the last may be shorter). Units: s."""
    tokens: np.ndarray
    """Output tokens each candidate delivers in each window."""
    gpu_energy_j: np.ndarray
    """GPU energy each candidate draws in each window (all GPUs). Units: J."""
    violations: np.ndarray
    """Intervals of each window in which the candidate violates the target (0 without a target)."""
    intervals: np.ndarray
    """Control intervals per window."""
    load_label: str
    """The load the truth replays, in words (logged)."""


@dataclass(frozen=True)
class PlanOutcome:
    """A schedule of configurations run on the stream (`LoadTruth.evaluate`): its totals over the controlled span."""

    tokens: float
    gpu_energy_j: float
    """Units: J."""
    violations: int
    """QoS-violating intervals."""
    intervals: int


class LoadTruth(Protocol):
    """The ground truth of the delivered load, as the runtime provides it (simulator only)."""

    caps_: np.ndarray
    """Its grid of caps per GPU (the Oracle's candidates unless given). Units: W."""
    batches_: np.ndarray
    """Its grid of batch caps."""

    def table(self, power_cap_w: np.ndarray, batch_cap: np.ndarray, target_tps: float | None,
              window_s: float) -> TruthTable: ...

    def evaluate(self, schedule: Sequence[tuple[float, float, int]], target_tps: float | None) -> PlanOutcome: ...


class Oracle:
    """The best plan by the truth of the load being served (see the module docstring).

    Args:
        truth: the ground truth of the delivered load (`LoadTruth`).
        power_caps_w, batch_caps: the candidate grid (that of PALS, for a fair bound).
        objective: "node" (tokens per node joule) or "gpu".
        max_qos_violation_pct: the plan may have at most this share of its intervals violating the
            target (by the truth). Units: %.
        plan_window_s: one configuration per window this long. Units: s.
    """

    name = "oracle"

    def __init__(self, truth: LoadTruth, power_caps_w: Sequence[float], batch_caps: Sequence[int],
                 objective: str = DEFAULT_OBJECTIVE, max_qos_violation_pct: float = ORACLE_MAX_QOS_VIOLATION_PCT,
                 plan_window_s: float = ORACLE_PLAN_WINDOW_S) -> None:
        if not hasattr(truth, "table"):
            raise ConfigError("the Oracle needs the ground truth of the delivered load (pals.runtime.delivered."
                              "DeliveredTruth), which exists only on the simulated node")
        if not power_caps_w or not batch_caps:
            raise ConfigError("policy oracle: the candidate cap and batch grids must not be empty")
        if objective not in OBJECTIVES:
            raise ConfigError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
        if not max_qos_violation_pct >= 0:
            raise ConfigError(f"oracle: max_qos_violation_pct must be >= 0, got {max_qos_violation_pct!r}")
        if not plan_window_s > 0:
            raise ConfigError(f"oracle: plan_window_s must be > 0, got {plan_window_s!r}")
        self.truth = truth
        self.power_caps_w = tuple(sorted(float(c) for c in power_caps_w))
        self.batch_caps = tuple(sorted(int(b) for b in batch_caps))
        self.objective = objective
        self.max_qos_violation_pct = float(max_qos_violation_pct)
        self.plan_window_s = float(plan_window_s)
        self.guard = BudgetGuard()
        self.reset()

    def reset(self) -> None:
        self.guard.reset()
        self.time_s_: float | None = None
        """Node time of the last observation (None before the first)."""
        self.plan_: Plan | None = None
        self.plan_from_ = 0
        """Index of the first window the plan covers."""
        self.plan_bound_w_: float | None = None
        self.candidates_: Candidates | None = None
        self.table_: TruthTable | None = None
        self.feasible_: np.ndarray | None = None

    def _window(self) -> int:
        """The window the next interval falls in."""
        if self.table_ is None or self.time_s_ is None:
            return 0
        index = int(np.searchsorted(self.table_.window_start_s, self.time_s_ + 1e-9, side="right")) - 1
        return min(max(index, 0), len(self.table_.window_s) - 1)

    def decide(self, ctx: DecisionContext) -> Decision:
        self.guard.update(ctx)
        if ctx.observation is not None:
            self.time_s_ = ctx.observation.time_s
        c = ctx.constraints
        bound = self.guard.cap_bound_w(ctx) if c.power_cap_settable else None
        moved = (bound is not None and (self.plan_bound_w_ is None or abs(bound - self.plan_bound_w_) > ORACLE_REPLAN_STEP_W))
        replanned = self.plan_ is None or ctx.constraints_changed or moved
        if replanned:
            self._plan(ctx, bound)
        window = self._window()
        index = int(self.plan_.choice[window - self.plan_from_]) if window >= self.plan_from_ else int(self.plan_.choice[0])
        planned = self.candidates_.configs[index]
        config = planned
        if c.power_cap_settable:
            config = Configuration(clamp_cap(planned.power_cap_w, bound, c), planned.batch_cap)
        else:
            config = Configuration(ctx.current.power_cap_w, planned.batch_cap)
        return self._decision(ctx, config, planned, index, window, bound, replanned)

    def _plan(self, ctx: DecisionContext, bound: float | None) -> None:
        """Plan the windows from the current one to the end of the run."""
        c = ctx.constraints
        candidates = candidate_grid(self.power_caps_w, self.batch_caps, c, ctx.current, bound)
        target_tps = None if ctx.target is None else ctx.target.target_tps
        table = self.truth.table(candidates.power_cap_w, candidates.batch_cap, target_tps, self.plan_window_s)
        self.table_, self.candidates_, self.plan_bound_w_ = table, candidates, bound
        start = self._window()
        gpu_j = table.gpu_energy_j[start:]
        duration_s = table.window_s[start:, None]
        model = ctx.power_model
        node_j = model.alpha * gpu_j + model.beta_w * duration_s
        feasible = self._feasible(ctx, candidates, gpu_j / duration_s, node_j / duration_s, bound)
        energy = node_j if self.objective == "node" else gpu_j
        allowed = self.max_qos_violation_pct / 100.0 * float(table.intervals[start:].sum())
        self.plan_from_ = start
        self.feasible_ = feasible
        arrays = (table.tokens[start:], energy, table.violations[start:], feasible)
        constant = best_constant(*arrays, allowed)
        if constant is None:
            # Nothing held throughout meets the allowance: the fewest violations any constant plan
            # has becomes the allowance (then the objective decides), varying plans included.
            allowed = float(np.min(np.where(feasible.all(axis=0), arrays[2].sum(axis=0), np.inf)))
            constant = best_constant(*arrays, allowed) if np.isfinite(allowed) else None
        if constant is None:  # no candidate is feasible in every window: per window, unchecked
            self.plan_ = lagrangian_plan(*arrays, float(arrays[2].sum()))
        elif start == 0 and ctx.budget is None:
            self.plan_ = self._checked(ctx, constant, arrays, allowed, target_tps)
        else:  # re-planned mid-run or under a budget: no check run; the fewest switches
            two = best_two_segment(*arrays, allowed)
            better = two is not None and two.tokens_per_joule > constant.tokens_per_joule * (1 + ORACLE_MIN_GAIN)
            self.plan_ = two if better else constant

    def _checked(self, ctx: DecisionContext, constant: Plan, arrays: tuple, allowed: float,
                 target_tps: float | None) -> Plan:
        """The best varying plan that, run on the stream (`LoadTruth.evaluate`), stays within the QoS
        allowance and beats the best constant plan by `ORACLE_MIN_GAIN`; else the constant plan.

        The per-window truth assumes each configuration was held all along; a switch carries the
        queue over, so a plan can violate more (or save less) than the table says. Without a budget
        the constant plan is exactly what the table says (the hindsight optimum).
        """
        floor = constant.tokens_per_joule * (1 + ORACLE_MIN_GAIN)
        best = constant
        tried = [p for p in candidate_plans(*arrays, allowed) if p.tokens_per_joule > floor][:ORACLE_PLAN_CHECKS]
        for plan in tried:
            outcome = self.truth.evaluate(self._schedule(plan), target_tps)
            energy = outcome.gpu_energy_j
            if self.objective == "node":
                energy = ctx.power_model.alpha * energy + ctx.power_model.beta_w * outcome.intervals * self._interval_s()
            realized = outcome.tokens / max(energy, 1e-12)
            if outcome.violations <= allowed + 1e-9 and realized > max(floor, best.tokens_per_joule):
                best = Plan(plan.choice, realized, float(outcome.violations), False)
        return best

    def _interval_s(self) -> float:
        table = self.table_
        return float(table.window_s[0] / table.intervals[0])

    def _schedule(self, plan: Plan) -> list[tuple[float, float, int]]:
        """The plan as (from node time, cap, batch) entries, one per change."""
        out: list[tuple[float, float, int]] = []
        for k, index in enumerate(plan.choice):
            config = self.candidates_.configs[int(index)]
            entry = (float(self.table_.window_start_s[self.plan_from_ + k]), float(config.power_cap_w), int(config.batch_cap))
            if not out or out[-1][1:] != entry[1:]:
                out.append(entry)
        return out

    def _feasible(self, ctx: DecisionContext, candidates: Candidates, gpu_w: np.ndarray, node_w: np.ndarray,
                  bound: float | None) -> np.ndarray:
        """[window, candidate]: under the cap bound and, by true mean power, under the budget (or at the bound)."""
        c = ctx.constraints
        feasible = np.ones(gpu_w.shape, dtype=bool)
        if ctx.budget is not None:
            power_w = gpu_w if ctx.budget.kind == "gpu" else node_w
            fits = power_w <= ctx.budget.budget_w * (1 - self.guard.margin_frac)
            if bound is not None:
                bound_w = max(bound, c.power_cap_min_w)
                under = candidates.power_cap_w <= bound_w + 1e-6
                at_bound = np.abs(candidates.power_cap_w - bound_w) <= 0.5
                fits = under[None, :] & (fits | at_bound[None, :])
            feasible = fits
        for row in np.flatnonzero(~feasible.any(axis=1)):  # nothing fits: the lowest true power
            feasible[row, int(np.argmin(gpu_w[row]))] = True
        return feasible

    def _decision(self, ctx: DecisionContext, config: Configuration, planned: Configuration, index: int, window: int,
                  bound: float | None, replanned: bool) -> Decision:
        table, plan = self.table_, self.plan_
        duration_s = float(table.window_s[window])
        thr = float(table.tokens[window, index]) / duration_s
        gpu_w = float(table.gpu_energy_j[window, index]) / duration_s
        node_w = ctx.power_model.node_w(gpu_w)
        bound_hit = bool(bound is not None and config.power_cap_w < planned.power_cap_w - 1e-6)
        kind = "one configuration" if plan.constant else "varying plan"
        return Decision(
            config=config,
            reason=(f"{'planned' if replanned else 'plan'}: {kind}, true tokens/J ({self.objective}) "
                    f"{plan.tokens_per_joule:.4g} with {plan.violations:.0f} violating intervals; {table.load_label}"),
            candidates_considered=len(self.candidates_.configs) if replanned else 0,
            candidates_feasible=int(self.feasible_[min(window - self.plan_from_, len(self.feasible_) - 1)].sum()),
            predicted_throughput_tps=thr,
            predicted_gpu_power_w=gpu_w,
            predicted_node_power_w=node_w,
            predicted_tokens_per_joule=thr / max(node_w, 1e-9),
            budget_bound=bound_hit,
            governor_trim=bool(bound_hit and config.batch_cap == ctx.current.batch_cap
                               and config.power_cap_w != ctx.current.power_cap_w),
            extra={"objective": self.objective, "plan_window": window, "plan_constant": plan.constant,
                   "true_window_violations": int(table.violations[window, index]),
                   "budget_cap_bound_w": None if bound is None else round(bound, 2)},
        )
