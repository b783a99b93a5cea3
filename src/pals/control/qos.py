"""What counts as a QoS violation.

The throughput target is a floor on *delivered* output tokens/s, but a node cannot deliver load it
is not offered: when offered load is below the target, serving all of it is not a violation.
Demand is unmet only while requests wait in the queue, which both the simulator and a real vLLM
server (`vllm:num_requests_waiting`) report. Delivered throughput is measured over a trailing
window of `window_s` (`DEFAULT_QOS_WINDOW_S`, several control intervals): one interval holds only
a dozen engine steps, and prefill chunks and request completions make single-interval rates swing
by +-30 % even at a constant configuration, which is noise, not a service shortfall. So:

    interval k violates QoS  iff  throughput over the window ending at k < (1 - tolerance) * target
                                  and requests were waiting at the end of interval k.

`tolerance` defaults to `DEFAULT_QOS_TOLERANCE`, zero: the headline rule is strict, any shortfall
of the window throughput under the target while demand is unmet violates. A 5 % tolerance (the
paper's hysteresis threshold, `LENIENT_QOS_TOLERANCE`) hid what the metric should show: a node
starved a few percent under its target every interval counted as meeting it. Summaries keep that
lenient figure as the secondary `qos_violation_pct_lenient`, and report `qos_violation_pct_raw`,
the strict test on single-interval throughput. With no target, nothing violates.
"""

from __future__ import annotations

from pals.core.window import TrailingWindow

DEFAULT_QOS_TOLERANCE = 0.0
"""Throughput may fall this far under the target before an interval violates QoS (the headline,
strict rule: none). Units: fraction."""
LENIENT_QOS_TOLERANCE = 0.05
"""The secondary, lenient rule's tolerance (`qos_violation_pct_lenient`: the paper's hysteresis
threshold, the headline rule before issue 12). Units: fraction."""
DEFAULT_QOS_WINDOW_S = 5.0
"""Trailing window of the QoS throughput (and of the governed mean power). Units: s."""


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
        self._tokens: TrailingWindow[float] = TrailingWindow(window_s)
        self._target: float | None = None

    def add(self, tokens: float, interval_s: float, requests_waiting: int, target_tps: float | None) -> tuple[float, bool]:
        """Fold in one interval; return (window throughput, violation)."""
        if target_tps != self._target:
            self._tokens.clear()
            self._target = target_tps
        self._tokens.add(interval_s, tokens)
        tps = self._tokens.rate()
        return tps, is_qos_violation(tps, requests_waiting, target_tps, self.tolerance)
