"""Budget enforcement shared by every policy: a per-GPU cap bound governed by measured power."""

from __future__ import annotations

from dataclasses import dataclass, field

from pals.control.budget import PowerBudget
from pals.control.policies.interface import capacity_limited
from pals.control.qos import DEFAULT_QOS_WINDOW_S
from pals.control.types import DecisionContext
from pals.control.window import TrailingMeanPower
from pals.core.node import Constraints


@dataclass
class BudgetGuard:
    """Turns a power budget into a per-GPU cap bound, governed by measured power.

    The bound is (budget as total GPU power - trim) / num_gpus, with `trim_frac` (a fraction of the
    budget) fed back from measured power (energy deltas), as a power governor (GEOPM's
    power_governor) does. The governed quantity is the mean power over a trailing window of
    `window_s` (the QoS window; `pals.control.window`): interval power at a fixed cap swings
    +-3-5 % (sd), uncorrelated from one 500 ms interval to the next, so holding EVERY interval under
    the budget would hold the mean ~6 % under it. Budget compliance is judged on the same window
    (`pals.control.summary`). The governor:

    - Reacts at once, on interval power, to a budget step-down (the new budget clears the window and
      any lift) and to any interval over the budget while the window is young (under
      `young_fraction` of `window_s` since the budget was set), and at any time to one interval over
      the budget by more than `spike_frac`: `trim_frac` grows by the overshoot plus `margin_frac`,
      so the next interval's cap is under the budget (the fast, downward path).
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
    - Otherwise, clearly under the budget (by more than `decay_below_frac`): a positive trim decays
      by `decay_per_interval`.
    """

    margin_frac: float = 0.005
    """Aim this far under the budget when trimming after an overshoot. Units: fraction of the budget."""
    decay_per_interval: float = 0.02
    """Share of a positive trim forgotten per interval while the window mean is clearly under the budget."""
    decay_below_frac: float = 0.02
    """The trim decays only while the window mean is under the budget by more than this. Units: fraction
    of the budget."""
    setpoint_frac: float = 0.02
    """The governor's setpoint for the window mean: B x (1 - setpoint_frac). Units: fraction of the budget."""
    gain: float = 0.2
    """Integral gain: share of the window mean's distance from the setpoint taken off the trim per
    interval. Kept low because the window lags the cap by about half its length."""
    max_step_frac: float = 0.01
    """Largest move of the integral term per interval. Units: fraction of the budget."""
    max_trim_frac: float = 0.5
    """Largest trim: how far the governor alone may cut the bound. Units: fraction of the budget."""
    spike_frac: float = 0.10
    """One interval over the budget by more than this is cut at once. Units: fraction of the budget."""
    young_fraction: float = 0.5
    """While the window covers less than this share of `window_s`, any interval over the budget is cut
    at once (too few intervals for a mean)."""
    peak_tolerance_frac: float = 0.10
    """The lift stops where the caps themselves sum to B x (1 + this): a cap bounds every interval's
    power, so no interval can exceed the budget by more. Units: fraction of the budget."""
    binding_slack_w: float = 2.0
    """The budget binds while the cap in force is within this of the bound: a policy that follows the
    bound in steps (`ModelGuidedConfig.follow_step_w`) lags it by up to a step. Units: W per GPU."""
    window_s: float = DEFAULT_QOS_WINDOW_S
    """Trailing window of the governed mean power (the QoS window)."""
    trim_frac: float = 0.0
    """State: the trim in force. Units: fraction of the budget (negative: a lift)."""
    last_bound_w_: float | None = None
    """State: the bound last computed, floored at the GPU's lowest cap (None without a budget)."""
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
        young = self.window_.span_s < self.young_fraction * self.window_s - 1e-9
        binding = self.last_bound_w_ is not None and ctx.current.power_cap_w >= self.last_bound_w_ - self.binding_slack_w
        busy = capacity_limited(ctx.observation, ctx.constraints.replicas)
        acted = window_over
        if window_over <= 0 or young:
            self.over_base_frac_ = None
        elif self.over_base_frac_ is None:
            self.over_base_frac_ = self.trim_frac
        if over_frac > self.spike_frac or (young and over_frac > 0):
            self.trim_frac = min(self.max_trim_frac, self.trim_frac + over_frac + self.margin_frac)
            acted = max(over_frac, window_over)
        elif self.over_base_frac_ is not None:
            # Cut at once by the window's excess, counted from where the trim stood when the window
            # crossed the budget: the window keeps the old intervals for a while after the cut, and
            # cutting again for them would wind the trim up.
            self.trim_frac = min(self.max_trim_frac, max(self.trim_frac, self.over_base_frac_ + window_over + self.margin_frac))
        elif binding and busy and ctx.constraints.power_cap_settable:
            shortfall = -self.setpoint_frac - window_over  # > 0: below the setpoint
            self.trim_frac -= min(max(self.gain * shortfall, -self.max_step_frac), self.max_step_frac)
        elif window_over < -self.decay_below_frac and self.trim_frac > 0:
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


def clamp_cap(cap_w: float, bound_w: float | None, constraints: Constraints) -> float:
    """`cap_w` under the budget's bound (when there is one), within the GPU's settable range."""
    if bound_w is not None:
        cap_w = min(cap_w, bound_w)
    return float(min(max(cap_w, constraints.power_cap_min_w), constraints.power_cap_max_w))


def budget_warning(bound_w: float | None, budget: PowerBudget | None, power_cap_min_w: float) -> tuple[str, ...]:
    """The warning for a budget below what the GPUs draw at their lowest cap (empty otherwise)."""
    if bound_w is not None and bound_w < power_cap_min_w:
        return (
            f"power budget {budget.budget_w:g} W ({budget.kind}) is below what any configuration draws "
            f"(GPU caps at their minimum {power_cap_min_w:g} W); running best-effort at the lowest power",
        )
    return ()
