"""Stop a control run cleanly on SIGINT/SIGTERM, so the caller still writes its summary.

    stop = threading.Event()
    restore = install_stop_signals(stop)
    try:
        loop.run(duration_s=args.duration_s, stop=stop)   # returns within one interval of a signal
    finally:
        restore()
        loop.close()
    write_summary(loop.summary())

The first signal only sets `stop`: the loop finishes the step in progress and `run` returns
normally. A second one (an operator who insists) raises `KeyboardInterrupt` (SIGINT) or
`SystemExit(128 + signal)` (others) in the main thread, which still runs every `finally` (power
limits restored) but skips the rest of the run's epilogue.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable, Iterable

DEFAULT_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def install_stop_signals(
    stop: threading.Event, signals: Iterable[signal.Signals] = DEFAULT_STOP_SIGNALS
) -> Callable[[], None]:
    """Make each of `signals` set `stop`; return a function that puts the previous handlers back.

    Call from the main thread (Python delivers signals there only).
    """
    received: list[int] = []

    def handler(signum: int, frame) -> None:
        received.append(signum)
        if len(received) > 1:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        # Set from another thread: the handler runs between two bytecodes of the main thread,
        # which may be holding the event's own lock inside `Event.wait` (a self-deadlock).
        threading.Thread(target=stop.set, name="pals-stop", daemon=True).start()

    previous = {sig: signal.signal(sig, handler) for sig in signals}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)

    return restore
