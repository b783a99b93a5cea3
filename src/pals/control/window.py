"""Trailing-window mean power: the power counterpart of the QoS throughput window.

Interval power at a fixed cap swings by +-3-5 % (sd) from one 500 ms interval to the next (the mix
of prefill and decode steps in a dozen engine steps), uncorrelated between intervals, just as
single-interval throughput does (`pals.control.qos`). Power against a budget is therefore judged,
and governed, on the mean over the same trailing window as throughput (`DEFAULT_QOS_WINDOW_S`):
interval energy summed over the window, divided by its duration.
"""

from __future__ import annotations

from pals.control.qos import DEFAULT_QOS_WINDOW_S
from pals.core.window import TrailingWindow


class TrailingMeanPower:
    """Mean power over the trailing `window_s` of intervals (energy / duration).

    The window holds whole intervals: the oldest is dropped while the rest still span `window_s`.
    `clear()` restarts it (a new budget is judged only on power drawn since it was set). Energy
    and span are running sums (added on arrival, subtracted on eviction), as they have always
    been: every budget figure and governor step was validated with that arithmetic.
    """

    def __init__(self, window_s: float = DEFAULT_QOS_WINDOW_S) -> None:
        self.window_s = window_s
        self._energy: TrailingWindow[float] = TrailingWindow(window_s, running_span=True)
        self._energy_j = 0.0

    def clear(self) -> None:
        self._energy.clear()
        self._energy_j = 0.0

    @property
    def span_s(self) -> float:
        """Seconds the window covers now (less than `window_s` after a restart)."""
        return self._energy.span_s

    def add(self, power_w: float, interval_s: float) -> float:
        """Fold in one interval's mean power; return the window's mean power in W."""
        energy_j = power_w * interval_s
        self._energy_j += energy_j
        for dropped_j in self._energy.add(interval_s, energy_j):
            self._energy_j -= dropped_j
        return self.mean_w()

    def mean_w(self) -> float:
        span_s = self._energy.span_s
        return self._energy_j / span_s if span_s > 0 else 0.0
