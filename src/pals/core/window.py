"""One trailing window over control intervals, shared by everything that averages over time.

Control intervals are short (500 ms: a dozen engine steps), so single-interval rates swing by
+-30 % for throughput and +-3-5 % for power at a fixed configuration. The QoS test, the budget
governor, the demand estimate and the burst estimate therefore all judge a mean over a trailing
span of whole intervals. The rule is the same for all of them: keep the newest intervals, and
drop the oldest while the rest still span `window_s`.
"""

from __future__ import annotations

import collections
from typing import Generic, Iterable, Iterator, TypeVar

Item = TypeVar("Item")

_EPS_S = 1e-9
"""Slack on span comparisons (interval lengths are sums of floats)."""


class TrailingWindow(Generic[Item]):
    """Intervals (a duration plus whatever the caller keeps with it) over a trailing span.

    `add(duration_s, item)` appends one interval and drops the oldest while the others still
    cover `window_s`; `span_s` is the time the window covers now. Callers compute their own means
    over `items()` (tokens / seconds, energy / seconds, share of flagged intervals).

    Two options exist so each caller keeps the floating-point arithmetic it has always had (a
    refactor must not move the last bits, which can flip a decision):

    - `running_span`: keep `span_s` as a running sum (add the new duration, subtract each dropped
      one) instead of re-summing the kept durations, oldest first, on every `add`.
    - `max_items`: also keep at most this many intervals (a count-limited window; with
      `window_s = math.inf` the count alone bounds it).
    """

    def __init__(self, window_s: float, *, running_span: bool = False, max_items: int | None = None) -> None:
        self.window_s = float(window_s)
        self.running_span = running_span
        self.max_items = max_items
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

    def add(self, duration_s: float, item: Item) -> list[Item]:
        """Append one interval and drop the oldest ones the rest no longer need; return those, oldest first."""
        duration_s = float(duration_s)
        self._items.append((duration_s, item))
        span_s = self._span_s + duration_s if self.running_span else sum(d for d, _ in self._items)
        dropped: list[Item] = []
        while len(self._items) > 1 and span_s - self._items[0][0] >= self.window_s - _EPS_S:
            old_s, old = self._items.popleft()
            span_s -= old_s
            dropped.append(old)
        while self.max_items is not None and len(self._items) > self.max_items:
            old_s, old = self._items.popleft()
            span_s -= old_s
            dropped.append(old)
        self._span_s = span_s
        return dropped

    def items(self) -> Iterator[Item]:
        """The intervals' items, oldest first."""
        return (item for _, item in self._items)

    def durations(self) -> Iterator[float]:
        """The intervals' durations, oldest first."""
        return (d for d, _ in self._items)

    def rate(self, values: Iterable[float] | None = None) -> float:
        """Sum of the items (or of `values`) over the span: a mean rate; 0 while empty."""
        if self._span_s <= 0:
            return 0.0
        total = sum(self.items() if values is None else values)  # type: ignore[arg-type]
        return total / self._span_s
