"""The model-guided policies' knobs: one frozen, validated record, each default defined once here.

Prose elsewhere names these fields rather than repeating their numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal

from pals.control.qos import DEFAULT_QOS_WINDOW_S
from pals.errors import ConfigError

DEFAULT_BURST_CV = 0.15
"""Throughput CV over a QoS window assumed before any is measured: Poisson arrivals at half a
4x A100 node's capacity, Azure conversation lengths, measure 0.11-0.15 (Llama-2-7B, Mixtral-8x7B)."""

FULL_BATCH_FRACTION = 0.9
"""A batch at least this full (with requests waiting) means the node ran at capacity
(`capacity_limited`). Units: fraction of the batch cap."""

OBJECTIVES: tuple[str, ...] = ("node", "gpu")
"""What tokens/J counts joules of: the node's (wall power: the headline `tokens_per_joule` of every
summary) or the GPUs' only (`tokens_per_joule_gpu`)."""
DEFAULT_OBJECTIVE = "node"
"""The objective every policy maximizes unless told otherwise: the one the headline reports."""

Objective = Literal["node", "gpu"]

DEFAULT_IDLE_FRACTION_OF_MIN_CAP = 0.6
"""Idle-with-context GPU power assumed before any idle interval is seen, as a fraction of the GPU's
lowest settable cap (A100: 0.6 x 100 W = 60 W; a loaded vLLM engine idles at 59-62 W)."""


@dataclass(frozen=True)
class ModelGuidedConfig:
    """How a model-guided policy (AdaptiveBatch, AdaptiveCap, PALS) learns and chooses.

    The selection rule these knobs tune is described in `pals.control.policies` (package docstring).
    """

    # -- choosing ---------------------------------------------------------------------------------
    objective: Objective = DEFAULT_OBJECTIVE
    """What the selection maximizes: tokens per node joule ("node", through the loop's node-power
    line, as the summaries' headline `tokens_per_joule` counts them) or per GPU joule ("gpu")."""
    target_margin: float = 0.10
    """Ask the prediction for this fraction more than the target (and the demand). Delivered
    throughput swings by ~10 % over 5 s windows at a fixed configuration, so a candidate predicted
    at exactly the target misses it about a third of the time. Units: fraction."""
    tie_tolerance: float = 0.01
    """A candidate must beat the configuration in force by this fraction of its score to replace it
    (no change for nothing). Units: fraction."""
    slo_margin: float = 0.05
    """A candidate meets the latency SLO when its predicted latency is at most the objective x
    (1 - this): a p99 over a few hundred requests moves by several percent from one window to the
    next. Profile points are measured at steady state (`pals.model.profiler`), so the fitted latency
    is not biased low by cold starts; at 10 % the margin also excluded configurations whose measured
    p99 sat 5-10 % under the objective (Mixtral at 400 W / batch 32 under a 33 ms TPOT SLO). Units: fraction."""
    slo_margin_corrected: float = 0.03
    """The margin once the latency residual learnt online is trusted (`latency_residual.LatencyResidual`:
    measured / predicted p99 at the configurations run, pooled): the profile's noise is then corrected
    and only the interval-to-interval swing of a window's p99 is left. `slo_margin` keeps its meaning
    for the model as fitted (before the residual has data, and after every workload shift). Units: fraction."""
    partial_batch: float = 0.0
    """Weight of the batch the estimated demand fills (`selection.filled_batch`) in the latency SLO
    test: the SLO is tested at the geometric mix of that batch (this weight) and the batch cap (the
    rest). 0: at the batch cap, a full batch (safe under bursts); 1: at the filled batch alone. The
    delivered power of the load-aware score always uses the filled batch
    (`selection.partial_batch_power_w`). Units: fraction."""
    demand_target_multiple: float = 2.0
    """The demand term of the capacity requirement counts the demand up to this multiple of the
    target (a load far above the target need not all be served)."""

    # -- hysteresis and the throughput error ------------------------------------------------------
    error_threshold: float = 0.05
    """|e| above this counts towards a re-selection; also the shortfall below which an unreachable
    target is not warned about. Units: fraction of the target."""
    hysteresis_intervals: int = 4
    """Consecutive intervals |e| must stay above `error_threshold` before the selection re-runs."""
    smooth_intervals: int = 40
    """e is measured over at most this many intervals spent at the configuration in force."""
    min_window_intervals: int = 8
    """...and over at least this many (shorter windows are mostly noise); the interval right after a
    change is skipped."""
    limited_share_min: float = 0.5
    """e counts only when the node was capacity-limited in at least this share of the window's
    intervals (otherwise it served the load it was offered, and e = 0). Units: fraction."""
    over_budget_trigger_frac: float = 0.01
    """Measured power this far over the budget (the guard's window mean, or a spike it cut on)
    re-runs the selection at once. Units: fraction of the budget."""

    # -- warm-up and capacity ---------------------------------------------------------------------
    warmup_s: float = 5.0
    """Node time after the first observation during which nothing is learnt (no capacity ratio, no
    throughput error, no demand): the node is still filling its batches, so throughput is neither
    the demand nor the capacity. Units: s."""
    backlog_intervals: int = 3
    """Requests waiting this many intervals in a row count as capacity-limited even with the batch
    below its cap (KV-cache-limited batches)."""
    full_batch_fraction: float = FULL_BATCH_FRACTION
    """A batch at least this full (with requests waiting) means the node ran at capacity
    (`capacity_limited`). Units: fraction of the batch cap."""

    # -- capacity correction (measured / predicted) -----------------------------------------------
    ratio_prior_s: float = 20.0
    """Prior weight of a learnt capacity ratio: it is shrunk towards the pooled ratio (and that
    towards 1) as if this much data said so. Units: s."""
    ratio_min: float = 0.7
    """Lowest capacity correction factor."""
    ratio_max: float = 1.4
    """Highest capacity correction factor."""
    workload_shift: float = 0.25
    """Learnt ratios (and the PID) are forgotten when the mean prompt or output length moves by more
    than this. Units: fraction."""

    # -- power bias and idle power ----------------------------------------------------------------
    power_bias_smoothing: float = 0.2
    """Weight of the newest interval in the measured-minus-predicted power bias (an EMA)."""
    power_bias_floor_frac: float = 0.05
    """One interval's bias counts at most this far below zero. Units: fraction of the budget."""
    idle_power_smoothing: float = 0.1
    """Weight of the newest idle interval in the learnt idle power per GPU (an EMA)."""
    idle_fraction_of_min_cap: float = DEFAULT_IDLE_FRACTION_OF_MIN_CAP
    """Idle power per GPU before any idle interval is seen, as a fraction of the lowest cap."""

    # -- offered load (demand) --------------------------------------------------------------------
    demand_window_s: float = 30.0
    """Span of the demand estimate (mean delivered throughput). Units: s."""
    demand_min_fill: float = 0.5
    """No demand estimate before the window covers this share of `demand_window_s`. Units: fraction."""
    demand_backlogged_max: float = 0.5
    """The demand is unknown (treated as saturating) when the node was capacity-limited over more
    than this share of the window. Units: fraction."""
    demand_shift: float = 0.2
    """A move of the demand estimate by more than this re-runs the selection. Units: fraction."""
    demand_change_s: float = 6.0
    """Span of the recent part of the demand window tested for a level change (`estimators.LevelChange`);
    on a change the estimate restarts from it, and the burst history restarts. Units: s."""
    demand_change_z: float = 3.0
    """A level change is a departure of more than this many standard errors of Poisson arrivals;
    0 turns the test off (the trailing mean alone, as before)."""

    # -- bursts -----------------------------------------------------------------------------------
    burst_z: float = 2.0
    """Capacity headroom above the demand, in standard deviations of throughput over a QoS window."""
    burst_window_s: float = DEFAULT_QOS_WINDOW_S
    """Span of each rolling window whose throughput spread is measured (the QoS window). Units: s."""
    burst_history_s: float = 120.0
    """History over which the burst CV is measured. Units: s."""
    burst_min_windows: float = 2.0
    """No CV is measured before the history covers this many `burst_window_s`."""
    burst_prior_s: float = 60.0
    """Weight of `burst_cv_prior` in the CV estimate, as seconds of data. Units: s."""
    burst_cv_prior: float = DEFAULT_BURST_CV
    """CV assumed before one is measured (and the shrinkage target)."""
    burst_shift: float = 0.08
    """A move of the burst headroom by more than this re-runs the selection. Units: fraction."""

    # -- following the budget governor ------------------------------------------------------------
    follow_step_w: float = 1.0
    """A choice at the budget's cap bound follows the governor's bound once it moved this far.
    Units: W per GPU."""

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}; "
                              "use --objective node (tokens per node joule) or gpu")
        for f in fields(self):
            if f.name == "objective":
                continue
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"ModelGuidedConfig.{f.name} must be a finite number, got {value!r}")
            if value < 0:
                raise ConfigError(f"ModelGuidedConfig.{f.name} must be >= 0, got {value!r}; use a non-negative value")
        _at_least(self, "hysteresis_intervals", 1)
        _at_least(self, "min_window_intervals", 1)
        _at_least(self, "backlog_intervals", 1)
        _at_least(self, "smooth_intervals", self.min_window_intervals, "min_window_intervals")
        for name in ("demand_window_s", "burst_window_s", "follow_step_w", "demand_change_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ModelGuidedConfig.{name} must be > 0, got {getattr(self, name)!r}")
        _at_least(self, "burst_history_s", self.burst_min_windows * self.burst_window_s,
                  "burst_min_windows x burst_window_s")
        for name in ("error_threshold", "tie_tolerance", "slo_margin", "slo_margin_corrected", "partial_batch",
                     "limited_share_min", "full_batch_fraction",
                     "demand_min_fill", "demand_backlogged_max", "power_bias_smoothing", "idle_power_smoothing"):
            if getattr(self, name) > 1:
                raise ConfigError(f"ModelGuidedConfig.{name} is a fraction; got {getattr(self, name)!r}, use a value in [0, 1]")
        if not 0 < self.ratio_min <= 1 <= self.ratio_max:
            raise ConfigError(
                f"ModelGuidedConfig ratio_min {self.ratio_min!r} / ratio_max {self.ratio_max!r} must bracket 1 "
                "(0 < ratio_min <= 1 <= ratio_max)"
            )
        for name in ("hysteresis_intervals", "min_window_intervals", "backlog_intervals", "smooth_intervals"):
            if int(getattr(self, name)) != getattr(self, name):
                raise ConfigError(f"ModelGuidedConfig.{name} counts intervals; got {getattr(self, name)!r}, use a whole number")


def _at_least(config: ModelGuidedConfig, name: str, low: float, low_name: str | None = None) -> None:
    value = getattr(config, name)
    if value < low:
        raise ConfigError(f"ModelGuidedConfig.{name} must be at least {low_name or low}, got {value!r}")
