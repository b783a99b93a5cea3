"""The selection step as pure functions: candidates and predictions in, a choice and its reason out.

Nothing here keeps state; the policy (`model_guided.py`) feeds it what it has learnt. The rule
(paper section 3.3):

1. Candidates: the cap grid clamped to the GPU's range, plus the budget's cap bound when it falls
   between grid caps, times the batch grid (`candidate_grid`).
2. Scores: predicted capacity (already corrected by learnt ratios) and busy power per candidate;
   the objective is tokens per node joule (or per GPU joule: `ModelGuidedConfig.objective`) at
   the throughput each would DELIVER under the estimated demand (`score_candidates`, the
   load-aware objective in the package docstring).
3. Feasible: predicted busy power in the budget's kind, plus the learnt power bias, under the
   budget less the guard's `margin_frac` (busy power, not load-aware power: the budget is a hard
   limit and load can rise within an interval). A candidate at the budget's cap bound is feasible
   whatever its predicted draw: the cap itself holds power there. Without settable caps, only the
   batch can hold power: the batches that fit, else the smallest (`feasible_mask`).
   With a latency SLO and a latency model, a candidate is also infeasible when its predicted
   TPOT or TTFT at the SLO's quantile exceeds the objective x (1 - `slo_margin`) (`slo_mask`); once
   the latency residual learnt online is trusted, the predictions are corrected by it and the margin
   is `slo_margin_corrected`.
   When the budget leaves candidates but none meets the SLO, the one with the lowest predicted
   latency (relative to the objective) among those under the budget is chosen, warned.
4. Among feasible candidates whose capacity reaches the required throughput
   (`required_capacity_tps`), the highest tokens/J; if none, the highest capacity (best effort,
   warned when even the whole grid cannot reach the target); if nothing fits the budget, the
   lowest-power candidate, warned. A candidate within `tie_tolerance` of the best score loses to
   the configuration in force (no change for nothing) (`select`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from pals.control.budget import PowerBudget
from pals.control.policies.budget_guard import budget_warning, clamp_cap
from pals.control.slo import Slo
from pals.control.types import Configuration
from pals.core.node import Constraints
from pals.core.power import NodePowerModel

CAP_MATCH_W = 0.5
"""Two caps this close are the same cap (logged caps are rounded). Units: W per GPU."""
_CAP_EPS_W = 1e-6
"""Slack on cap-under-bound comparisons. Units: W."""


@dataclass(frozen=True)
class Candidates:
    """The configurations scored in one selection, flattened cap-major (every batch of a cap in turn)."""

    configs: tuple[Configuration, ...]
    power_cap_w: np.ndarray
    batch_cap: np.ndarray
    in_grid: np.ndarray
    """True for candidates of the unconstrained grid (not the cap added at the budget's bound)."""


@dataclass(frozen=True)
class Scores:
    """Predictions per candidate (arrays aligned with `Candidates.configs`)."""

    capacity_tps: np.ndarray
    """Predicted capacity, corrected by the learnt measured/predicted ratios."""
    gpu_power_w: np.ndarray
    """Predicted busy GPU power, node total. Units: W."""
    node_power_w: np.ndarray
    """Predicted busy node (wall) power. Units: W."""
    delivered_tps: np.ndarray
    """Throughput delivered under the estimated demand (the capacity when saturated)."""
    delivered_gpu_power_w: np.ndarray
    delivered_node_power_w: np.ndarray
    tokens_per_joule: np.ndarray
    """The objective: delivered throughput per delivered node power (or GPU power; `score_candidates`)."""


@dataclass(frozen=True)
class BudgetLimit:
    """The budget as the selection sees it."""

    budget: PowerBudget
    cap_bound_w: float | None
    """The guard's per-GPU cap bound (may be below the GPU's minimum); None when caps cannot be set."""
    power_cap_min_w: float
    margin_frac: float
    """Aim this far under the budget (the guard's margin). Units: fraction of the budget."""
    power_bias_w: float
    """Learnt measured-minus-predicted power, added to every candidate's prediction. Units: W."""

    def busy_power_w(self, scores: Scores) -> np.ndarray:
        """Predicted busy power in the budget's kind, plus the learnt bias."""
        power_w = scores.gpu_power_w if self.budget.kind == "gpu" else scores.node_power_w
        return power_w + self.power_bias_w


class LatencyModel(Protocol):
    """What the selection needs of a latency model (`pals.model.latency.LatencyPredictor`)."""

    def predict(self, power_cap_w: Any, batch_cap: Any, quantile: float = 0.99) -> Any:
        """An object with `tpot_s` and `ttft_s` arrays aligned with the query (NaN: not known)."""
        ...


@dataclass(frozen=True)
class SloLimit:
    """The latency SLO as the selection sees it: predicted latency per candidate against it."""

    slo: Slo
    tpot_s: np.ndarray
    """Predicted TPOT per candidate at the SLO's quantile (NaN: not known, counts as meeting). Units: s."""
    ttft_s: np.ndarray
    """Predicted TTFT per candidate at the SLO's quantile (NaN: not known, counts as meeting). Units: s."""
    margin_frac: float
    """Aim this far under the objective. Units: fraction."""

    def excess(self) -> np.ndarray:
        """Per candidate, the largest predicted latency / objective over the objectives set (0 without)."""
        ratios = [np.zeros(len(self.tpot_s))]
        for predicted, objective in ((self.tpot_s, self.slo.tpot_s), (self.ttft_s, self.slo.ttft_s)):
            if objective is not None:
                ratios.append(np.where(np.isfinite(predicted), predicted / objective, 0.0))
        return np.max(np.vstack(ratios), axis=0)


def slo_limit(model: LatencyModel | None, candidates: Candidates, slo: Slo | None, margin_frac: float,
              tpot_factors: np.ndarray | None = None, ttft_factors: np.ndarray | None = None,
              running_batch: np.ndarray | None = None) -> SloLimit | None:
    """The candidates' predicted latency against `slo` (None without an SLO or a latency model), each
    prediction times its learnt factor when given (`latency_residual.LatencyResidual`), at the batch
    each would run (`running_batch`; None: its batch cap, a full batch)."""
    if slo is None or model is None:
        return None
    batch = candidates.batch_cap if running_batch is None else running_batch
    pred = model.predict(candidates.power_cap_w, batch, slo.quantile)
    n = len(candidates.configs)
    tpot = np.broadcast_to(np.asarray(pred.tpot_s, dtype=float), (n,))
    ttft = np.broadcast_to(np.asarray(pred.ttft_s, dtype=float), (n,))
    if tpot_factors is not None:
        tpot = tpot * np.asarray(tpot_factors, dtype=float)
    if ttft_factors is not None:
        ttft = ttft * np.asarray(ttft_factors, dtype=float)
    return SloLimit(slo, tpot, ttft, margin_frac)


def slo_mask(candidates: Candidates, slo: SloLimit | None) -> np.ndarray:
    """Candidates predicted to meet the SLO with its margin (all of them without one)."""
    if slo is None:
        return np.ones(len(candidates.configs), dtype=bool)
    return slo.excess() <= 1.0 - slo.margin_frac


@dataclass(frozen=True)
class Choice:
    """The selection's answer."""

    index: int
    """Index of the chosen candidate."""
    reason: str
    warnings: tuple[str, ...]
    considered: int
    feasible: int
    """Candidates that fit under the budget."""
    meeting_target: int | None
    """Feasible candidates reaching the required capacity (None without a target)."""
    budget_bound: bool
    """True when the budget kept the choice from what the unconstrained grid would give."""
    meeting_slo: int | None = None
    """Candidates under the budget predicted to meet the latency SLO (None without an SLO)."""


def candidate_grid(power_caps_w: Sequence[float], batch_caps: Sequence[int], constraints: Constraints,
                   current: Configuration, bound_w: float | None) -> Candidates:
    """Grid caps clamped to the GPU's range (the cap in force alone when caps cannot be set), plus the
    cap at the budget's bound, times the batch grid clamped to the engine's range."""
    c = constraints
    grid_caps = [min(max(cap, c.power_cap_min_w), c.power_cap_max_w) for cap in power_caps_w]
    if not c.power_cap_settable:
        grid_caps = [current.power_cap_w]
        bound_w = None
    caps = sorted(set(grid_caps))
    if bound_w is not None:
        clamped = clamp_cap(max(grid_caps), bound_w, c)
        caps = sorted({min(cap, clamped) for cap in caps} | set(caps))
    batches = sorted({min(max(b, c.batch_cap_min), c.batch_cap_max) for b in batch_caps})
    cap_arr = np.repeat(np.asarray(caps, dtype=float), len(batches))
    batch_arr = np.tile(np.asarray(batches, dtype=int), len(caps))
    configs = tuple(Configuration(float(a), int(b)) for a, b in zip(cap_arr, batch_arr))
    in_grid = np.array([cap in grid_caps for cap in cap_arr])
    return Candidates(configs, cap_arr, batch_arr, in_grid)


def filled_batch(candidates: Candidates, capacity_tps: np.ndarray, demand_tps: float) -> np.ndarray:
    """Per candidate, the batch `demand_tps` fills at its cap: log-interpolated in capacity between the
    same cap's candidates, at most its own batch cap (a demand at or above its capacity fills it) and at least 1."""
    capacity_tps = np.asarray(capacity_tps, dtype=float)
    out = candidates.batch_cap.astype(float).copy()
    for cap in np.unique(candidates.power_cap_w):
        same = np.flatnonzero(candidates.power_cap_w == cap)
        same = same[np.argsort(candidates.batch_cap[same], kind="stable")]
        xs = np.log(np.maximum(np.maximum.accumulate(capacity_tps[same]), 1e-9))
        log_b = np.log(candidates.batch_cap[same].astype(float))
        for k, j in enumerate(same):
            if demand_tps >= capacity_tps[j]:
                continue
            if k == 0 or demand_tps <= capacity_tps[same[0]]:
                # Below the smallest batch's capacity: the batch scales with the demand.
                out[j] = max(1.0, candidates.batch_cap[same[0]] * demand_tps / max(capacity_tps[same[0]], 1e-9))
                continue
            out[j] = float(np.exp(np.interp(math.log(demand_tps), xs[:k + 1], log_b[:k + 1])))
    return np.minimum(out, candidates.batch_cap)


def partial_batch_power_w(candidates: Candidates, capacity_tps: np.ndarray, gpu_power_w: np.ndarray,
                          demand_tps: float, idle_gpu_power_w: float) -> np.ndarray:
    """Per candidate, the GPU power (node total) a continuously batching engine draws serving `demand_tps`.

    Below its capacity the engine does not idle between full batches: it keeps stepping with the
    batch the demand fills. So the power is the busy power of that batch at the candidate's cap,
    interpolated in capacity between the same cap's candidates with a batch cap up to the candidate's
    (never above the candidate's own busy power); only a demand below the smallest batch's capacity
    mixes in idle time, as the linear model does.
    """
    capacity_tps = np.asarray(capacity_tps, dtype=float)
    gpu_power_w = np.asarray(gpu_power_w, dtype=float)
    out = gpu_power_w.copy()
    for cap in np.unique(candidates.power_cap_w):
        same = np.flatnonzero(candidates.power_cap_w == cap)
        same = same[np.argsort(candidates.batch_cap[same], kind="stable")]
        xs = np.maximum.accumulate(capacity_tps[same])
        for k, j in enumerate(same):
            demand = min(demand_tps, capacity_tps[j])
            if demand <= xs[0]:
                u = demand / max(xs[0], 1e-9)
                power = u * gpu_power_w[same[0]] + (1.0 - u) * min(idle_gpu_power_w, gpu_power_w[same[0]])
            else:
                power = float(np.interp(demand, xs[:k + 1], gpu_power_w[same[:k + 1]]))
            out[j] = min(power, gpu_power_w[j])
    return out


def score_candidates(capacity_tps: np.ndarray, gpu_power_w: np.ndarray, node_power_w: np.ndarray,
                     demand_tps: float | None, idle_gpu_power_w: float, alpha: float, *,
                     objective: str = "node", node_line: NodePowerModel | None = None,
                     partial_gpu_power_w: np.ndarray | None = None, partial_weight: float = 0.0) -> Scores:
    """Delivered throughput and power of each candidate under `demand_tps` (None: saturated).

    With demand D a candidate delivers T = min(D, T_cap). What it draws below its capacity is
    `partial_gpu_power_w` when given (weight `partial_weight`; the policies pass
    `partial_batch_power_w` at weight 1): a continuously batching engine does not alternate between
    full batches and idling, it keeps stepping with the smaller batch the demand fills, and decode
    at a small batch still draws near the cap (memory-bound kernels at full clock). The rest of the
    weight goes to the linear mix u x P_busy + (1 - u) x P_idle at utilisation u = T / T_cap
    (`idle_gpu_power_w`, node total, never more than P_busy: load never lowers power), which counts
    a faster cap's spare capacity as idle time: it made high caps look as cheap as low ones at a
    partial load and kept PALS one cap step above the efficient one. Node power moves with GPU
    power by the node-power line's slope `alpha`.

    The score (`Scores.tokens_per_joule`) is T over delivered node power (`objective` "node") or
    delivered GPU power ("gpu"). With `node_line` (the loop's node-power line) the node power of
    the score is that line over the delivered GPU power: the power the run's summary counts, so
    the selection maximizes the figure the headline reports.
    """
    capacity_tps = np.asarray(capacity_tps, dtype=float)
    gpu_power_w = np.asarray(gpu_power_w, dtype=float)
    node_power_w = np.asarray(node_power_w, dtype=float)
    if demand_tps is None:
        thr, gpu_del = capacity_tps, gpu_power_w
    else:
        thr = np.minimum(demand_tps, capacity_tps)
        util = np.where(capacity_tps > 0, thr / np.maximum(capacity_tps, 1e-9), 1.0)
        gpu_del = util * gpu_power_w + (1.0 - util) * np.minimum(idle_gpu_power_w, gpu_power_w)
        if partial_gpu_power_w is not None and partial_weight > 0:
            gpu_del = partial_weight * np.asarray(partial_gpu_power_w, dtype=float) + (1.0 - partial_weight) * gpu_del
    node_del = node_power_w + alpha * (gpu_del - gpu_power_w)
    # Efficiency is scored at the power the configuration draws (prediction), not at its cap.
    if objective == "gpu":
        objective_w = gpu_del
    elif objective == "node":
        objective_w = node_del if node_line is None else node_line.alpha * gpu_del + node_line.beta_w
    else:
        raise ValueError(f"unknown objective {objective!r}")
    eff = thr / np.maximum(objective_w, 1e-9)
    return Scores(capacity_tps, gpu_power_w, node_power_w, thr, gpu_del, node_del, eff)


def required_capacity_tps(target_tps: float | None, *, target_margin: float, pid_margin: float,
                          demand_tps: float | None, demand_seen: bool, burst_margin: float,
                          demand_target_multiple: float) -> float | None:
    """The capacity a candidate must reach (None without a target).

    target x (1 + `target_margin` + PID output), and, with a demand estimate, at least the demand
    (counted up to `demand_target_multiple` x the target) with its burst headroom: a configuration
    run near full utilisation builds a queue at every arrival burst. The burst headroom is the
    measured swing of throughput over a QoS window, the same swing `target_margin` stands for
    before one is measured, so the two are not stacked on the demand (stacked, they asked 1.4x the
    demand and left the cap one grid step above the hindsight optimum). Before the first estimate
    the target itself gets the burst headroom (the load may be anything from a lull to saturation).
    """
    if target_tps is None:
        return None
    required = target_tps * (1.0 + target_margin + pid_margin)
    if demand_tps is None and not demand_seen:
        required *= 1.0 + burst_margin
    if demand_tps is not None:
        burst = min(demand_tps, target_tps * demand_target_multiple) * (1.0 + burst_margin + pid_margin)
        required = max(required, burst)
    return required


def feasible_mask(candidates: Candidates, scores: Scores, budget: BudgetLimit | None) -> np.ndarray:
    """Candidates that fit under the budget (all of them without one)."""
    n = len(candidates.configs)
    if budget is None:
        return np.ones(n, dtype=bool)
    fits = budget.busy_power_w(scores) <= budget.budget.budget_w * (1 - budget.margin_frac)
    if budget.cap_bound_w is None:
        # Without settable caps only the batch can hold power under the budget: keep the batches
        # whose predicted draw (plus the learned bias) fits, else the smallest batch.
        return fits if fits.any() else candidates.batch_cap == candidates.batch_cap.min()
    bound_w = max(budget.cap_bound_w, budget.power_cap_min_w)
    allowed = candidates.power_cap_w <= bound_w + _CAP_EPS_W
    # A candidate at the budget's cap bound is feasible whatever its predicted draw: the cap itself
    # holds power under the budget (the guard trims it on measured overshoot), and without it the
    # choice falls to the grid point below, leaving budget unused.
    at_bound = np.abs(candidates.power_cap_w - bound_w) <= CAP_MATCH_W
    return allowed & (fits | at_bound)


def argmax_keep(score: np.ndarray, mask: np.ndarray, configs: Sequence[Configuration], current: Configuration,
                tie_tolerance: float) -> int:
    """Argmax of `score` over `mask`, keeping the configuration in force when within `tie_tolerance` of the best."""
    masked = np.where(mask, score, -np.inf)
    best = int(np.argmax(masked))
    for i, cfg in enumerate(configs):
        if cfg == current and mask[i] and masked[i] >= masked[best] * (1 - tie_tolerance):
            return i
    return best


def _choose(mask: np.ndarray, candidates: Candidates, scores: Scores, required_tps: float | None,
            current: Configuration, tie_tolerance: float) -> tuple[int, str]:
    if not mask.any():
        return -1, ""
    configs = candidates.configs
    if required_tps is not None:
        ok = mask & (scores.capacity_tps >= required_tps)
        if ok.any():
            return argmax_keep(scores.tokens_per_joule, ok, configs, current, tie_tolerance), \
                "highest predicted tokens/J meeting the target"
        return argmax_keep(scores.capacity_tps, mask, configs, current, tie_tolerance), \
            "no candidate meets the target: highest predicted throughput"
    return argmax_keep(scores.tokens_per_joule, mask, configs, current, tie_tolerance), \
        "highest predicted tokens/J (no target)"


def _lowest_power(candidates: Candidates, scores: Scores, bound_w: float | None, power_cap_min_w: float) -> int:
    """The lowest predicted GPU power under the cap bound, else over every candidate."""
    cap_arr, gpu_w = candidates.power_cap_w, scores.gpu_power_w
    index = int(np.argmin(np.where(cap_arr <= (bound_w if bound_w is not None else np.inf) + _CAP_EPS_W, gpu_w, np.inf)))
    if not np.isfinite(gpu_w[index]) or bound_w is None or cap_arr[index] > max(bound_w, power_cap_min_w) + _CAP_EPS_W:
        index = int(np.argmin(gpu_w))
    return index


def _target_warnings(candidates: Candidates, scores: Scores, index: int, target_tps: float,
                     budget_bound: bool, error_threshold: float) -> list[str]:
    thr = scores.capacity_tps
    in_grid = candidates.in_grid
    best_possible = float(np.max(thr[in_grid])) if in_grid.any() else 0.0
    if best_possible < target_tps * (1 - error_threshold):
        return [f"throughput target {target_tps:g} tok/s is above the node's predicted maximum "
                f"{best_possible:.0f} tok/s; running best-effort at the highest throughput"]
    if budget_bound and thr[index] < target_tps:
        return [f"the power budget keeps throughput below the target: best under budget predicted "
                f"{thr[index]:.0f} of {target_tps:g} tok/s"]
    return []


def select(candidates: Candidates, scores: Scores, *, budget: BudgetLimit | None, target_tps: float | None,
           required_tps: float | None, current: Configuration, tie_tolerance: float,
           error_threshold: float, slo: SloLimit | None = None) -> Choice:
    """Choose one candidate (see the module docstring for the rule).

    Args:
        budget: the budget and the guard's cap bound (None without a budget).
        target_tps: the throughput target (None without one), for warnings.
        required_tps: the capacity a candidate must reach (`required_capacity_tps`).
        current: the configuration in force, kept on ties.
        tie_tolerance: a candidate must beat the configuration in force by this fraction.
        error_threshold: no unreachable-target warning for a shortfall under this fraction.
        slo: predicted latency against the SLO (`slo_limit`; None without an SLO or a latency model).
    """
    bound_w = None if budget is None else budget.cap_bound_w
    under_budget = feasible_mask(candidates, scores, budget)
    meets_slo = slo_mask(candidates, slo)
    feasible = under_budget & meets_slo
    warnings: list[str] = []
    if budget is not None:
        warnings += budget_warning(bound_w, budget.budget, budget.power_cap_min_w)
    index, why = _choose(feasible, candidates, scores, required_tps, current, tie_tolerance)
    if index < 0 and slo is not None and under_budget.any():
        index = int(np.argmin(np.where(under_budget, slo.excess(), np.inf)))
        why = "no candidate is predicted to meet the latency SLO: lowest predicted latency"
        warnings.append(f"latency SLO ({slo.slo.describe()}) is below the predicted latency of every configuration"
                        f"{'' if budget is None else ' under the budget'}; running best-effort at the lowest "
                        f"predicted latency ({slo.excess()[index]:.2f}x the objective)")
        feasible = under_budget
    if index < 0:
        index = _lowest_power(candidates, scores, bound_w, budget.power_cap_min_w)
        why = "nothing fits the budget: lowest predicted power"
        if not warnings:
            warnings.append(
                f"power budget {budget.budget.budget_w:g} W ({budget.budget.kind}) is below the predicted power of "
                "every configuration; running best-effort at the lowest predicted power"
            )
    grid_ok = candidates.in_grid & meets_slo
    unconstrained, _ = _choose(grid_ok if grid_ok.any() else candidates.in_grid, candidates, scores, required_tps,
                               current, tie_tolerance)
    budget_bound = (bound_w is not None and unconstrained >= 0
                    and candidates.configs[unconstrained] != candidates.configs[index])
    if required_tps is not None and target_tps is not None:
        warnings += _target_warnings(candidates, scores, index, target_tps, budget_bound, error_threshold)
    meeting = None if required_tps is None else int((feasible & (scores.capacity_tps >= required_tps)).sum())
    return Choice(index=index, reason=why, warnings=tuple(warnings), considered=len(candidates.configs),
                  feasible=int(feasible.sum()), meeting_target=meeting, budget_bound=bool(budget_bound),
                  meeting_slo=None if slo is None else int((under_budget & meets_slo).sum()))
