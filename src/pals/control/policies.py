"""Control policies behind one interface: the only thing that differs between runs.

A policy maps a `DecisionContext` (configuration in force, the interval just observed, budget,
target) to a `Decision`. Policies never see the node. All five obey the power budget the same way
at the last step (`BudgetGuard`): the per-GPU cap is clamped to the budget expressed as GPU power
per GPU, corrected by a governor on MEASURED power (energy counters) averaged over the QoS window
(5 s): an immediate trim on a budget step-down, on a window mean over the budget or on one interval
far over it, and an integral term that lifts the bound above the naive share while the
capacity-limited node draws under the budget (GPUs average 5-9 % under their caps), never to caps
that sum past the budget by more than 10 %. A power cap is the one knob that bounds power within
one interval. A model-guided policy whose choice sits at the bound follows it as the governor
moves it (cap only). They differ in how they choose below that bound:

- `Baseline`: maximum cap, maximum batch (the paper's 400 W / batch 64). Under a budget it runs at
  the budget-derived cap (cap-only enforcement) with the batch left at maximum.
- `AdaptiveBatch`: cap fixed (maximum, clamped by the budget), batch chosen with the predictor.
- `AdaptiveCap`: batch fixed (maximum), cap chosen with the predictor to meet the target.
- `PALS`: joint cap x batch, model-guided with PID correction and hysteresis (below).
- `Oracle`: the same selection on the simulator's ground truth (`TruthModel`, measured at
  saturation), no correction needed; an upper bound that exists only for the simulated node. It
  faces the same measurement noise as PALS, so it gets the same target margin, hysteresis and
  load-aware objective: it is the upper bound on efficiency at equal QoS, not a policy that trades
  QoS for tokens/J by running right at the target.

The model-guided selection (paper section 3.3), one pass per interval:

1. e = (target - measured) / target over the window at the configuration in force. When nothing
   was waiting, or the node was capacity-limited in fewer than half the window's intervals, it
   served the load it was offered, so a shortfall is not an error (e = 0); over-delivery is (e < 0).
2. Enumerate candidates (cap grid clamped to the budget cap, batch grid); predict capacity
   T_cap(c) and busy power P_sat(c) for each (profiles are taken at saturation). Predicted
   capacity is corrected by the measured / predicted ratio of configurations already visited
   under this workload (the pooled ratio for the rest), learnt ONLY from capacity-limited
   intervals (see `capacity_limited`) after the node's warm-up: when the offered load is below
   capacity the node delivers the demand, which says nothing about capacity.
3. Feasible: predicted busy power (in the budget's kind) + a fed-back power bias <= budget (busy
   power, not load-aware power: the budget is a hard limit and load can rise within an interval).
4. Among feasible candidates whose corrected capacity reaches target x (1 + m + u), m a fixed
   margin (10 %) for throughput noise and u the PID output, take the highest predicted tokens/J
   AT THE DELIVERED THROUGHPUT (load-aware objective, below); if none, the highest predicted
   capacity (best effort, with a warning when even the whole grid cannot reach the target). If
   nothing fits the budget, the lowest-power candidate, with a warning.

   Load-aware objective: with offered load D (estimated, below) a configuration delivers
   T(c) = min(D, T_cap(c)) at utilisation u = T(c) / T_cap(c) and draws
   P(c) = u * P_sat(c) + (1 - u) * P_idle, P_idle being the node's GPUs idling with the engine's
   context loaded. P_idle is learnt from intervals in which nothing ran; until then it is
   `DEFAULT_IDLE_FRACTION_OF_MIN_CAP` (0.6) x the GPU's lowest settable cap per GPU (A100: 60 W,
   the measured 59-62 W of a loaded vLLM engine). The demand D is the mean delivered throughput
   over the last `demand_window_s` (30 s) when the node was backlogged in at most half of them,
   and unknown (treated as >= every capacity, i.e. the saturated objective T_cap / P_sat) when it
   was backlogged more (no estimate before half a window of data). A move of the estimate by more
   than `demand_shift` (20 %) re-runs the
   selection. Candidates must also keep up with the estimated demand (capacity >= D x (1 + m),
   D counted up to twice the target): near full utilisation every arrival burst queues.
   Burst headroom: the demand is a mean; over a QoS window (5 s) Poisson arrivals swing it by
   10-20 %, and a backlog in a lull counts as a violation. So the demand term is
   D x (1 + z x CV) x (1 + m): CV the coefficient of variation of delivered throughput over
   rolling 5 s windows in the last 120 s (shrunk towards `DEFAULT_BURST_CV` = 0.15 with 60 s of
   weight), z = `burst_z` (2). Before the first demand estimate the target gets the same headroom
   (the load may be anything); a move of the headroom by more than 8 points re-runs the selection.
5. Hysteresis: a new configuration only when |e| stays above `error_threshold` (5 %) for
   `hysteresis_intervals` consecutive intervals, or at once when the budget or target changed or
   measured power is over the budget by more than 1 % (the guard's window mean, or a spike it cut
   on). A candidate within 1 % of the best tokens/J loses to the configuration in force (no change
   for nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from pals.control.pid import PID
from pals.control.qos import DEFAULT_QOS_WINDOW_S
from pals.control.types import Configuration, Decision, DecisionContext, Observation
from pals.control.window import TrailingMeanPower
from pals.core.paper import PAPER_BATCH_CAPS, PAPER_POWER_CAPS_W
from pals.errors import ConfigError


POLICY_NAMES = ("baseline", "adaptive-batch", "adaptive-cap", "pals", "oracle")

DEFAULT_BURST_CV = 0.15
"""Throughput CV over a QoS window (5 s) assumed before any is measured: Poisson arrivals at half a
4x A100 node's capacity, Azure conversation lengths, measure 0.11-0.15 (Llama-2-7B, Mixtral-8x7B)."""

DEFAULT_IDLE_FRACTION_OF_MIN_CAP = 0.6
"""Idle-with-context GPU power assumed before any idle interval is seen, as a fraction of the GPU's
lowest settable cap (A100: 0.6 x 100 W = 60 W; a loaded vLLM engine idles at 59-62 W)."""


def capacity_limited(obs: Observation, replicas: int, full_fraction: float = 0.9) -> bool:
    """True when the node ran at capacity: requests waited AND every replica's batch was (nearly) full.

    Requests also wait for a moment under a load well below capacity (an arrival burst larger
    than one step's prefill budget), while the running batch is far from the cap; such intervals
    deliver the demand, not the capacity. A batch held below the cap by KV-cache memory is caught
    by the policy's sustained-backlog test instead (`ModelGuidedPolicy.backlog_intervals`).
    """
    if obs.requests_waiting <= 0:
        return False
    return obs.requests_running >= full_fraction * obs.batch_cap * max(1, replicas)


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
    """Turns a power budget into a per-GPU cap bound, governed by measured power.

    The bound is (budget as total GPU power - trim) / num_gpus, with `trim_frac` (a fraction of the
    budget) fed back from measured power (energy deltas), as a power governor (GEOPM's
    power_governor) does. The governed quantity is the mean power over a trailing window of
    `window_s` (the QoS window, 5 s; `pals.control.window`): interval power at a fixed cap swings
    +-3-5 % (sd), uncorrelated from one 500 ms interval to the next, so holding EVERY interval under
    the budget would hold the mean ~6 % under it. Budget compliance is judged on the same window
    (`pals.control.summary`). The governor:

    - Reacts at once, on interval power, to a budget step-down (the new budget clears the window and
      any lift) and to any interval over the budget while the window is young (under half of
      `window_s` since the budget was set), and at any time to one interval over the budget by more
      than `spike_frac`: `trim_frac` grows by the overshoot plus `margin_frac`, so the next
      interval's cap is under the budget (the fast, downward path).
    - Window mean over the budget: `trim_frac` is raised at once to where it stood when the window
      crossed the budget plus the excess (and `margin_frac`), without winding up while the window
      still holds the intervals from before the cut.
    - Budget binding (the cap in force is at the bound) and the node capacity-limited (it would
      use more power): an integral term moves `trim_frac` by `gain` x the window mean's distance
      from the setpoint B x (1 - `setpoint_frac`) (at most `max_step_frac` per interval), so it may
      go negative and lift the bound above the naive per-GPU share. GPUs draw below their cap on
      average (the limiter picks, per step, the highest clock that fits, so decode steps sit under
      it): without the lift the node runs 5-9 % under a binding budget.
    - Anti-windup: no integration while the budget does not bind or the node is not
      capacity-limited (a lull draws less for want of work, not of power); the bound never rises
      above the GPU's highest cap, nor to caps that sum past the budget by more than
      `peak_tolerance_frac`, which bounds every interval's power (a cap bounds power within one
      interval); a budget change drops any lift (it was learnt at another cap).
    - Otherwise, clearly under the budget: a positive trim decays slowly.
    """

    margin_frac: float = 0.005
    """Aim this far under the budget when trimming after an overshoot. Units: fraction of the budget."""
    decay_per_interval: float = 0.02
    setpoint_frac: float = 0.02
    """The governor's setpoint for the window mean: B x (1 - setpoint_frac). Units: fraction of the budget."""
    gain: float = 0.2
    """Integral gain: share of the window mean's distance from the setpoint taken off the trim per
    interval. Kept low because the window lags the cap by about half its length."""
    max_step_frac: float = 0.01
    """Largest move of the integral term per interval. Units: fraction of the budget."""
    spike_frac: float = 0.10
    """One interval over the budget by more than this is cut at once. Units: fraction of the budget."""
    peak_tolerance_frac: float = 0.10
    """The lift stops where the caps themselves sum to B x (1 + this): a cap bounds every interval's
    power, so no interval can exceed the budget by more. Units: fraction of the budget."""
    binding_slack_w: float = 2.0
    """The budget binds while the cap in force is within this of the bound: a policy that follows the
    bound in steps (`ModelGuidedPolicy.follow_step_w`, 1 W) lags it by up to a step. Units: W per GPU."""
    window_s: float = DEFAULT_QOS_WINDOW_S
    """Trailing window of the governed mean power (the QoS window)."""
    trim_frac: float = 0.0
    last_bound_w_: float | None = None
    over_base_frac_: float | None = None
    """`trim_frac` when the window mean last crossed over the budget (None while under it)."""
    window_: TrailingMeanPower = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.window_ = TrailingMeanPower(self.window_s)

    def reset(self) -> None:
        self.trim_frac = 0.0
        self.last_bound_w_ = None
        self.over_base_frac_ = None
        self.window_.clear()

    def window_power_w(self) -> float | None:
        """The governed quantity: mean power over the trailing window (None before any interval)."""
        return self.window_.mean_w() if self.window_.span_s > 0 else None

    def update(self, ctx: DecisionContext) -> float | None:
        """Learn from the interval just observed; return the overshoot acted on, as a fraction (or None).

        That is the trailing-window mean's excess over the budget, or the interval's own when the
        guard cut on it (a young window, or a spike over `spike_frac`).
        """
        measured = ctx.measured_budget_power_w()
        if measured is None or ctx.budget is None:
            return None
        if ctx.constraints_changed:
            # The interval just measured ran under the previous budget: nothing to learn from it,
            # and a lift learnt at another cap does not carry over.
            self.trim_frac = max(self.trim_frac, 0.0)
            self.over_base_frac_ = None
            self.window_.clear()
            return None
        budget_w = ctx.budget.budget_w
        over_frac = measured / budget_w - 1.0
        window_over = self.window_.add(measured, ctx.observation.interval_s) / budget_w - 1.0
        young = self.window_.span_s < 0.5 * self.window_s - 1e-9
        binding = self.last_bound_w_ is not None and ctx.current.power_cap_w >= self.last_bound_w_ - self.binding_slack_w
        busy = capacity_limited(ctx.observation, ctx.constraints.replicas)
        acted = window_over
        if window_over <= 0 or young:
            self.over_base_frac_ = None
        elif self.over_base_frac_ is None:
            self.over_base_frac_ = self.trim_frac
        if over_frac > self.spike_frac or (young and over_frac > 0):
            self.trim_frac = min(0.5, self.trim_frac + over_frac + self.margin_frac)
            acted = max(over_frac, window_over)
        elif self.over_base_frac_ is not None:
            # Cut at once by the window's excess, counted from where the trim stood when the window
            # crossed the budget: the window keeps the old intervals for a while after the cut, and
            # cutting again for them would wind the trim up.
            self.trim_frac = min(0.5, max(self.trim_frac, self.over_base_frac_ + window_over + self.margin_frac))
        elif binding and busy and ctx.constraints.power_cap_settable:
            shortfall = -self.setpoint_frac - window_over  # > 0: below the setpoint
            self.trim_frac -= min(max(self.gain * shortfall, -self.max_step_frac), self.max_step_frac)
        elif window_over < -0.02 and self.trim_frac > 0:
            self.trim_frac *= 1.0 - self.decay_per_interval
        self.trim_frac = max(self.trim_frac, self._trim_floor(ctx))
        return acted

    def _gpu_w_per_budget_w(self, ctx: DecisionContext) -> float:
        return 1.0 / ctx.power_model.alpha if ctx.budget.kind == "node" else 1.0

    def _trim_floor(self, ctx: DecisionContext) -> float:
        """The lowest trim: the bound at the GPU's highest cap, or at the caps' peak tolerance."""
        gpu_total_w = ctx.budget_gpu_total_w()
        per_budget_w = self._gpu_w_per_budget_w(ctx) * ctx.budget.budget_w
        room_w = gpu_total_w - ctx.constraints.num_gpus * ctx.constraints.power_cap_max_w
        return max(room_w / per_budget_w, -self.peak_tolerance_frac) - self.margin_frac

    def cap_bound_w(self, ctx: DecisionContext) -> float | None:
        """Highest per-GPU cap the budget allows now (None without a budget); may be below the GPU's minimum."""
        gpu_total_w = ctx.budget_gpu_total_w()
        if gpu_total_w is None:
            self.last_bound_w_ = None
            return None
        trim_w = (self.trim_frac + self.margin_frac) * ctx.budget.budget_w * self._gpu_w_per_budget_w(ctx)
        bound = (gpu_total_w - trim_w) / ctx.constraints.num_gpus
        self.last_bound_w_ = max(bound, ctx.constraints.power_cap_min_w)
        return bound


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
            governor_trim=bound_hit and batch == ctx.current.batch_cap,
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
        load_aware: score candidates at the delivered throughput under the estimated demand
            (module docstring); False scores capacity / busy power (saturated load).
        idle_power_w: idle-with-context power per GPU (W); None learns it from intervals in which
            nothing ran, starting from `DEFAULT_IDLE_FRACTION_OF_MIN_CAP` x the lowest cap.
        warmup_s: node time after the first observation during which nothing is learnt (no
            capacity ratio, no throughput error): the node is still filling its batches, so
            throughput is neither the demand nor the capacity. Units: s.
        demand_window_s: span of the demand estimate. Units: s.
        backlog_intervals: requests waiting this many intervals in a row count as capacity-limited
            even with the batch below its cap (KV-cache-limited batches).
        demand_shift: re-run the selection when the demand estimate moves by this fraction.
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
        load_aware: bool = True,
        idle_power_w: float | None = None,
        warmup_s: float = 5.0,
        demand_window_s: float = 30.0,
        backlog_intervals: int = 3,
        demand_shift: float = 0.2,
        burst_z: float = 2.0,
        burst_window_s: float = DEFAULT_QOS_WINDOW_S,
        burst_history_s: float = 120.0,
        burst_prior_s: float = 60.0,
        burst_shift: float = 0.08,
        follow_step_w: float = 1.0,
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
        self.load_aware = load_aware
        self.idle_power_w = idle_power_w
        self.warmup_s = warmup_s
        self.demand_window_s = demand_window_s
        self.backlog_intervals = backlog_intervals
        self.demand_shift = demand_shift
        if burst_z < 0:
            raise ConfigError(f"burst_z must be >= 0 standard deviations, got {burst_z}")
        self.burst_z = burst_z
        self.burst_window_s = burst_window_s
        self.burst_history_s = burst_history_s
        self.burst_shift = burst_shift
        self.burst_prior_s = burst_prior_s
        self.follow_step_w = follow_step_w
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
        self.window_: list[tuple[float, float, bool]] = []
        self.first_obs_time_s_: float | None = None
        self.backlog_run_ = 0
        self.demand_items_: list[tuple[float, float, bool]] = []
        self.burst_items_: list[tuple[float, float]] = []
        self.burst_cv_: float | None = None
        self.demand_seen_ = False
        self.demand_first_ = False
        self.chose_bound_ = False
        self.burst_at_select_: float = 0.0
        self.demand_tps_: float | None = None
        self.demand_at_select_: float | None = None
        self.idle_power_learnt_w_: float | None = None
        self.frontier_: list[dict[str, float]] = []

    # -- load and capacity -------------------------------------------------------------------

    def _observe_load(self, ctx: DecisionContext) -> None:
        """Update warm-up, backlog run, demand estimate and idle power from the interval just seen."""
        obs = ctx.observation
        if obs is None:
            return
        if self.first_obs_time_s_ is None:
            self.first_obs_time_s_ = obs.time_s - obs.interval_s
        self.backlog_run_ = self.backlog_run_ + 1 if obs.requests_waiting > 0 else 0
        if obs.requests_running == 0 and obs.requests_waiting == 0 and obs.generated_tokens == 0:
            per_gpu_w = obs.gpu_power_w / max(ctx.constraints.num_gpus, 1)
            prev = self.idle_power_learnt_w_
            self.idle_power_learnt_w_ = per_gpu_w if prev is None else 0.9 * prev + 0.1 * per_gpu_w
        if not self.warm(obs):
            return
        self._observe_bursts(obs)
        self.demand_items_.append((obs.generated_tokens, obs.interval_s, self.is_capacity_limited(ctx)))
        span = sum(d for _, d, _ in self.demand_items_)
        while len(self.demand_items_) > 1 and span - self.demand_items_[0][1] >= self.demand_window_s - 1e-9:
            span -= self.demand_items_.pop(0)[1]
        backlogged_s = sum(d for _, d, b in self.demand_items_ if b)
        if span < 0.5 * self.demand_window_s - 1e-9:
            return  # too little data yet: keep the previous estimate
        if not self.demand_seen_:
            self.demand_first_ = True  # the first estimate: re-select without the no-estimate headroom
        self.demand_seen_ = True
        if backlogged_s > 0.5 * span:
            self.demand_tps_ = None  # demand >= capacity: saturated objective
        else:
            self.demand_tps_ = sum(t for t, _, _ in self.demand_items_) / span

    def _observe_bursts(self, obs: Observation) -> None:
        """Update `burst_cv_`: the coefficient of variation of throughput over QoS-window-long spans.

        Poisson arrivals make the offered load over a QoS window (5 s) swing by 10-20 % around its
        mean; a configuration whose capacity covers only the mean queues at every upward swing, and
        with requests waiting the trailing throughput of a lull counts as a violation. The spread of
        the delivered throughput over rolling windows of `burst_window_s` across the last
        `burst_history_s` measures that swing.
        """
        self.burst_items_.append((obs.generated_tokens, obs.interval_s))
        span = sum(d for _, d in self.burst_items_)
        while len(self.burst_items_) > 1 and span - self.burst_items_[0][1] >= self.burst_history_s - 1e-9:
            span -= self.burst_items_.pop(0)[1]
        if span < 2.0 * self.burst_window_s - 1e-9:
            return
        tokens = np.array([t for t, _ in self.burst_items_], dtype=float)
        seconds = np.array([d for _, d in self.burst_items_], dtype=float)
        per = max(1, int(round(self.burst_window_s / max(float(np.median(seconds)), 1e-9))))
        if len(tokens) < per + 2:
            return
        kernel = np.ones(per)
        rates = np.convolve(tokens, kernel, mode="valid") / np.convolve(seconds, kernel, mode="valid")
        mean = float(rates.mean())
        measured = float(rates.std() / mean) if mean > 0 else 0.0
        # Sixty seconds hold only a dozen independent windows: shrink towards the prior with a
        # weight of `burst_prior_s` seconds of data, so the headroom (and the choice) does not
        # wander with the estimate's own noise.
        self.burst_cv_ = (span * measured + self.burst_prior_s * DEFAULT_BURST_CV) / (span + self.burst_prior_s)

    def burst_margin(self) -> float:
        """Capacity headroom above the demand for its bursts: `burst_z` x the throughput's CV over a QoS window
        (`DEFAULT_BURST_CV` until one is measured)."""
        return self.burst_z * (DEFAULT_BURST_CV if self.burst_cv_ is None else self.burst_cv_)

    def warm(self, obs: Observation) -> bool:
        """True once `warmup_s` of node time has passed since the policy's first observation."""
        return self.first_obs_time_s_ is not None and obs.time_s - self.first_obs_time_s_ >= self.warmup_s - 1e-9

    def is_capacity_limited(self, ctx: DecisionContext) -> bool:
        """The interval just observed ran at capacity (batch full with requests waiting, or a sustained queue)."""
        obs = ctx.observation
        if obs is None:
            return False
        return capacity_limited(obs, ctx.constraints.replicas) or (
            obs.requests_waiting > 0 and self.backlog_run_ >= self.backlog_intervals
        )

    def idle_power_per_gpu_w(self, ctx: DecisionContext) -> float:
        """Idle-with-context power per GPU: given, learnt, else the documented default."""
        if self.idle_power_w is not None:
            return float(self.idle_power_w)
        if self.idle_power_learnt_w_ is not None:
            return self.idle_power_learnt_w_
        return DEFAULT_IDLE_FRACTION_OF_MIN_CAP * ctx.constraints.power_cap_min_w

    def delivered(self, capacity_tps: np.ndarray, gpu_sat_w: np.ndarray, ctx: DecisionContext,
                  demand_tps: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Delivered throughput and GPU power (node total) of candidates under `demand_tps` (None: saturated)."""
        capacity_tps = np.asarray(capacity_tps, dtype=float)
        gpu_sat_w = np.asarray(gpu_sat_w, dtype=float)
        if demand_tps is None or not self.load_aware:
            return capacity_tps, gpu_sat_w
        idle_total_w = self.idle_power_per_gpu_w(ctx) * ctx.constraints.num_gpus
        thr = np.minimum(demand_tps, capacity_tps)
        util = np.where(capacity_tps > 0, thr / np.maximum(capacity_tps, 1e-9), 1.0)
        # A profile point may draw less than the idle estimate (noise): never predict more power from load.
        power = util * gpu_sat_w + (1.0 - util) * np.minimum(idle_total_w, gpu_sat_w)
        return thr, power

    # -- feedback ----------------------------------------------------------------------------

    def _dwell_tps(self, ctx: DecisionContext) -> float | None:
        """Throughput since the configuration in force was applied (last `smooth_intervals` at most).

        The interval right after a change is a transient and is skipped; None until
        `min_window_intervals` intervals have been seen, because shorter windows are mostly noise.
        Nothing counts during the node's warm-up (`warmup_s`).
        """
        obs = ctx.observation
        if self.since_change_ <= 0 or not self.warm(obs):
            self.window_.clear()
            return None
        self.window_.append((obs.generated_tokens, obs.interval_s, self.is_capacity_limited(ctx)))
        del self.window_[: max(0, len(self.window_) - self.smooth_intervals)]
        if len(self.window_) < self.min_window_intervals:
            return None
        tokens = sum(t for t, _, _ in self.window_)
        seconds = sum(d for _, d, _ in self.window_)
        return tokens / seconds if seconds > 0 else None

    def _error(self, ctx: DecisionContext, dwell_tps: float | None) -> float | None:
        obs = ctx.observation
        if obs is None or ctx.target is None or dwell_tps is None:
            return None
        error = (ctx.target.target_tps - dwell_tps) / ctx.target.target_tps
        limited_share = sum(1 for _, _, b in self.window_ if b) / max(len(self.window_), 1)
        if error > 0 and obs.demand_limited:
            return 0.0  # all offered load served: not a shortfall the controller can fix
        if limited_share < 0.5 and self.load_aware:
            # The node served the load it was offered over most of the window: a lull with a
            # momentary queue is no shortfall, and delivering an offered load above the target is
            # no over-delivery to correct (the demand estimate re-runs the selection if it moves).
            return 0.0
        return error

    def _learn(self, ctx: DecisionContext) -> None:
        obs = ctx.observation
        if obs is None:
            return
        if self.memory_.note_workload(obs) and self.pid is not None:
            self.pid.reset()
        stable = self.since_change_ >= 1 and ctx.current == self.last_choice_
        predicted = self.last_prediction_.get(ctx.current)
        # Capacity is only observed when the node runs at capacity, and not while it is filling.
        if not (stable and predicted is not None) or not self.warm(obs) or not self.is_capacity_limited(ctx):
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
        self._observe_load(ctx)
        dwell_tps = self._dwell_tps(ctx) if ctx.observation is not None else None
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
        elif self.load_aware and (self._demand_moved() or self.demand_first_):
            trigger = ("offered load changed: " if self._demand_moved() else "first offered-load estimate: ") + self._demand_text()
        elif self.load_aware and self.demand_tps_ is not None and abs(self.burst_margin() - self.burst_at_select_) > self.burst_shift:
            trigger = (f"load burstiness changed: headroom {self.burst_at_select_ * 100:.0f}% -> "
                       f"{self.burst_margin() * 100:.0f}%")
        elif self.always_decide:
            trigger = "every interval"
        self.since_change_ += 1

        if trigger is None and bound is not None and self.chose_bound_ and ctx.constraints.power_cap_settable:
            # The configuration in force sits at the budget's cap bound, which the governor moved:
            # follow it with the cap (same batch), as Baseline does, without re-running the selection.
            follow_w = _clamp_cap(ctx.constraints.power_cap_max_w, bound, ctx)
            if abs(follow_w - ctx.current.power_cap_w) >= self.follow_step_w:
                config = Configuration(follow_w, ctx.current.batch_cap)
                self.last_choice_ = config
                self.since_change_ = 0
                return Decision(config=config, reason=f"cap follows the budget governor: {follow_w:.1f} W",
                                candidates_considered=0, candidates_feasible=0, budget_bound=bool(self._last_bound),
                                governor_trim=True, warnings=self._last_warnings,
                                extra={"pid_margin": round(margin, 4), "budget_cap_bound_w": round(bound, 2)})

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

    def _demand_moved(self) -> bool:
        now, then = self.demand_tps_, self.demand_at_select_
        if now is None and then is None:
            return False
        if now is None or then is None:
            return True
        return abs(now - then) > self.demand_shift * max(then, 1e-9)

    def _demand_text(self) -> str:
        def fmt(v: float | None) -> str:
            return "saturated" if v is None else f"{v:.0f} tok/s"

        return f"demand {fmt(self.demand_at_select_)} -> {fmt(self.demand_tps_)}"

    def predicted_table(self) -> list[dict[str, float]]:
        """The last selection's predicted table for the live workload: capacity (corrected) and busy power per candidate."""
        return list(self.frontier_)

    def _select(self, ctx: DecisionContext, bound: float | None, margin: float, trigger: str) -> Decision:
        c = ctx.constraints
        grid_caps = [min(max(cap, c.power_cap_min_w), c.power_cap_max_w) for cap in self.power_caps_w]
        batch_only = not c.power_cap_settable
        if batch_only:  # batch-only control: the cap in force is the only one
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
        # Efficiency is scored at the power the configuration draws (prediction), not the cap, and
        # at the throughput it would deliver under the estimated demand (load-aware objective).
        demand = self.demand_tps_ if self.load_aware else None
        thr_del, gpu_del = self.delivered(thr_corr, gpu_w, ctx, demand)
        node_del = node_w + ctx.power_model.alpha * (gpu_del - gpu_w)
        eff = thr_del / np.maximum(node_del if self.efficiency == "node" else gpu_del, 1e-9)

        in_grid = np.array([cap in grid_caps for cap in cap_arr])  # the unconstrained candidate set
        if bound is not None:
            allowed = cap_arr <= max(bound, c.power_cap_min_w) + 1e-6
            power_kind = gpu_w if ctx.budget.kind == "gpu" else node_w
            fits = power_kind + self.power_bias_w_ <= ctx.budget.budget_w * (1 - self.guard.margin_frac)
            # A candidate at the budget's cap bound is feasible whatever its predicted draw: the cap
            # itself holds power under the budget (the guard trims it on measured overshoot), and
            # without it the choice falls to the grid point below, leaving budget unused.
            at_bound = np.abs(cap_arr - max(bound, c.power_cap_min_w)) <= 0.5
            feasible = allowed & (fits | at_bound)
        elif batch_only and ctx.budget is not None:
            # Without settable caps only the batch can hold power under the budget: keep the
            # batches whose predicted draw (plus the learned bias) fits, else the smallest batch.
            power_kind = gpu_w if ctx.budget.kind == "gpu" else node_w
            feasible = power_kind + self.power_bias_w_ <= ctx.budget.budget_w * (1 - self.guard.margin_frac)
            if not feasible.any():
                feasible = batch_arr == batch_arr.min()
        else:
            feasible = np.ones(len(configs), dtype=bool)
        warnings: list[str] = list(_budget_warning(bound, ctx))
        target_sel = None if ctx.target is None else ctx.target.target_tps * (1.0 + self.target_margin + margin)
        if target_sel is not None and self.load_aware and demand is None and not self.demand_seen_:
            # No demand estimate yet (the first half window): the load may be anything from a lull
            # to saturation, so the target gets the burst headroom a Poisson load would need.
            target_sel *= 1.0 + self.burst_margin()
        if target_sel is not None and demand is not None and self.load_aware:
            # Keep up with the offered load too (when it exceeds the target), with the same margin:
            # a configuration run near full utilisation builds a queue at every arrival burst.
            # The demand is a mean: its bursts over a QoS window reach (1 + burst_margin) x it.
            burst = min(demand, ctx.target.target_tps * 2.0) * (1.0 + self.burst_margin())
            target_sel = max(target_sel, burst * (1.0 + self.target_margin))

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
        self.frontier_ = [
            {"power_cap_w": float(cap_arr[i]), "batch_cap": int(batch_arr[i]), "throughput_tps": float(thr_corr[i]),
             "gpu_power_w": float(gpu_w[i]), "node_power_w": float(node_w[i])}
            for i in range(len(configs)) if in_grid[i]
        ]
        self.demand_at_select_ = demand
        self.demand_first_ = False
        self.burst_at_select_ = self.burst_margin()
        self._last_bound = bool(budget_bound)
        self._last_warnings = tuple(warnings)
        chosen = configs[index]
        # At the budget's cap bound: from now on the cap follows the governor as it moves the bound.
        self.chose_bound_ = bool(bound is not None and not batch_only
                                 and abs(chosen.power_cap_w - _clamp_cap(c.power_cap_max_w, bound, ctx)) <= 0.5)
        return Decision(
            config=chosen,
            reason=f"{trigger}: {why}",
            candidates_considered=len(configs),
            candidates_feasible=int(feasible.sum()),
            candidates_meeting_target=None if target_sel is None else int((feasible & (thr_corr >= target_sel)).sum()),
            predicted_throughput_tps=float(thr_del[index]),
            predicted_gpu_power_w=float(gpu_del[index]),
            predicted_node_power_w=float(node_del[index]),
            predicted_tokens_per_joule=float(thr_del[index] / max(node_del[index], 1e-9)),
            budget_bound=bool(budget_bound),
            warnings=tuple(warnings),
            extra={"pid_margin": round(margin, 4), "power_bias_w": round(self.power_bias_w_, 2),
                   "budget_cap_bound_w": None if bound is None else round(bound, 2),
                   "predicted_capacity_tps": round(float(thr_corr[index]), 3),
                   "demand_tps": None if demand is None else round(demand, 3)},
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
    # The Oracle: exact capacity and busy power, but the same noisy telemetry as PALS (demand estimate,
    # throughput windows), hence the same target margin, hysteresis and load-aware objective. No
    # PID and no learnt ratios: its model needs no correction.
    return ModelGuidedPolicy("oracle", source, caps, batches, pid=None, learn_ratios=False, **common)
