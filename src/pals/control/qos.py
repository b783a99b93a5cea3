"""What counts as a QoS violation.

The throughput target is a floor on *delivered* output tokens/s, but a node cannot deliver load it
is not offered: when offered load is below the target, serving all of it is not a violation.
Demand is unmet only while requests wait in the queue, which both the simulator and a real vLLM
server (`vllm:num_requests_waiting`) report. Delivered throughput is measured over a trailing
window of `window_s` (default 5 s, ten 500 ms intervals): one interval holds only a dozen engine
steps, and prefill chunks and request completions make single-interval rates swing by +-30 % even
at a constant configuration, which is noise, not a service shortfall. So:

    interval k violates QoS  iff  throughput over the window ending at k < (1 - tolerance) * target
                                  and requests were waiting at the end of interval k.

`tolerance` defaults to 5 %, the paper's hysteresis threshold. With no target, nothing violates.
Summaries also report `qos_violation_pct_raw`, the same test on single-interval throughput.
"""

from __future__ import annotations

import collections

DEFAULT_QOS_TOLERANCE = 0.05
DEFAULT_QOS_WINDOW_S = 5.0


def is_qos_violation(
    throughput_tps: float,
    requests_waiting: int,
    target_tps: float | None,
    tolerance: float = DEFAULT_QOS_TOLERANCE,
) -> bool:
    """True when `throughput_tps` is below (1 - tolerance) x target while requests waited."""
    if target_tps is None:
        return False
    return throughput_tps < (1.0 - tolerance) * target_tps and requests_waiting > 0


class QosWindow:
    """Trailing-window throughput for the QoS test (see the module docstring).

    The window restarts when the target changes, so a new target is judged only on throughput
    delivered since it was set.
    """

    def __init__(self, window_s: float = DEFAULT_QOS_WINDOW_S, tolerance: float = DEFAULT_QOS_TOLERANCE) -> None:
        self.window_s = window_s
        self.tolerance = tolerance
        self._items: collections.deque[tuple[float, float]] = collections.deque()
        self._target: float | None = None

    def add(self, tokens: float, interval_s: float, requests_waiting: int, target_tps: float | None) -> tuple[float, bool]:
        """Fold in one interval; return (window throughput, violation)."""
        if target_tps != self._target:
            self._items.clear()
            self._target = target_tps
        self._items.append((tokens, interval_s))
        span = sum(d for _, d in self._items)
        while len(self._items) > 1 and span - self._items[0][1] >= self.window_s - 1e-9:
            span -= self._items.popleft()[1]
        tps = sum(t for t, _ in self._items) / span if span > 0 else 0.0
        return tps, is_qos_violation(tps, requests_waiting, target_tps, self.tolerance)
