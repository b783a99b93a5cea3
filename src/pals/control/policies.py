"""Control policies behind one interface: the only thing that differs between runs.

A policy maps a `DecisionContext` (configuration in force, the interval just observed, budget,
target) to a `Decision`. Policies never see the node. All five obey the power budget the same way
at the last step (`BudgetGuard`): the per-GPU cap is clamped to the budget expressed as GPU power
per GPU, less a trim learned from measured overshoot, because a power cap is the one knob that
bounds power within one interval. They differ in how they choose below that bound:

- `Baseline`: maximum cap, maximum batch (the paper's 400 W / batch 64). Under a budget it runs at
  the budget-derived cap (cap-only enforcement) with the batch left at maximum.
- `AdaptiveBatch`: cap fixed (maximum, clamped by the budget), batch chosen with the predictor.
- `AdaptiveCap`: batch fixed (maximum), cap chosen with the predictor to meet the target.
- `PALS`: joint cap x batch, model-guided with PID correction and hysteresis (below).
- `Oracle`: the same selection on the simulator's ground truth (`TruthModel`), no correction
  needed; an upper bound that exists only for the simulated node.

The model-guided selection (paper section 3.3), one pass per interval:

1. e = (target - measured) / target. When nothing was waiting the node served all the load it
   was offered, so a shortfall is not an error (e = 0); over-delivery is (e < 0).
2. Enumerate candidates (cap grid clamped to the budget cap, batch grid); predict throughput and
   power for each. Predicted throughput is corrected by the measured / predicted ratio of
   configurations already visited under this workload (the last one's for the rest).
3. Feasible: predicted power (in the budget's kind) + a fed-back power bias <= budget.
4. Among feasible candidates predicted to reach target x (1 + m + u), m a fixed margin (10 %) for
   throughput noise and u the PID output, take the highest predicted tokens/J (GPU energy by default); if none, the highest predicted throughput (best effort, with a
   warning when even the whole grid cannot reach the target). If nothing fits the budget, the
   lowest-power candidate, with a warning.
5. Hysteresis: a new configuration only when |e| stays above `error_threshold` (5 %) for
   `hysteresis_intervals` consecutive intervals, or at once when the budget or target changed or
   measured power is over the budget. A candidate within 1 % of the best tokens/J loses to the
   configuration in force (no change for nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from pals.control.pid import PID
from pals.control.types import Configuration, Decision, DecisionContext, Observation
from pals.errors import ConfigError

#: The paper's runtime grid (Table 1).
PAPER_POWER_CAPS_W = (150.0, 200.0, 250.0, 300.0, 350.0, 400.0)
PAPER_BATCH_CAPS = (1, 4, 8, 16, 32, 64)

POLICY_NAMES = ("baseline", "adaptive-batch", "adaptive-cap", "pals", "oracle")


class PerfModel(Protocol):
    """What a model-guided policy needs: the predictor, or the simulator's ground truth.

    `predict_candidates(power_cap_w, batch_cap, workload)` takes two equal-length arrays and
    returns an object with arrays `throughput_tps`, `gpu_power_total_w`, `node_power_w` and
    `tokens_per_joule` (node-level), one entry per candidate.
    """

    def predict_candidates(self, power_cap_w: np.ndarray, batch_cap: np.ndarray, workload: Any = None) -> Any: ...


class Policy(Protocol):
    name: str

    def decide(self, ctx: DecisionContext) -> Decision: ...

    def reset(self) -> None: ...


# --------------------------------------------------------------------------------------------
# Budget enforcement shared by every policy


@dataclass
class BudgetGuard:
    """Turns a power budget into a per-GPU cap bound, corrected by measured overshoot.

    The bound is (budget as total GPU power - trim) / num_gpus. `trim_frac` (a fraction of the
    budget) grows by the measured overshoot whenever an interval ends over the budget, and decays
    slowly while power stays clearly under it, so the realised power converges under the budget
    even when GPUs overshoot their caps a little or the node-power model is off.
    """

    margin_frac: float = 0.005
    """Aim this far under the budget. Units: fraction of the budget."""
    decay_per_interval: float = 0.02
    trim_frac: float = 0.0

    def reset(self) -> None:
        self.trim_frac = 0.0

    def update(self, ctx: DecisionContext) -> float | None:
        """Learn from the interval just observed; return its overshoot as a fraction (or None)."""
        measured = ctx.measured_budget_power_w()
        if measured is None or ctx.budget is None:
            return None
        if ctx.constraints_changed:
            # The interval just measured ran under the previous budget: nothing to learn from it.
            return None
        over_frac = measured / ctx.budget.budget_w - 1.0
        if over_frac > 0:
            self.trim_frac = min(0.5, self.trim_frac + over_frac + self.margin_frac)
        elif over_frac < -0.02:
            self.trim_frac *= 1.0 - self.decay_per_interval
        return over_frac

    def cap_bound_w(self, ctx: DecisionContext) -> float | None:
        """Highest per-GPU cap the budget allows now (None without a budget); may be below the GPU's minimum."""
        gpu_total_w = ctx.budget_gpu_total_w()
        if gpu_total_w is None:
            return None
        trim_w = (self.trim_frac + self.margin_frac) * ctx.budget.budget_w
        if ctx.budget.kind == "node":
            trim_w /= ctx.power_model.alpha
        return (gpu_total_w - trim_w) / ctx.constraints.num_gpus


def _clamp_cap(cap_w: float, bound_w: float | None, ctx: DecisionContext) -> float:
    c = ctx.constraints
    if bound_w is not None:
        cap_w = min(cap_w, bound_w)
    return float(min(max(cap_w, c.power_cap_min_w), c.power_cap_max_w))


def _budget_warning(bound_w: float | None, ctx: DecisionContext) -> tuple[str, ...]:
    if bound_w is not None and bound_w < ctx.constraints.power_cap_min_w:
        return (
            f"power budget {ctx.budget.budget_w:g} W ({ctx.budget.kind}) is below what any configuration draws "
            f"(GPU caps at their minimum {ctx.constraints.power_cap_min_w:g} W); running best-effort at the lowest power",
        )
    return ()


# --------------------------------------------------------------------------------------------
# Baseline


class Baseline:
    """Maximum cap and maximum batch, as in the paper.

    Budget: cap-only enforcement. The cap is clamped to the budget expressed per GPU (node budgets
    through P_node = alpha * sum(P_gpu) + beta) minus the measured-overshoot trim; the batch stays
    at its maximum.
    """

    name = "baseline"

    def __init__(self, batch_cap: int | None = None) -> None:
        self.batch_cap = batch_cap
        self.guard = BudgetGuard()

    def reset(self) -> None:
        self.guard.reset()

    def decide(self, ctx: DecisionContext) -> Decision:
        self.guard.update(ctx)
        bound = self.guard.cap_bound_w(ctx)
        if not ctx.constraints.power_cap_settable:  # batch-only node: leave the cap alone
            return Decision(config=Configuration(ctx.current.power_cap_w, self.batch_cap or ctx.constraints.batch_cap_max),
                            reason="maximum batch (power caps not settable)")
        cap = _clamp_cap(ctx.constraints.power_cap_max_w, bound, ctx)
        batch = self.batch_cap or ctx.constraints.batch_cap_max
        bound_hit = cap < ctx.constraints.power_cap_max_w
        reason = "maximum cap and batch" if not bound_hit else f"maximum batch, cap clamped to {cap:.0f} W by the budget"
        return Decision(
            config=Configuration(cap, batch),
            reason=reason,
            budget_bound=bound_hit,
            warnings=_budget_warning(bound, ctx),
        )


# --------------------------------------------------------------------------------------------
# Model-guided policies


@dataclass
class _Memory:
    """Measured vs predicted throughput of visited configurations, under the current workload.

    Delivered throughput at a fixed configuration swings by 10-40 % over seconds (prefill bursts,
    long outputs finishing together), so a ratio learnt from one window is mostly noise. The memory
    therefore accumulates tokens over every capacity-limited interval spent at a configuration and
    shrinks the ratio towards the pooled ratio of all visited configurations (and that towards 1)
    with a prior worth `prior_s` seconds of data.
    """

    prior_s: float = 20.0
    clamp: tuple[float, float] = (0.7, 1.4)
    measured: dict[Configuration, float] = field(default_factory=dict)
    predicted: dict[Configuration, float] = field(default_factory=dict)
    seconds: dict[Configuration, float] = field(default_factory=dict)
    workload_key: tuple[float, float] | None = None

    def clear(self) -> None:
        self.measured.clear()
        self.predicted.clear()
        self.seconds.clear()

    def note_workload(self, obs: Observation, shift_frac: float = 0.25) -> bool:
        """Forget everything when the workload's mean lengths moved by more than `shift_frac`."""
        if obs.mean_prompt_tokens is None or obs.mean_output_tokens is None:
            return False
        key = (obs.mean_prompt_tokens, obs.mean_output_tokens)
        if self.workload_key is None:
            self.workload_key = key
            return False
        shifted = any(abs(a - b) > shift_frac * max(b, 1.0) for a, b in zip(key, self.workload_key))
        if shifted:
            self.clear()
            self.workload_key = key
        return shifted

    def record(self, config: Configuration, measured_tokens: float, predicted_tps: float, seconds: float) -> None:
        self.measured[config] = self.measured.get(config, 0.0) + measured_tokens
        self.predicted[config] = self.predicted.get(config, 0.0) + predicted_tps * seconds
        self.seconds[config] = self.seconds.get(config, 0.0) + seconds

    def pooled(self) -> float:
        total_s = sum(self.seconds.values())
        if total_s <= 0:
            return 1.0
        mean_pred_tps = sum(self.predicted.values()) / total_s
        prior = self.prior_s * mean_pred_tps
        ratio = (sum(self.measured.values()) + prior) / (sum(self.predicted.values()) + prior)
        return min(max(ratio, self.clamp[0]), self.clamp[1])

    def factor(self, config: Configuration, pooled: float | None = None) -> float:
        pooled = self.pooled() if pooled is None else pooled
        seconds = self.seconds.get(config, 0.0)
        if seconds <= 0:
            return pooled
        pred_tps = self.predicted[config] / seconds
        prior = self.prior_s * pred_tps
        ratio = (self.measured[config] + pooled * prior) / (self.predicted[config] + prior)
        return min(max(ratio, self.clamp[0]), self.clamp[1])


class ModelGuidedPolicy:
    """Choose (cap, batch) from discrete candidates scored by a `PerfModel` (see module docstring).

    Args:
        name: the policy's name in logs and summaries.
        model: predictor (or ground truth for the Oracle).
        power_caps_w: candidate caps per GPU (a single value fixes the cap). Units: W.
        batch_caps: candidate batch caps (a single value fixes the batch).
        pid: throughput-error PID whose output is the fractional margin asked of the prediction;
            None for no feedback correction.
        hysteresis_intervals: consecutive intervals |e| must stay above `error_threshold` before a
            change.
        smooth_intervals, min_window_intervals: e is measured over the intervals spent at the
            configuration in force (at most `smooth_intervals`, at least `min_window_intervals`
            before it counts); the interval right after a change is skipped.
        always_decide: re-run the selection every interval (the Oracle, whose scores are exact).
        tie_tolerance: a candidate must beat the configuration in force by this fraction.
        On a node whose power caps cannot be set (`Constraints.power_cap_settable` False), only
        the batch is chosen.
        learn_ratios: correct predicted throughput by measured / predicted ratios of visited configurations.
        workload_fn: maps the last observation to the `workload` argument of `predict_candidates`.
        efficiency: the objective: 'gpu' (tokens per joule of GPU energy, the power the predictor
            models and NVML measures; the paper's T(c)/P(c)) or 'node' (of wall energy, which adds
            the node's static ~345 W and so favours faster configurations).
        target_margin: ask the prediction for this fraction more than the target. Delivered
            throughput swings by ~10 % over 5 s windows at a fixed configuration, so a candidate
            predicted at exactly the target misses it about a third of the time.
    """

    def __init__(
        self,
        name: str,
        model: PerfModel,
        power_caps_w: tuple[float, ...] | list[float],
        batch_caps: tuple[int, ...] | list[int],
        pid: PID | None = None,
        hysteresis_intervals: int = 4,
        error_threshold: float = 0.05,
        learn_ratios: bool = True,
        workload_fn: Callable[[Observation | None], Any] | None = None,
        efficiency: str = "gpu",
        tie_tolerance: float = 0.01,
        target_margin: float = 0.10,
        always_decide: bool = False,
        smooth_intervals: int = 40,
        min_window_intervals: int = 8,
    ) -> None:
        if not power_caps_w or not batch_caps:
            raise ConfigError(f"policy {name}: the candidate cap and batch grids must not be empty")
        if efficiency not in ("node", "gpu"):
            raise ConfigError(f"efficiency must be 'node' or 'gpu', got {efficiency!r}")
        if hysteresis_intervals < 1:
            raise ConfigError(f"hysteresis_intervals must be at least 1, got {hysteresis_intervals}")
        self.name = name
        self.model = model
        self.power_caps_w = tuple(sorted(float(c) for c in power_caps_w))
        self.batch_caps = tuple(sorted(int(b) for b in batch_caps))
        self.pid = pid
        self.hysteresis_intervals = hysteresis_intervals
        self.error_threshold = error_threshold
        self.learn_ratios = learn_ratios
        self.workload_fn = workload_fn
        self.efficiency = efficiency
        self.tie_tolerance = tie_tolerance
        self.always_decide = always_decide
        self.target_margin = target_margin
        self.smooth_intervals = smooth_intervals
        self.min_window_intervals = min_window_intervals
        self.guard = BudgetGuard()
        self.reset()

    def reset(self) -> None:
        self.guard.reset()
        if self.pid is not None:
            self.pid.reset()
        self.memory_ = _Memory()
        self.above_band_ = 0
        self.since_change_ = 0
        self.last_choice_: Configuration | None = None
        self.last_prediction_: dict[Configuration, tuple[float, float]] = {}
        self.power_bias_w_ = 0.0
        self.decided_once_ = False
        self.window_: list[tuple[float, float]] = []

    # -- feedback ----------------------------------------------------------------------------

    def _dwell_tps(self, obs: Observation) -> float | None:
        """Throughput since the configuration in force was applied (last `smooth_intervals` at most).

        The interval right after a change is a transient and is skipped; None until
        `min_window_intervals` intervals have been seen, because shorter windows are mostly noise.
        """
        if self.since_change_ <= 0:
            self.window_.clear()
            return None
        self.window_.append((obs.generated_tokens, obs.interval_s))
        del self.window_[: max(0, len(self.window_) - self.smooth_intervals)]
        if len(self.window_) < self.min_window_intervals:
            return None
        tokens = sum(t for t, _ in self.window_)
        seconds = sum(d for _, d in self.window_)
        return tokens / seconds if seconds > 0 else None

    def _error(self, ctx: DecisionContext, dwell_tps: float | None) -> float | None:
        obs = ctx.observation
        if obs is None or ctx.target is None or dwell_tps is None:
            return None
        error = (ctx.target.target_tps - dwell_tps) / ctx.target.target_tps
        if error > 0 and obs.demand_limited:
            return 0.0  # all offered load served: not a shortfall the controller can fix
        return error

    def _learn(self, ctx: DecisionContext) -> None:
        obs = ctx.observation
        if obs is None:
            return
        if self.memory_.note_workload(obs) and self.pid is not None:
            self.pid.reset()
        stable = self.since_change_ >= 1 and ctx.current == self.last_choice_
        predicted = self.last_prediction_.get(ctx.current)
        if not (stable and predicted is not None) or obs.demand_limited:
            return
        predicted_tps, predicted_power_w = predicted
        if self.learn_ratios and predicted_tps > 0:
            self.memory_.record(ctx.current, obs.generated_tokens, predicted_tps, obs.interval_s)
        if ctx.budget is not None and not ctx.constraints_changed:
            bias = ctx.measured_budget_power_w() - predicted_power_w
            self.power_bias_w_ = 0.8 * self.power_bias_w_ + 0.2 * max(bias, -0.05 * ctx.budget.budget_w)

    # -- decision ----------------------------------------------------------------------------

    def decide(self, ctx: DecisionContext) -> Decision:
        over_frac = self.guard.update(ctx)
        dwell_tps = self._dwell_tps(ctx.observation) if ctx.observation is not None else None
        self._learn(ctx)
        error = self._error(ctx, dwell_tps)
        margin = 0.0
        if self.pid is not None:
            margin = self.pid.update(error, ctx.observation.interval_s) if error is not None else self.pid.output_
        if error is not None and abs(error) > self.error_threshold:
            self.above_band_ += 1
        elif error is not None:
            self.above_band_ = 0

        bound = self.guard.cap_bound_w(ctx)
        trigger = None
        if not self.decided_once_ or ctx.observation is None:
            trigger = "first decision"
        elif ctx.constraints_changed:
            trigger = "budget or target changed"
        elif over_frac is not None and over_frac > 0.01:
            trigger = f"power {over_frac * 100:.1f}% over budget"
        elif bound is not None and ctx.current.power_cap_w > max(bound, ctx.constraints.power_cap_min_w) + 0.5:
            trigger = "configuration in force exceeds the budget cap"
        elif self.above_band_ >= self.hysteresis_intervals:
            trigger = f"throughput error {error * 100:+.1f}% for {self.above_band_} intervals"
        elif self.always_decide:
            trigger = "every interval"
        self.since_change_ += 1

        if trigger is None:
            why = "hold: no sustained error" if error is None or abs(error) <= self.error_threshold else (
                f"hold: error {error * 100:+.1f}% for {self.above_band_}/{self.hysteresis_intervals} intervals"
            )
            predicted = self.last_prediction_.get(ctx.current)
            return Decision(
                config=ctx.current,
                reason=why,
                candidates_considered=0,
                candidates_feasible=0,
                predicted_throughput_tps=None if predicted is None else predicted[0],
                predicted_node_power_w=None,
                budget_bound=bool(bound is not None and self._last_bound),
                warnings=self._last_warnings,
                extra={"pid_margin": round(margin, 4)},
            )
        decision = self._select(ctx, bound, margin, trigger)
        self.above_band_ = 0
        self.decided_once_ = True
        if decision.config != ctx.current:
            self.since_change_ = 0
        self.last_choice_ = decision.config
        return decision

    _last_bound = False
    _last_warnings: tuple[str, ...] = ()

    def _select(self, ctx: DecisionContext, bound: float | None, margin: float, trigger: str) -> Decision:
        c = ctx.constraints
        grid_caps = [min(max(cap, c.power_cap_min_w), c.power_cap_max_w) for cap in self.power_caps_w]
        if not c.power_cap_settable:  # batch-only control: the cap in force is the only one
            grid_caps = [ctx.current.power_cap_w]
            bound = None
        caps = sorted(set(grid_caps))
        if bound is not None:
            clamped = _clamp_cap(max(grid_caps), bound, ctx)
            caps = sorted({min(cap, clamped) for cap in caps} | set(caps))
        batches = [min(max(b, c.batch_cap_min), c.batch_cap_max) for b in self.batch_caps]
        batches = sorted(set(batches))
        cap_arr = np.repeat(np.asarray(caps, dtype=float), len(batches))
        batch_arr = np.tile(np.asarray(batches, dtype=int), len(caps))
        workload = self.workload_fn(ctx.observation) if self.workload_fn is not None else None
        pred = self.model.predict_candidates(cap_arr, batch_arr, workload)
        thr = np.asarray(pred.throughput_tps, dtype=float)
        gpu_w = np.asarray(pred.gpu_power_total_w, dtype=float)
        node_w = np.asarray(pred.node_power_w, dtype=float)
        configs = [Configuration(float(a), int(b)) for a, b in zip(cap_arr, batch_arr)]
        pooled = self.memory_.pooled()
        factors = np.array([self.memory_.factor(cfg, pooled) for cfg in configs]) if self.learn_ratios else np.ones(len(configs))
        thr_corr = thr * factors
        # Efficiency is scored at the power the configuration draws (prediction), not the cap.
        eff = thr_corr / np.maximum(node_w if self.efficiency == "node" else gpu_w, 1e-9)

        in_grid = np.array([cap in grid_caps for cap in cap_arr])  # the unconstrained candidate set
        if bound is not None:
            allowed = cap_arr <= max(bound, c.power_cap_min_w) + 1e-6
            power_kind = gpu_w if ctx.budget.kind == "gpu" else node_w
            feasible = allowed & (power_kind + self.power_bias_w_ <= ctx.budget.budget_w * (1 - self.guard.margin_frac))
        else:
            feasible = np.ones(len(configs), dtype=bool)
        warnings: list[str] = list(_budget_warning(bound, ctx))
        target_sel = None if ctx.target is None else ctx.target.target_tps * (1.0 + self.target_margin + margin)

        def choose(mask: np.ndarray) -> tuple[int, str]:
            if not mask.any():
                return -1, ""
            if target_sel is not None:
                ok = mask & (thr_corr >= target_sel)
                if ok.any():
                    return self._argmax_keep(eff, ok, configs, ctx.current), "highest predicted tokens/J meeting the target"
                return self._argmax_keep(thr_corr, mask, configs, ctx.current), "no candidate meets the target: highest predicted throughput"
            return self._argmax_keep(eff, mask, configs, ctx.current), "highest predicted tokens/J (no target)"

        index, why = choose(feasible)
        if index < 0:
            index = int(np.argmin(np.where(cap_arr <= (bound if bound is not None else np.inf) + 1e-6, gpu_w, np.inf)))
            if not np.isfinite(gpu_w[index]) or bound is None or cap_arr[index] > max(bound, c.power_cap_min_w) + 1e-6:
                index = int(np.argmin(gpu_w))
            why = "nothing fits the budget: lowest predicted power"
            if not warnings:
                warnings.append(
                    f"power budget {ctx.budget.budget_w:g} W ({ctx.budget.kind}) is below the predicted power of every "
                    "configuration; running best-effort at the lowest predicted power"
                )
        unconstrained, _ = choose(in_grid)
        budget_bound = bound is not None and unconstrained >= 0 and configs[unconstrained] != configs[index]
        if target_sel is not None and ctx.target is not None:
            best_possible = float(np.max(thr_corr[in_grid])) if in_grid.any() else 0.0
            if best_possible < ctx.target.target_tps * (1 - self.error_threshold):
                warnings.append(
                    f"throughput target {ctx.target.target_tps:g} tok/s is above the node's predicted maximum "
                    f"{best_possible:.0f} tok/s; running best-effort at the highest throughput"
                )
            elif budget_bound and thr_corr[index] < ctx.target.target_tps:
                warnings.append(
                    f"the power budget keeps throughput below the target: best under budget predicted "
                    f"{thr_corr[index]:.0f} of {ctx.target.target_tps:g} tok/s"
                )
        self.last_prediction_ = {
            cfg: (float(thr[i]), float(gpu_w[i] if ctx.budget is not None and ctx.budget.kind == "gpu" else node_w[i]))
            for i, cfg in enumerate(configs)
        }
        self._last_bound = bool(budget_bound)
        self._last_warnings = tuple(warnings)
        chosen = configs[index]
        return Decision(
            config=chosen,
            reason=f"{trigger}: {why}",
            candidates_considered=len(configs),
            candidates_feasible=int(feasible.sum()),
            candidates_meeting_target=None if target_sel is None else int((feasible & (thr_corr >= target_sel)).sum()),
            predicted_throughput_tps=float(thr_corr[index]),
            predicted_gpu_power_w=float(gpu_w[index]),
            predicted_node_power_w=float(node_w[index]),
            predicted_tokens_per_joule=float(thr_corr[index] / max(node_w[index], 1e-9)),
            budget_bound=bool(budget_bound),
            warnings=tuple(warnings),
            extra={"pid_margin": round(margin, 4), "power_bias_w": round(self.power_bias_w_, 2),
                   "budget_cap_bound_w": None if bound is None else round(bound, 2)},
        )

    def _argmax_keep(self, score: np.ndarray, mask: np.ndarray, configs: list[Configuration], current: Configuration) -> int:
        """Argmax of `score` over `mask`, keeping the configuration in force when it is within the tie tolerance."""
        masked = np.where(mask, score, -np.inf)
        best = int(np.argmax(masked))
        for i, cfg in enumerate(configs):
            if cfg == current and mask[i] and masked[i] >= masked[best] * (1 - self.tie_tolerance):
                return i
        return best


# --------------------------------------------------------------------------------------------
# Factory


def _grid(model: Any, attr: str, default: tuple) -> tuple:
    values = getattr(model, attr, None)
    if values is None:
        return default
    return tuple(np.asarray(values).tolist())


def make_policy(
    name: str,
    predictor: PerfModel | None = None,
    truth: PerfModel | None = None,
    power_caps_w: tuple[float, ...] | None = None,
    batch_caps: tuple[int, ...] | None = None,
    power_cap_max_w: float = 400.0,
    batch_cap_max: int = 64,
    workload_fn: Callable[[Observation | None], Any] | None = None,
    efficiency: str = "gpu",
) -> Policy:
    """Build a policy by name ('baseline', 'adaptive-batch', 'adaptive-cap', 'pals', 'oracle').

    Args:
        predictor: the fitted power-performance predictor (all but 'baseline' and 'oracle' need it).
        truth: the simulator's ground truth (only 'oracle' uses it).
        power_caps_w, batch_caps: candidate grids; default to the predictor's profiled grid
            (`caps_`, `batches_`), else the paper's.
        power_cap_max_w, batch_cap_max: the fixed knob of AdaptiveBatch (cap) and AdaptiveCap (batch).
    """
    key = name.lower().replace("_", "-")
    if key not in POLICY_NAMES:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
    if key == "baseline":
        return Baseline(batch_cap=batch_cap_max)
    source = truth if key == "oracle" else predictor
    if source is None:
        need = "the simulator's ground truth (simulated node only)" if key == "oracle" else "a predictor (--predictor or --profile)"
        raise ConfigError(f"policy {key!r} needs {need}")
    caps = power_caps_w or _grid(predictor if predictor is not None else source, "caps_", PAPER_POWER_CAPS_W)
    batches = batch_caps or _grid(predictor if predictor is not None else source, "batches_", PAPER_BATCH_CAPS)
    common = dict(workload_fn=workload_fn, efficiency=efficiency)
    if key == "adaptive-batch":
        return ModelGuidedPolicy("adaptive-batch", source, (power_cap_max_w,), batches,
                                 pid=PID(), **common)
    if key == "adaptive-cap":
        return ModelGuidedPolicy("adaptive-cap", source, caps, (batch_cap_max,), pid=PID(), **common)
    if key == "pals":
        return ModelGuidedPolicy("pals", source, caps, batches, pid=PID(), **common)
    return ModelGuidedPolicy("oracle", source, caps, batches, pid=None, hysteresis_intervals=1,
                             learn_ratios=False, always_decide=True, target_margin=0.0, **common)
