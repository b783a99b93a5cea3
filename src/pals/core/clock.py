"""One clock contract, two clocks.

The control loop never calls `time.sleep` directly. A `WallClock` sleeps on
`time.monotonic()`; the simulated node supplies a clock whose `wait_until`
advances the simulator, so an hour of control runs in seconds. Like SimPy's
`Environment`/`RealtimeEnvironment` pair, only `wait_until` differs.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_s(self) -> float:
        """Seconds on this clock's own monotonic time line."""

    def wait_until(self, t_s: float) -> None:
        """Return once `now_s() >= t_s` (sleeping or simulating as needed)."""


class WallClock:
    """Real time: `time.monotonic()`, and `time.sleep` to wait."""

    def now_s(self) -> float:
        return time.monotonic()

    def wait_until(self, t_s: float) -> None:
        delay_s = t_s - time.monotonic()
        if delay_s > 0:
            time.sleep(delay_s)
