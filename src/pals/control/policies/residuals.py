"""Prediction residuals learnt online: how far the model is off, per configuration and pooled.

The offline model is fitted on one workload; when the live workload shifts (other prompt and
output lengths) its predictions can be off by a factor of two or more, and no ratio clamp fits
every shift. So the residual is multiplicative and learnt in log space, log(measured /
predicted), as the sum of a pooled part r (shared by every configuration: the workload's level)
and a per-configuration part d_c (the model's shape error at c, prior mean 0). Each interval is
one Kalman update of both (`ResidualFilter`):

- prior variance of d_c: the model's own relative uncertainty at c (the spread of the forest's
  trees, `Prediction.throughput_std_tps` / `gpu_power_std_w`) plus `shape_floor`; a confident
  prediction is moved slowly by data, an uncertain one quickly. The pooled part starts from the
  mean relative spread plus `level_floor`.
- observation noise: the measured interval-to-interval variance of the log ratio (half the mean
  squared successive difference, robust to level steps), never below `noise_floor`.
- process noise `drift_per_s` on r (the workload drifts slowly) keeps the filter from freezing.
- fast forgetting on a shift: when the workload's mean lengths move by more than
  `workload_shift`, or the innovations stay one-sided (`ShiftDetector`), r's variance is reset
  to `shift_std`^2 and every d_c is shrunk by `shape_keep` with its variance widened: the next
  few intervals re-learn the level, while what was learnt about the shape is not thrown away.
  Neither test forgets again while the level is being re-learnt (`length_holdoff_s`,
  `detector_holdoff_s`; the start counts as a shift): repeated forgetting on noisy lengths let
  single noisy intervals set the level and made the selection wander.

An unvisited configuration gets exp(r): the pooled residual carries the level to it.

`ResidualCorrection` holds one filter for throughput (updated on sustained runs of
capacity-limited intervals: throughput shows capacity only then) and one for GPU power (updated on every interval at the
configuration in force, against the power expected at the measured utilisation, its noise scaled
by 1 / utilisation^2: a lightly loaded interval says little about busy power). `PredictionError`
compares the corrected predictions made BEFORE each interval with what it measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from pals.control.types import Configuration, Observation
from pals.core.window import TrailingWindow
from pals.errors import ConfigError


@dataclass(frozen=True)
class ResidualConfig:
    """Knobs of the online residual learner (log-space standard deviations unless named otherwise)."""

    level_floor: float = 0.05
    """Prior std of the pooled residual added to the model's mean relative spread (a model with no
    spread, the simulator's ground truth, is still not taken as exact)."""
    shape_floor: float = 0.03
    """Prior std of a configuration's own residual added to the model's relative spread there."""
    noise_prior: float = 0.15
    """Observation noise (std of one interval's log ratio) assumed before it is measured."""
    noise_floor: float = 0.01
    """Lowest observation noise (a constant measurement is not taken as exact)."""
    noise_smoothing: float = 0.05
    """Weight of the newest squared successive difference in the noise estimate (an EMA)."""
    drift_per_s: float = 0.004
    """Process noise of the pooled residual: its std grows by this per sqrt(second). Units: 1/sqrt(s)."""
    shift_std: float = 0.7
    """Prior std of the pooled residual right after a detected workload shift (fast forgetting)."""
    shape_keep: float = 0.5
    """Share of each configuration's own residual kept across a workload shift."""
    shape_widen: float = 0.05
    """Std added to each configuration's own residual on a workload shift."""
    workload_shift: float = 0.25
    """A move of the mean prompt or output length by more than this fraction is a workload shift."""
    detector_smoothing: float = 0.2
    """Weight of the newest normalised innovation in the shift detector's EMA."""
    detector_threshold: float = 2.0
    """The detector fires when its EMA of normalised innovations exceeds this (in innovation stds;
    the EMA's own std is about 0.33 under a steady workload)."""
    detector_holdoff_s: float = 30.0
    """The innovation test stays quiet this long after the start and after each shift: a filling
    node, and a level still being re-learnt, give one-sided innovations that are no new shift. Units: s."""
    length_holdoff_s: float = 10.0
    """A move of the mean lengths forgets only this long after the last shift (the lengths move on
    through a shift's transition), and `detector_holdoff_s` after the start. Units: s of observed data."""
    factor_min: float = 0.05
    """Lowest correction factor (a sanity bound, not a prior)."""
    factor_max: float = 20.0
    """Highest correction factor."""
    error_window_s: float = 20.0
    """Span over which the prediction error at the configuration in force is reported. Units: s."""
    reselect_shift: float = 0.05
    """The selection re-runs once the correction at the configuration in force moved this far
    (relative) since the last selection: the model's ranking was computed with a stale residual."""
    sustained_intervals: int = 4
    """Throughput is learnt (and its error counted) only from the `sustained_intervals`-th interval
    of a run of capacity-limited ones: the first intervals of a burst are mostly prefill of the
    requests that just filled the batch, and deliver well below the capacity."""
    reselect_min_s: float = 10.0
    """...once it has at least this much capacity-limited data there since the last shift (a
    sustained throughput error re-selects sooner, through the policy's hysteresis). Units: s."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"ResidualConfig.{f.name} must be a finite number >= 0, got {value!r}")
        for name in ("noise_smoothing", "detector_smoothing", "shape_keep"):
            if getattr(self, name) > 1:
                raise ConfigError(f"ResidualConfig.{name} is a fraction; got {getattr(self, name)!r}, use a value in [0, 1]")
        if not 0 < self.factor_min <= 1 <= self.factor_max:
            raise ConfigError("ResidualConfig factor_min / factor_max must bracket 1 (0 < factor_min <= 1 <= factor_max)")
        if int(self.sustained_intervals) != self.sustained_intervals:
            raise ConfigError(f"ResidualConfig.sustained_intervals counts intervals; got {self.sustained_intervals!r}")
        if self.noise_floor <= 0 or self.error_window_s <= 0:
            raise ConfigError("ResidualConfig noise_floor and error_window_s must be > 0")


class ShiftDetector:
    """One-sided innovations: an EMA of innovation / its predicted std beyond a threshold."""

    def __init__(self, smoothing: float, threshold: float) -> None:
        self.smoothing = smoothing
        self.threshold = threshold
        self.ema_ = 0.0

    def reset(self) -> None:
        self.ema_ = 0.0

    def update(self, normalised_innovation: float) -> bool:
        """Feed one innovation (in stds); True when the residual has moved (the EMA then restarts)."""
        z = max(min(normalised_innovation, 10.0), -10.0)  # one wild interval cannot fire it alone
        self.ema_ = (1.0 - self.smoothing) * self.ema_ + self.smoothing * z
        if abs(self.ema_) > self.threshold:
            self.ema_ = 0.0
            return True
        return False


class ResidualFilter:
    """log(measured / predicted) = r + d_c, learnt by an exact Kalman update per observation (module docstring).

    The state is [r, d_1, ..., d_n] over the visited configurations, with its full covariance:
    one configuration alone cannot tell r from its d_c (the two stay anti-correlated), so their
    split follows the priors, and after a shift the wide r takes the new level.
    """

    def __init__(self, config: ResidualConfig) -> None:
        self.config = config
        self._index: dict[Configuration, int] = {}
        self._x = np.zeros(1)
        self._p: np.ndarray | None = None
        self.noise_var_: float | None = None
        """Measured observation noise (variance of one interval's log ratio); None before two observations."""
        self.seconds: dict[Configuration, float] = {}
        """Seconds of observations per configuration since the last shift."""
        self._last_y: float | None = None
        self._last_config: Configuration | None = None
        self.detector = ShiftDetector(config.detector_smoothing, config.detector_threshold)
        self.since_forget_s_ = 0.0
        """Observed seconds since the start or the last forgetting."""

    @property
    def level_(self) -> float:
        """r: the pooled log residual."""
        return float(self._x[0])

    @property
    def level_var_(self) -> float | None:
        """Variance of r (None: not yet set from the model's spread)."""
        return None if self._p is None else float(self._p[0, 0])

    @property
    def shape_(self) -> dict[Configuration, float]:
        """d_c: each visited configuration's own log residual."""
        return {c: float(self._x[i]) for c, i in self._index.items()}

    def _clamp(self, log_factor: float) -> float:
        return min(max(log_factor, math.log(self.config.factor_min)), math.log(self.config.factor_max))

    def pooled(self) -> float:
        """exp(r): the correction of a configuration never observed."""
        return math.exp(self._clamp(self.level_))

    def factor(self, config: Configuration) -> float:
        """exp(r + d_c): the correction for `config`."""
        i = self._index.get(config)
        return math.exp(self._clamp(self.level_ + (0.0 if i is None else float(self._x[i]))))

    def factors(self, configs: list[Configuration]) -> np.ndarray:
        return np.array([self.factor(c) for c in configs])

    def noise_var(self) -> float:
        c = self.config
        measured = c.noise_prior ** 2 if self.noise_var_ is None else self.noise_var_
        return max(measured, c.noise_floor ** 2)

    def set_level_prior(self, mean_rel_std: float) -> None:
        """The pooled part's prior variance, from the model's mean relative spread (first time only)."""
        if self._p is None:
            self._p = np.array([[mean_rel_std ** 2 + self.config.level_floor ** 2]])

    def _add(self, config: Configuration, rel_std: float) -> int:
        n = len(self._x)
        p = np.zeros((n + 1, n + 1))
        p[:n, :n] = self._p
        p[n, n] = rel_std ** 2 + self.config.shape_floor ** 2
        self._p = p
        self._x = np.append(self._x, 0.0)
        self._index[config] = n
        return n

    def update(self, config: Configuration, y: float, interval_s: float, rel_std: float,
               noise_scale: float = 1.0) -> bool:
        """One observation y = log(measured / predicted) at `config`; True when the detector fired.

        Args:
            rel_std: the model's relative spread at `config` (its prior on d_c).
            noise_scale: multiplies the observation noise's variance (> 1: a less informative interval).
        """
        c = self.config
        self.set_level_prior(rel_std)
        if self._last_y is not None and self._last_config == config and noise_scale <= 1.0:
            diff2 = 0.5 * (y - self._last_y) ** 2
            prev = self.noise_var_
            self.noise_var_ = diff2 if prev is None else (1 - c.noise_smoothing) * prev + c.noise_smoothing * diff2
        self._last_y, self._last_config = y, config
        i = self._index.get(config)
        if i is None:
            i = self._add(config, rel_std)
        self._p[0, 0] += c.drift_per_s ** 2 * interval_s
        p = self._p
        ph = p[:, 0] + p[:, i]  # P H' with H = e_0 + e_i
        s = float(ph[0] + ph[i]) + self.noise_var() * max(noise_scale, 1e-9)
        innovation = y - (self._x[0] + self._x[i])
        gain = ph / s
        self._x = self._x + gain * innovation
        self._p = p - np.outer(gain, ph)
        self.seconds[config] = self.seconds.get(config, 0.0) + interval_s
        self.since_forget_s_ += interval_s
        fired = (noise_scale <= 1.0 and self.since_forget_s_ >= c.detector_holdoff_s
                 and self.detector.update(float(innovation) / math.sqrt(s)))
        if fired:
            self.forget()
        return fired

    def forget(self) -> None:
        """Fast forgetting on a workload shift: the level re-learns, the shape is mostly kept."""
        c = self.config
        if self._p is None:
            return
        shape_var = np.diag(self._p)[1:] * c.shape_keep ** 2 + c.shape_widen ** 2
        self._p = np.diag(np.concatenate([[max(float(self._p[0, 0]), c.shift_std ** 2)], shape_var]))
        self._x = np.concatenate([[self._x[0]], self._x[1:] * c.shape_keep])
        self.seconds.clear()
        self.detector.reset()
        self.since_forget_s_ = 0.0
        self._last_y = None

    def rebase(self, log_change: float) -> None:
        """The raw prediction the residual is relative to moved by `log_change` (a new live workload
        at a selection): keep the corrected level where the data put it."""
        self._x[0] -= log_change


class ResidualCorrection:
    """Throughput and GPU-power residuals, the workload-shift test that makes both forget."""

    def __init__(self, config: ResidualConfig | None = None) -> None:
        self.config = config if config is not None else ResidualConfig()
        self.throughput = ResidualFilter(self.config)
        self.power = ResidualFilter(self.config)
        self.workload_key: tuple[float, float] | None = None
        self.shifts_ = 0
        """Workload shifts detected (by lengths or by the innovations)."""

    # -- the old CapacityCorrection's reading API (throughput) ------------------------------------

    @property
    def seconds(self) -> dict[Configuration, float]:
        return self.throughput.seconds

    def pooled(self) -> float:
        return self.throughput.pooled()

    def factor(self, config: Configuration) -> float:
        return self.throughput.factor(config)

    def factors(self, configs: list[Configuration]) -> np.ndarray:
        return self.throughput.factors(configs)

    # -- learning ---------------------------------------------------------------------------------

    def note_workload(self, obs: Observation) -> bool:
        """Forget fast when the workload's mean lengths moved by more than `workload_shift`."""
        if obs.mean_prompt_tokens is None or obs.mean_output_tokens is None:
            return False
        key = (float(obs.mean_prompt_tokens), float(obs.mean_output_tokens))
        if self.workload_key is None:
            self.workload_key = key
            return False
        shift = self.config.workload_shift
        shifted = any(abs(a - b) > shift * max(b, 1.0) for a, b in zip(key, self.workload_key))
        # At the start the first requests to finish are the short ones: wait as the innovation test does.
        holdoff_s = self.config.length_holdoff_s if self.shifts_ else self.config.detector_holdoff_s
        settled = self.throughput.since_forget_s_ >= holdoff_s
        if shifted and not settled:
            # The first requests to finish are the short ones, and a shift takes a while to pass
            # through the batch: follow the lengths, but do not forget again while re-learning.
            self.workload_key = key
            return False
        if shifted:
            self.throughput.forget()
            self.power.forget()
            self.workload_key = key
            self.shifts_ += 1
        return shifted

    def record_throughput(self, config: Configuration, measured_tps: float, predicted_tps: float,
                          interval_s: float, rel_std: float) -> None:
        """A capacity-limited interval at `config`: measured vs raw predicted capacity."""
        if measured_tps <= 0 or predicted_tps <= 0:
            return
        if self.throughput.update(config, math.log(measured_tps / predicted_tps), interval_s, rel_std):
            self.shifts_ += 1

    def record_power(self, config: Configuration, measured_w: float, predicted_busy_w: float, idle_w: float,
                     utilisation: float, interval_s: float, rel_std: float) -> None:
        """Any interval at `config`: measured GPU power vs u x corrected-free busy + (1 - u) x idle."""
        u = min(max(utilisation, 0.0), 1.0)
        if measured_w <= 0 or predicted_busy_w <= 0 or u < 0.05:
            return
        # The residual scales busy power only: measured = u x g x busy + (1 - u) x idle, solved for g.
        busy_share_w = measured_w - (1.0 - u) * min(idle_w, predicted_busy_w)
        if busy_share_w <= 0:
            return
        y = math.log(busy_share_w / (u * predicted_busy_w))
        if self.power.update(config, y, interval_s, rel_std, noise_scale=1.0 / u ** 2):
            self.shifts_ += 1


@dataclass(frozen=True)
class _Compared:
    predicted_tokens: float
    measured_tokens: float
    predicted_gpu_j: float
    measured_gpu_j: float
    throughput_counted: bool


class PredictionError:
    """The corrected predictions made before each interval at the configuration in force, against what it measured.

    Throughput is compared on capacity-limited intervals only (otherwise the node delivers the
    demand, not the predicted capacity); power on every interval, against the power expected at
    the measured utilisation. Both are ratios of sums over the trailing `window_s` (one interval's
    throughput swings by 10-40 %), restarted when the configuration changes.
    """

    def __init__(self, window_s: float) -> None:
        self._window: TrailingWindow[_Compared] = TrailingWindow(window_s)
        self._config: Configuration | None = None

    def add(self, config: Configuration, interval_s: float, predicted_tps: float | None, measured_tps: float,
            predicted_gpu_w: float | None, measured_gpu_w: float) -> None:
        if config != self._config:
            self._window.clear()
            self._config = config
        counted = predicted_tps is not None
        self._window.add(interval_s, _Compared(
            (predicted_tps or 0.0) * interval_s, measured_tps * interval_s if counted else 0.0,
            (predicted_gpu_w or 0.0) * interval_s, measured_gpu_w * interval_s if predicted_gpu_w is not None else 0.0,
            counted))

    def error(self) -> tuple[float | None, float | None]:
        """(throughput, GPU power) relative error, (predicted - measured) / measured; None without data."""
        items = list(self._window.items())
        pred_t = sum(i.predicted_tokens for i in items)
        meas_t = sum(i.measured_tokens for i in items)
        pred_j = sum(i.predicted_gpu_j for i in items)
        meas_j = sum(i.measured_gpu_j for i in items)
        tps = (pred_t - meas_t) / meas_t if meas_t > 0 and any(i.throughput_counted for i in items) else None
        power = (pred_j - meas_j) / meas_j if meas_j > 0 else None
        return tps, power
