"""Per-configuration latency (TPOT and TTFT) learnt from a profile's latency columns.

`LatencyPredictor().fit(profile)` reads `tpot_p50_s`, `tpot_p99_s`, `ttft_p50_s`, `ttft_p99_s`
of every row; `predict(power_cap_w, batch_cap, quantile)` gives each candidate's predicted TPOT
and TTFT at that quantile. Policies take it as their `latency_model` and drop candidates predicted
to break the latency SLO (`pals.control.policies.selection.slo_mask`).

Why an interpolation on the profile grid rather than a forest: a profile measures latency on a
small grid (the paper's: 6 caps x 6 batches for one deployment), the candidates are that grid (plus
the budget's cap bound), and latency moves smoothly and monotonically with the knobs. A forest on
36 points predicts steps and may rank two neighbouring batches the wrong way round on noise, which
for an SLO bound is the one thing that matters; interpolation reproduces the measured points and
keeps the physics' order. So, per quantity and quantile:

- log latency on the grid of caps x log2(batch caps) (several rows of one point, e.g. several
  workloads, are averaged in log space; a missing cell is interpolated along its cap's batches);
- TPOT made monotone: non-decreasing in the batch cap (more sequences per step) and non-increasing
  in the power cap (a lower cap slows every step), by the mean of the upper and lower monotone
  envelopes; TTFT is left as measured (at a saturating profile it is mostly queueing);
- bilinear interpolation in (cap, log2 batch); outside the grid the batch is clamped, and a cap
  below the lowest profiled cap extrapolates the lowest two caps' slope upward only (latency never
  predicted lower than at the lowest cap measured), above the highest it is clamped.

p90 is not in profiles: it is log-interpolated between p50 and p99 at the lognormal's weight
z(0.9)/z(0.99) = 0.551. Profiles are taken at saturation (full batches), so predicted TPOT is what
a full batch gives: at a lighter load batches run partly full and faster, so the bound is
conservative. The profile's deployment (tp, ep) is the one predicted; it is checked on `fit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pals.errors import ProfileError

P90_WEIGHT = 1.2815515655446004 / 2.3263478740408408
"""Where p90 sits between log p50 (0) and log p99 (1) for a lognormal: z(0.9) / z(0.99)."""
QUANTITIES = ("tpot", "ttft")


@dataclass(frozen=True)
class LatencyPrediction:
    """Predicted latency per candidate (arrays aligned with the query)."""

    tpot_s: np.ndarray
    """Time per output token at the quantile (NaN where the profile has none). Units: s."""
    ttft_s: np.ndarray
    """Time to first token at the quantile (NaN where the profile has none). Units: s."""


@dataclass(frozen=True)
class _Grid:
    """Log latency of one quantity and quantile on caps x log2(batches)."""

    caps_w: np.ndarray
    log2_batches: np.ndarray
    log_s: np.ndarray
    """Shape (len(caps_w), len(log2_batches))."""

    def predict_log(self, cap_w: np.ndarray, batch: np.ndarray) -> np.ndarray:
        lb = np.clip(np.log2(np.maximum(batch, 1)), self.log2_batches[0], self.log2_batches[-1])
        per_cap = np.stack([np.interp(lb, self.log2_batches, row) for row in self.log_s])  # (caps, n)
        if len(self.caps_w) == 1:
            return per_cap[0]
        clamped = np.clip(cap_w, self.caps_w[0], self.caps_w[-1])
        out = np.array([np.interp(c, self.caps_w, per_cap[:, i]) for i, c in enumerate(clamped)])
        below = cap_w < self.caps_w[0]
        if below.any():
            slope = (per_cap[1] - per_cap[0]) / (self.caps_w[1] - self.caps_w[0])  # per W, usually < 0
            out = np.where(below, per_cap[0] + np.minimum(slope, 0.0) * (cap_w - self.caps_w[0]), out)
        return out


def _monotone_increasing(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the upper and lower non-decreasing envelopes along `axis`."""
    upper = np.maximum.accumulate(values, axis=axis)
    lower = np.flip(np.minimum.accumulate(np.flip(values, axis=axis), axis=axis), axis=axis)
    return 0.5 * (upper + lower)


class LatencyPredictor:
    """TPOT and TTFT per configuration from a profile (see the module docstring). Fit, then predict."""

    def __init__(self) -> None:
        self.grids_: dict[tuple[str, str], _Grid] = {}
        """(quantity, "p50" or "p99") -> its grid; absent when the profile has no such column."""
        self.deployment_: dict | None = None

    def fit(self, profile) -> "LatencyPredictor":
        """Learn from a `pals.model.profile.Profile`; raise `ProfileError` when it has no latency."""
        caps = profile.column("power_cap_w")
        batches = profile.column("batch_cap")
        self.grids_ = {}
        for quantity in QUANTITIES:
            for q in ("p50", "p99"):
                # A missing column reads as NaN (`Profile.column`): no grid for it.
                grid = _fit_grid(caps, batches, profile.column(f"{quantity}_{q}_s"), monotone=quantity == "tpot")
                if grid is not None:
                    self.grids_[(quantity, q)] = grid
        if not self.grids_:
            where = getattr(profile, "path", None) or "the profile"
            raise ProfileError(f"{where}: no latency columns (tpot_p50_s, tpot_p99_s, ttft_p50_s, ttft_p99_s) "
                               "with values; re-profile with `pals profile` to learn latency")
        self.deployment_ = {"tp": profile.tp, "ep": profile.ep, "num_gpus": profile.num_gpus}
        return self

    def predict(self, power_cap_w, batch_cap, quantile: float = 0.99) -> LatencyPrediction:
        """Predicted TPOT and TTFT at `quantile` (0.5, 0.9 or 0.99) for each (cap, batch)."""
        if not self.grids_:
            raise ProfileError("LatencyPredictor: call fit(profile) before predict")
        cap = np.atleast_1d(np.asarray(power_cap_w, dtype=float))
        batch = np.atleast_1d(np.asarray(batch_cap, dtype=float))
        cap, batch = np.broadcast_arrays(cap, batch)
        return LatencyPrediction(*(self._quantity(k, cap, batch, quantile) for k in QUANTITIES))

    def _quantity(self, quantity: str, cap: np.ndarray, batch: np.ndarray, quantile: float) -> np.ndarray:
        logs = {q: self.grids_[(quantity, q)].predict_log(cap, batch)
                for q in ("p50", "p99") if (quantity, q) in self.grids_}
        if quantile == 0.5 and "p50" in logs:
            return np.exp(logs["p50"])
        if quantile == 0.99 and "p99" in logs:
            return np.exp(logs["p99"])
        if quantile == 0.9 and len(logs) == 2:
            return np.exp(logs["p50"] + P90_WEIGHT * (logs["p99"] - logs["p50"]))
        return np.full(cap.shape, math.nan)


def _fit_grid(caps: np.ndarray, batches: np.ndarray, values: np.ndarray, monotone: bool) -> _Grid | None:
    ok = np.isfinite(values) & (values > 0) & np.isfinite(caps) & (batches >= 1)
    if not ok.any():
        return None
    cap_axis = np.unique(caps[ok])
    batch_axis = np.unique(batches[ok])
    log2b = np.log2(batch_axis)
    table = np.full((len(cap_axis), len(batch_axis)), np.nan)
    for i, c in enumerate(cap_axis):
        for j, b in enumerate(batch_axis):
            cell = ok & (caps == c) & (batches == b)
            if cell.any():
                table[i, j] = float(np.mean(np.log(values[cell])))
        known = np.isfinite(table[i])
        table[i] = np.interp(log2b, log2b[known], table[i][known])  # missing cells along the row
    if monotone:
        for _ in range(2):  # batch up: slower; cap up: faster
            table = _monotone_increasing(table, axis=1)
            table = -_monotone_increasing(-table, axis=0)
    return _Grid(cap_axis, log2b, table)
