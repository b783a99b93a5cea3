"""Latency residuals learnt online: how far the latency model's TPOT and TTFT are off, per configuration and pooled.

The latency model (`pals.model.latency.LatencyPredictor`) is interpolated on one offline profile,
so its predicted p99 at a configuration is off by the profile's noise and by whatever the live
node does differently. With a latency SLO in force, the selection keeps candidates whose predicted
latency is at most the objective x (1 - margin): an uncorrected model needs a wide margin
(`ModelGuidedConfig.slo_margin`), one corrected by what the node measured a narrower one
(`ModelGuidedConfig.slo_margin_corrected`).

`LatencyResidual` learns log(measured / predicted) of TPOT and of TTFT at the SLO's quantile with
the throughput residual's filter (`residuals.ResidualFilter`: a pooled part shared by every
configuration plus each configuration's own part, a Kalman update per interval, shrunk towards 1
by their priors `LatencyResidualConfig.level_std` / `shape_std`), and its predictions are
multiplied by the learnt factor plus `spread_z` of its own uncertainty (`tpot_factors`,
`ttft_factors`): a configuration never run keeps a wider bound than one measured. An interval counts only when:

- the configuration has been in force for `settle_s` (the node's latency figures cover a trailing
  window: before that they still show the configuration it left);
- the node ran at capacity (full batches with requests waiting): the profile was taken at
  saturation, so that is the condition the model predicts. A batch filled only in part runs faster
  than the model says, and learning that would loosen the bound just before the load rises.

It forgets fast on a workload shift (the policy passes `ResidualCorrection.note_workload`'s
answer to `forget`, and the filter's own one-sided-innovation test fires on a level step). The
factor never falls below `min_factor`: however good the data look, the bound is loosened at most
that far below the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from pals.control.policies.residuals import ResidualConfig, ResidualFilter
from pals.control.slo import Slo
from pals.control.types import Configuration, Observation
from pals.errors import ConfigError


@dataclass(frozen=True)
class LatencyResidualConfig:
    """Knobs of the online latency residual (log-space standard deviations unless named otherwise)."""

    level_std: float = 0.05
    """Prior std of the pooled residual: the model is taken as right to about this before data say otherwise."""
    shape_std: float = 0.1
    """Prior std of a configuration's own residual: a profile's latency is off by up to ~15 % from one
    point to the next (one 30 s window's p99), so what one configuration measured mostly stays its own
    and an unvisited configuration's bound is about this much tighter than its prediction."""
    noise_prior: float = 0.05
    """Observation noise (std of one interval's log ratio) assumed before it is measured: a window's
    p99 moves by a few percent from one interval to the next."""
    min_factor: float = 0.9
    """Lowest correction factor: the learnt residual never loosens the bound further than this."""
    max_factor: float = 3.0
    """Highest correction factor (a sanity bound: the SLO mask then drops everything near the objective)."""
    settle_s: float = 30.0
    """Time at a configuration before its latency counts (the node's latency window:
    `SimNode.latency_window_s`). Units: s."""
    spread_z: float = 1.0
    """The factor applied is exp(mean + this x std) of the learnt log residual at each configuration: an
    unvisited one carries its own prior (`shape_std`) on top of the pooled level's uncertainty, so the
    bound is tighter where nothing was measured."""
    min_learnt_s: float = 10.0
    """Seconds of counted intervals since the last shift before the correction is trusted
    (`trusted`): until then the selection keeps the uncorrected margin. Units: s."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"LatencyResidualConfig.{f.name} must be a finite number >= 0, got {value!r}")
        if not 0 < self.min_factor <= 1 <= self.max_factor:
            raise ConfigError("LatencyResidualConfig min_factor / max_factor must bracket 1 (0 < min_factor <= 1 <= max_factor)")
        if self.noise_prior <= 0:
            raise ConfigError("LatencyResidualConfig.noise_prior must be > 0")

    def filter_config(self) -> ResidualConfig:
        """The residual filter's knobs for latency (the rest as the throughput residual's)."""
        return ResidualConfig(level_floor=self.level_std, shape_floor=self.shape_std, noise_prior=self.noise_prior,
                              factor_min=self.min_factor, factor_max=self.max_factor)


class LatencyResidual:
    """measured / predicted latency at the SLO's quantile, learnt per configuration and pooled (module docstring)."""

    def __init__(self, config: LatencyResidualConfig | None = None) -> None:
        self.config = config if config is not None else LatencyResidualConfig()
        self.reset()

    def reset(self) -> None:
        self.tpot = ResidualFilter(self.config.filter_config())
        self.ttft = ResidualFilter(self.config.filter_config())
        self.in_force_: Configuration | None = None
        self.in_force_s_ = 0.0
        """Seconds the configuration in force has held."""
        self.learnt_s_ = 0.0
        """Seconds of counted intervals since the start or the last shift."""
        self.shifts_ = 0
        """Times the residual was forgotten (workload shifts, detector firings)."""

    def forget(self) -> None:
        """A workload shift: both levels re-learn from their priors' width; what the data said of the shape mostly stays."""
        self.tpot.forget()
        self.ttft.forget()
        self.learnt_s_ = 0.0
        self.shifts_ += 1

    def observe(self, config: Configuration, obs: Observation, slo: Slo | None, model: Any,
                capacity_limited: bool) -> bool:
        """Learn from one interval at `config` (the configuration in force); True when it counted."""
        if config != self.in_force_:
            self.in_force_, self.in_force_s_ = config, 0.0
        self.in_force_s_ += obs.interval_s
        if slo is None or model is None or not capacity_limited or self.in_force_s_ < self.config.settle_s:
            return False
        pred = model.predict(np.array([config.power_cap_w]), np.array([config.batch_cap]), slo.quantile)
        counted = False
        for learnt, summary, predicted in ((self.tpot, obs.tpot, pred.tpot_s), (self.ttft, obs.ttft, pred.ttft_s)):
            measured = None if summary is None or not summary.count else summary.quantile_s(slo.quantile)
            predicted_s = float(np.asarray(predicted, dtype=float).ravel()[0])
            if measured is None or not (measured > 0 and math.isfinite(predicted_s) and predicted_s > 0):
                continue
            if learnt.update(config, math.log(measured / predicted_s), obs.interval_s, 0.0):
                self.shifts_ += 1
            counted = True
        if counted:
            self.learnt_s_ += obs.interval_s
        return counted

    @property
    def trusted(self) -> bool:
        """Enough counted data since the last shift for the narrower margin."""
        return self.learnt_s_ >= self.config.min_learnt_s

    def tpot_factors(self, configs: list[Configuration]) -> np.ndarray:
        """Per configuration, the factor on the model's predicted TPOT: exp(mean + `spread_z` x std), bounded."""
        return self._upper(self.tpot, configs)

    def ttft_factors(self, configs: list[Configuration]) -> np.ndarray:
        """Per configuration, the factor on the model's predicted TTFT: exp(mean + `spread_z` x std), bounded."""
        return self._upper(self.ttft, configs)

    def _upper(self, learnt: ResidualFilter, configs: list[Configuration]) -> np.ndarray:
        c = self.config
        low, high = math.log(c.min_factor), math.log(c.max_factor)
        return np.array([math.exp(min(max(math.log(learnt.factor(cfg)) + c.spread_z * _log_std(learnt, cfg), low), high))
                         for cfg in configs])

    def logged(self, config: Configuration) -> dict[str, float | None]:
        """The factors at `config` for the decision log."""
        return {"latency_factor_tpot": round(self.tpot.factor(config), 4),
                "latency_factor_ttft": round(self.ttft.factor(config), 4),
                "latency_learnt_s": round(self.learnt_s_, 1)}


def _log_std(learnt: ResidualFilter, config: Configuration) -> float:
    """Std of the learnt log residual r + d_c at `config` (r's alone plus the shape prior where `config` was never seen)."""
    p = learnt._p  # the filter's covariance over [r, d_1, ...] (None before any prior)
    shape_var = learnt.config.shape_floor ** 2
    if p is None:
        return math.sqrt(learnt.config.level_floor ** 2 + shape_var)
    i = learnt._index.get(config)
    var = float(p[0, 0]) + shape_var if i is None else float(p[0, 0] + p[i, i] + 2.0 * p[0, i])
    return math.sqrt(max(var, 0.0))
