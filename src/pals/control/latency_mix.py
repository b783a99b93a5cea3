"""Run-level latency percentiles from the per-interval ones the decision log keeps.

A node reports TPOT and TTFT as a few percentiles (p50, p90, p99) over its recent window, not
request by request, so a run's p99 cannot be read off exactly. `LatencyMix` estimates it as the
quantile of the mixture of the intervals' distributions, each interval weighted by the requests its
percentiles cover: each interval's distribution is taken as the piecewise-linear CDF through
(0, 0), (p50, 0.5), (p90, 0.9), (p99, 0.99) and (p99 + (p99 - p90), 1) (without a p90, the p50
stands in for it in the tail knot). A run held at one configuration thus reports its intervals'
typical p99; a run whose intervals differ reports the p99 of them pooled. Windows that overlap
(the simulator's 30 s window over 0.5 s intervals) count a request in several intervals, evenly
over a steady run, which leaves the pooled quantile as it is. Where the node keeps every request's
latency (the simulator's `request_stats()`), that gives the exact figure.

Memory is bounded: every interval up to `LATENCY_RESERVOIR` of them, then a uniform reservoir.
"""

from __future__ import annotations

import random

import numpy as np

LATENCY_RESERVOIR = 10_000
"""Intervals kept for the run-level estimate (then a uniform sample of this size)."""
_LEVELS = np.array([0.0, 0.5, 0.9, 0.99, 1.0])
"""CDF levels at the knots of each interval's distribution."""


class LatencyMix:
    """Per-interval (p50, p90, p99, count) rows, and the pooled quantile (see the module docstring)."""

    def __init__(self, size: int = LATENCY_RESERVOIR, seed: int = 0) -> None:
        self.size = size
        self.rows: list[tuple[float, float, float, float, float]] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, p50_s: float | None, p90_s: float | None, p99_s: float | None, count: int | None) -> None:
        """Fold in one interval's percentiles (ignored when p50 or p99 is missing or nothing was counted)."""
        if p50_s is None or p99_s is None or not count or count <= 0:
            return
        p90 = p50_s if p90_s is None else p90_s
        knots = np.maximum.accumulate([0.0, p50_s, p90, p99_s, p99_s + max(p99_s - p90, 0.0)])
        row = (float(knots[1]), float(knots[2]), float(knots[3]), float(knots[4]), float(count))
        self.seen += 1
        if len(self.rows) < self.size:
            self.rows.append(row)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.rows[slot] = row

    def quantile_s(self, q: float) -> float | None:
        """The pooled `q` quantile (0 < q < 1); None without any interval. Units: s."""
        if not self.rows:
            return None
        table = np.asarray(self.rows)
        knots = np.column_stack([np.zeros(len(table)), table[:, :4]])
        weights = table[:, 4] / table[:, 4].sum()
        lo, hi = 0.0, float(knots[:, -1].max())
        for _ in range(60):  # bisection on the pooled CDF (monotone in x)
            mid = 0.5 * (lo + hi)
            if _pooled_cdf(mid, knots, weights) < q:
                lo = mid
            else:
                hi = mid
        return hi


def _pooled_cdf(x: float, knots: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean over intervals of each one's piecewise-linear CDF at `x`."""
    total = np.zeros(len(knots))
    for j in range(len(_LEVELS) - 1):
        lo, hi = knots[:, j], knots[:, j + 1]
        width = hi - lo
        frac = np.where(width > 0, np.clip((x - lo) / np.where(width > 0, width, 1.0), 0.0, 1.0), (x >= hi) * 1.0)
        total += (_LEVELS[j + 1] - _LEVELS[j]) * frac
    return float(np.dot(weights, total))
