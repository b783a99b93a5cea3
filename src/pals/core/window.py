"""One trailing window over control intervals, shared by everything that averages over time.

Control intervals are short (500 ms: a dozen engine steps), so single-interval rates swing by
+-30 % for throughput and +-3-5 % for power at a fixed configuration. The QoS test, the budget
governor, the demand estimate and the burst estimate therefore all judge a mean over a trailing
span of whole intervals. The rule is the same for all of them: keep the newest intervals, and
drop the oldest while the rest still span `window_s`.
"""

from __future__ import annotations

import collections
from typing import Generic, Iterator, TypeVar

Item = TypeVar("Item")

_EPS_S = 1e-9
"""Slack on span comparisons (interval lengths are sums of floats)."""


class TrailingWindow(Generic[Item]):
    """Intervals (a duration plus whatever the caller keeps with it) over a trailing span.

    `add(duration_s, item)` appends one interval and drops the oldest while the others still
    cover `window_s`; `span_s` is the time the window covers now. Callers compute their own means
    over `items()` (tokens / seconds, energy / seconds, share of flagged intervals).
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = float(window_s)
        self._items: collections.deque[tuple[float, Item]] = collections.deque()
        self._span_s = 0.0

    def clear(self) -> None:
        self._items.clear()
        self._span_s = 0.0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def span_s(self) -> float:
        """Seconds the window covers now (less than `window_s` while it fills)."""
        return self._span_s

    def full(self, fraction: float = 1.0) -> bool:
        """True once the window covers at least `fraction` of `window_s`."""
        return self._span_s >= fraction * self.window_s - _EPS_S

    def add(self, duration_s: float, item: Item) -> None:
        """Append one interval and drop the oldest ones the rest no longer need."""
        self._items.append((float(duration_s), item))
        span_s = sum(d for d, _ in self._items)
        while len(self._items) > 1 and span_s - self._items[0][0] >= self.window_s - _EPS_S:
            span_s -= self._items.popleft()[0]
        self._span_s = span_s

    def items(self) -> Iterator[Item]:
        """The intervals' items, oldest first."""
        return (item for _, item in self._items)

    def durations(self) -> Iterator[float]:
        return (d for d, _ in self._items)

    def rate(self, values: Iterator[float] | None = None) -> float:
        """Sum of the items (or of `values`) over the span: a mean rate; 0 while empty."""
        if self._span_s <= 0:
            return 0.0
        total = sum(self.items() if values is None else values)  # type: ignore[arg-type]
        return total / self._span_s
