"""What a model-guided policy learns from the intervals it observes, one small class each.

Each estimator has an `update(...)` fed once per interval and a read method; the trailing ones
share `pals.core.window.TrailingWindow`. Their knobs live in `ModelGuidedConfig`.

- `WarmUp`: node time since the first observation (nothing is learnt while batches fill).
- `Backlog`: consecutive intervals with requests waiting; with `capacity_limited`, the test of
  whether an interval showed the node's capacity.
- `IdlePower`: idle-with-context GPU power, learnt from intervals in which nothing ran.
- `DemandEstimate`: the offered load (mean delivered throughput while not backlogged).
- `BurstEstimate`: the throughput's coefficient of variation over QoS-window-long spans.
- `CapacityCorrection`: measured / predicted capacity of visited configurations (superseded in
  the policies by `residuals.ResidualCorrection`; kept for its unit test until that moves).
- `PowerBias`: measured minus (corrected) predicted power at the configuration in force.
- `DwellThroughput`: throughput since the configuration in force was applied (the PID's input).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pals.control.policies.interface import capacity_limited
from pals.control.types import Configuration, Observation
from pals.core.window import TrailingWindow

_EPS_S = 1e-9
"""Slack on comparisons of sums of interval lengths."""


class WarmUp:
    """Node time since the policy's first observation: warm once `warmup_s` has passed."""

    def __init__(self, warmup_s: float) -> None:
        self.warmup_s = warmup_s
        self.first_obs_time_s_: float | None = None

    def update(self, obs: Observation) -> None:
        if self.first_obs_time_s_ is None:
            self.first_obs_time_s_ = obs.time_s - obs.interval_s

    def warm(self, obs: Observation) -> bool:
        """True once `warmup_s` of node time has passed since the first observation's start."""
        return self.first_obs_time_s_ is not None and obs.time_s - self.first_obs_time_s_ >= self.warmup_s - _EPS_S


class Backlog:
    """Consecutive intervals with requests waiting, and the capacity-limited test built on it."""

    def __init__(self, backlog_intervals: int, full_batch_fraction: float) -> None:
        self.backlog_intervals = backlog_intervals
        self.full_batch_fraction = full_batch_fraction
        self.run_ = 0

    def update(self, obs: Observation) -> None:
        self.run_ = self.run_ + 1 if obs.requests_waiting > 0 else 0

    def capacity_limited(self, obs: Observation, replicas: int) -> bool:
        """The interval ran at capacity: batch full with requests waiting, or a sustained queue
        (a batch held below its cap by KV-cache memory)."""
        return capacity_limited(obs, replicas, self.full_batch_fraction) or (
            obs.requests_waiting > 0 and self.run_ >= self.backlog_intervals
        )


class IdlePower:
    """Idle-with-context power per GPU: an EMA over intervals in which nothing ran, else a default."""

    def __init__(self, smoothing: float, fraction_of_min_cap: float) -> None:
        self.smoothing = smoothing
        self.fraction_of_min_cap = fraction_of_min_cap
        self.learnt_w_: float | None = None

    def update(self, obs: Observation, num_gpus: int) -> None:
        if obs.requests_running == 0 and obs.requests_waiting == 0 and obs.generated_tokens == 0:
            per_gpu_w = obs.gpu_power_w / max(num_gpus, 1)
            prev = self.learnt_w_
            self.learnt_w_ = per_gpu_w if prev is None else (1.0 - self.smoothing) * prev + self.smoothing * per_gpu_w

    def per_gpu_w(self, power_cap_min_w: float) -> float:
        """Learnt, else `fraction_of_min_cap` x the GPU's lowest settable cap. Units: W."""
        if self.learnt_w_ is not None:
            return self.learnt_w_
        return self.fraction_of_min_cap * power_cap_min_w


@dataclass(frozen=True)
class LevelChange:
    """A test of whether a throughput window's last `recent_s` departs from the rest beyond Poisson noise.

    Why: a trailing mean over `demand_window_s` follows a step of the offered load only as the step fills
    the window (tens of seconds), and until then the selection sizes for a load that is gone. Requests
    arrive as a Poisson process, so the output tokens delivered over T seconds at a rate r spread by about
    sqrt(r x L_eff / T) (L_eff = `length_factor` x the mean output length: a request's tokens arrive
    together, and lengths vary). Two parts of the window whose rates differ by more than `z` of that
    spread (their two spreads added in quadrature) carry different loads.
    """

    recent_s: float
    """Span of the recent part; the older part must span at least as much. Units: s."""
    z: float
    """Departure, in standard errors, that counts as a change."""
    length_factor: float = 2.0
    """L_eff over the mean output length: 1 + the squared CV of output lengths (2 allows a CV of 1)."""

    def recent_count(self, durations_s: list[float], tokens: list[float],
                     mean_output_tokens: float | None) -> int | None:
        """How many of the newest intervals form the part after a change, when there is one; else None.

        Splits are tried at every `recent_s` step back from the newest interval (both parts at least
        `recent_s` long); the most significant split above `z` wins. A change some seconds back shows best
        at its own split: against a fixed recent span it would be diluted by the rest."""
        if mean_output_tokens is None or not mean_output_tokens > 0:
            return None
        total_s, total_tokens = sum(durations_s), sum(tokens)
        best: tuple[float, int] | None = None
        recent_s = recent_tokens = 0.0
        goal_s = self.recent_s
        for count, (d, t) in enumerate(zip(reversed(durations_s), reversed(tokens)), start=1):
            recent_s += d
            recent_tokens += t
            if recent_s < goal_s - _EPS_S:
                continue
            goal_s += self.recent_s
            older_s = total_s - recent_s
            if older_s < self.recent_s - _EPS_S:
                break
            spread_tps = math.sqrt(max(total_tokens / total_s, 0.0) * self.length_factor * mean_output_tokens
                                   * (1.0 / recent_s + 1.0 / older_s))
            departure = abs(recent_tokens / recent_s - (total_tokens - recent_tokens) / older_s) / max(spread_tps, 1e-9)
            if departure > self.z and (best is None or departure > best[0]):
                best = (departure, count)
        return None if best is None else best[1]


class DemandEstimate:
    """The offered load: mean delivered throughput over the trailing `window_s`.

    Unknown (`tps_` None: treated as at least every capacity, the saturated objective) when the
    node was backlogged over more than `backlogged_max` of the window, and not estimated before
    the window covers `min_fill` of its span (the previous estimate stands). With a `change` test, a level
    change of the load (`LevelChange`) drops the part of the window before it: the estimate restarts from
    the part after it at once, and the window fills again from there.
    """

    def __init__(self, window_s: float, min_fill: float, backlogged_max: float, shift: float,
                 change: LevelChange | None = None) -> None:
        self.min_fill = min_fill
        self.backlogged_max = backlogged_max
        self.shift = shift
        self.change = change
        self._window: TrailingWindow[tuple[float, bool]] = TrailingWindow(window_s)
        self.changed_ = False
        """True from a detected level change (`LevelChange`) until the next selection."""
        self.just_changed_ = False
        """True after the update that detected a level change, until the next update."""
        self.tps_: float | None = None
        self.seen_ = False
        """True once an estimate was made (even 'saturated')."""
        self.first_ = False
        """True from the first estimate until the next selection."""
        self.matured_ = False
        """True from the moment the window first covers its whole span until the next selection:
        the first estimate rests on `min_fill` of the window (over 15 s, Poisson arrivals put it
        10-15 % off the mean), so the selection runs once more on the full window."""
        self._full_once = False
        self.at_select_: float | None = None
        """The estimate the last selection used."""

    def update(self, tokens: float, interval_s: float, backlogged: bool,
               mean_output_tokens: float | None = None) -> None:
        self._window.add(interval_s, (tokens, backlogged))
        self.just_changed_ = False
        if self.change is not None and self._restart_on_change(mean_output_tokens):
            self.just_changed_ = True
            return
        span_s = self._window.span_s
        backlogged_s = sum(d for d, (_, b) in zip(self._window.durations(), self._window.items()) if b)
        if not self._window.full(self.min_fill):
            return  # too little data yet: keep the previous estimate
        if not self.seen_:
            self.first_ = True  # the first estimate: re-select without the no-estimate headroom
        self.seen_ = True
        if not self._full_once and self._window.full():
            self._full_once = self.matured_ = True
        if backlogged_s > self.backlogged_max * span_s:
            self.tps_ = None  # demand >= capacity: saturated objective
        else:
            self.tps_ = self._window.rate(t for t, _ in self._window.items())

    def _restart_on_change(self, mean_output_tokens: float | None) -> bool:
        """When the window's recent part departs from its older part beyond noise, forget the older part
        and estimate from the recent one alone (True: the estimate was set here)."""
        durations, items = list(self._window.durations()), list(self._window.items())
        keep = self.change.recent_count(durations, [t for t, _ in items], mean_output_tokens)
        if keep is None:
            return False
        recent = list(zip(durations, items))[-keep:]
        self._window.clear()
        for d, item in recent:
            self._window.add(d, item)
        backlogged_s = sum(d for d, (_, b) in recent if b)
        span_s = self._window.span_s
        saturated = backlogged_s > self.backlogged_max * span_s
        self.tps_ = None if saturated else self._window.rate(t for t, _ in self._window.items())
        self.seen_ = self.changed_ = True
        self._full_once = False  # re-select once more when the window is full again
        return True

    def moved(self) -> bool:
        """The estimate moved by more than `shift` (or appeared, or vanished) since the last selection."""
        now, then = self.tps_, self.at_select_
        if now is None and then is None:
            return False
        if now is None or then is None:
            return True
        return abs(now - then) > self.shift * max(then, 1e-9)

    def describe_move(self) -> str:
        def fmt(v: float | None) -> str:
            return "saturated" if v is None else f"{v:.0f} tok/s"

        return f"demand {fmt(self.at_select_)} -> {fmt(self.tps_)}"

    def mark_selected(self) -> None:
        """A selection used the current estimate."""
        self.at_select_ = self.tps_
        self.first_ = False
        self.matured_ = False
        self.changed_ = False


class BurstEstimate:
    """Capacity headroom above the demand for its bursts: `z` x the throughput's CV over a QoS window.

    Poisson arrivals make the offered load over a QoS window swing by 10-20 % around its mean; a
    configuration whose capacity covers only the mean queues at every upward swing, and with
    requests waiting the trailing throughput of a lull counts as a violation. The spread of the
    delivered throughput over rolling windows of `window_s` across the last `history_s` measures
    that swing.
    """

    def __init__(self, z: float, window_s: float, history_s: float, min_windows: float, prior_s: float,
                 prior_cv: float, shift: float) -> None:
        self.z = z
        self.window_s = window_s
        self.min_windows = min_windows
        self.prior_s = prior_s
        self.prior_cv = prior_cv
        self.shift = shift
        self._history: TrailingWindow[float] = TrailingWindow(history_s)
        self.cv_: float | None = None
        self.at_select_ = 0.0
        """The headroom the last selection used."""

    def update(self, obs: Observation) -> None:
        self._history.add(obs.interval_s, obs.generated_tokens)
        span_s = self._history.span_s
        if span_s < self.min_windows * self.window_s - _EPS_S:
            return
        tokens = np.array(list(self._history.items()), dtype=float)
        seconds = np.array(list(self._history.durations()), dtype=float)
        per = max(1, int(round(self.window_s / max(float(np.median(seconds)), 1e-9))))
        if len(tokens) < per + 2:
            return
        kernel = np.ones(per)
        rates = np.convolve(tokens, kernel, mode="valid") / np.convolve(seconds, kernel, mode="valid")
        mean = float(rates.mean())
        measured = float(rates.std() / mean) if mean > 0 else 0.0
        # Sixty seconds hold only a dozen independent windows: shrink towards the prior with a
        # weight of `prior_s` seconds of data, so the headroom (and the choice) does not wander
        # with the estimate's own noise.
        self.cv_ = (span_s * measured + self.prior_s * self.prior_cv) / (span_s + self.prior_s)

    def restart(self) -> None:
        """Forget the history: the load changed level, and the spread across the change is no burst."""
        self._history.clear()
        self.cv_ = None

    def margin(self) -> float:
        """The headroom, as a fraction of the demand (`prior_cv` until a CV is measured)."""
        return self.z * (self.prior_cv if self.cv_ is None else self.cv_)

    def moved(self) -> bool:
        """The headroom moved by more than `shift` since the last selection."""
        return abs(self.margin() - self.at_select_) > self.shift

    def mark_selected(self) -> None:
        self.at_select_ = self.margin()


@dataclass
class CapacityCorrection:
    """Measured vs predicted throughput of visited configurations, under the current workload.

    Delivered throughput at a fixed configuration swings by 10-40 % over seconds (prefill bursts,
    long outputs finishing together), so a ratio learnt from one window is mostly noise. The memory
    therefore accumulates tokens over every capacity-limited interval spent at a configuration and
    shrinks the ratio towards the pooled ratio of all visited configurations (and that towards 1)
    with a prior worth `prior_s` seconds of data, clamped to [`ratio_min`, `ratio_max`].
    """

    prior_s: float
    ratio_min: float
    ratio_max: float
    workload_shift: float
    """Forget everything when the workload's mean lengths move by more than this fraction."""
    measured: dict[Configuration, float] = field(default_factory=dict)
    predicted: dict[Configuration, float] = field(default_factory=dict)
    seconds: dict[Configuration, float] = field(default_factory=dict)
    workload_key: tuple[float, float] | None = None

    def clear(self) -> None:
        self.measured.clear()
        self.predicted.clear()
        self.seconds.clear()

    def note_workload(self, obs: Observation) -> bool:
        """Forget everything when the workload's mean lengths moved by more than `workload_shift`."""
        if obs.mean_prompt_tokens is None or obs.mean_output_tokens is None:
            return False
        key = (obs.mean_prompt_tokens, obs.mean_output_tokens)
        if self.workload_key is None:
            self.workload_key = key
            return False
        shifted = any(abs(a - b) > self.workload_shift * max(b, 1.0) for a, b in zip(key, self.workload_key))
        if shifted:
            self.clear()
            self.workload_key = key
        return shifted

    def record(self, config: Configuration, measured_tokens: float, predicted_tps: float, seconds: float) -> None:
        self.measured[config] = self.measured.get(config, 0.0) + measured_tokens
        self.predicted[config] = self.predicted.get(config, 0.0) + predicted_tps * seconds
        self.seconds[config] = self.seconds.get(config, 0.0) + seconds

    def _clamp(self, ratio: float) -> float:
        return min(max(ratio, self.ratio_min), self.ratio_max)

    def pooled(self) -> float:
        """The ratio over every visited configuration (1 before any)."""
        total_s = sum(self.seconds.values())
        if total_s <= 0:
            return 1.0
        mean_pred_tps = sum(self.predicted.values()) / total_s
        prior = self.prior_s * mean_pred_tps
        return self._clamp((sum(self.measured.values()) + prior) / (sum(self.predicted.values()) + prior))

    def factor(self, config: Configuration, pooled: float | None = None) -> float:
        """The correction for `config`: its own ratio shrunk towards the pooled one."""
        pooled = self.pooled() if pooled is None else pooled
        seconds = self.seconds.get(config, 0.0)
        if seconds <= 0:
            return pooled
        pred_tps = self.predicted[config] / seconds
        prior = self.prior_s * pred_tps
        return self._clamp((self.measured[config] + pooled * prior) / (self.predicted[config] + prior))

    def factors(self, configs: list[Configuration]) -> np.ndarray:
        """`factor` of each configuration, against one pooled ratio."""
        pooled = self.pooled()
        return np.array([self.factor(cfg, pooled) for cfg in configs])


class PowerBias:
    """Measured minus predicted power at the configuration in force (in the budget's kind): an EMA.

    Added to every candidate's predicted power when testing it against the budget.
    """

    def __init__(self, smoothing: float, floor_frac: float) -> None:
        self.smoothing = smoothing
        self.floor_frac = floor_frac
        self.bias_w_ = 0.0

    def update(self, measured_w: float, predicted_w: float, budget_w: float) -> None:
        bias_w = measured_w - predicted_w
        self.bias_w_ = (1.0 - self.smoothing) * self.bias_w_ + self.smoothing * max(bias_w, -self.floor_frac * budget_w)


class DwellThroughput:
    """Throughput over the last `max_intervals` intervals at the configuration in force.

    None until `min_intervals` were seen (shorter windows are mostly noise). The caller clears it
    on a change and during the warm-up.
    """

    def __init__(self, max_intervals: int, min_intervals: int) -> None:
        self.min_intervals = min_intervals
        self._window: TrailingWindow[tuple[float, bool]] = TrailingWindow(math.inf, max_items=max_intervals)

    def clear(self) -> None:
        self._window.clear()

    def add(self, tokens: float, interval_s: float, capacity_limited: bool) -> None:
        self._window.add(interval_s, (tokens, capacity_limited))

    def tps(self) -> float | None:
        if len(self._window) < self.min_intervals:
            return None
        tokens = sum(t for t, _ in self._window.items())
        seconds = sum(self._window.durations())
        return tokens / seconds if seconds > 0 else None

    def limited_share(self) -> float:
        """Share of the window's intervals that were capacity-limited."""
        return sum(1 for _, b in self._window.items() if b) / max(len(self._window), 1)
