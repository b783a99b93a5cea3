"""Run cleanup before the process dies of a terminating signal, then die of that signal.

Which signals (POSIX default action "terminate" or "core", Linux numbering):

Handled (`TERMINATING_SIGNALS`), each only when it is not ignored at install time:
- SIGHUP (terminal closed, ssh dropped), SIGINT (Ctrl-C), SIGQUIT (Ctrl-\\), SIGTERM (kill,
  systemd, docker stop), SIGUSR1, SIGUSR2 (stray `kill -USR1`), SIGALRM (a stray or inherited
  alarm), SIGXCPU (`ulimit -t` reached: the kernel sends it before SIGKILL).
- SIGPIPE and SIGXFSZ: the Python interpreter sets both to SIG_IGN at start-up (a broken pipe or a
  too-large file becomes an `OSError` that unwinds through `close()` and `atexit`), so under the
  "ignored stays ignored" rule below they are normally left alone; if an embedding program has
  set them back to the default action, they terminate, and are handled like the others.

Not handled, and why:
- SIGKILL, SIGSTOP: cannot be caught. After kill -9, `pals restore` sets the limits back.
- SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS, SIGTRAP: synchronous faults or aborts inside C
  code; a Python handler never runs in time (the interpreter is gone). `pals restore` again.
- SIGVTALRM, SIGPROF: only arrive if this process armed a timer itself, and profilers install
  their own handlers for them; restoring limits on every profiler tick would be wrong.
- SIGIO/SIGPOLL, SIGPWR, SIGSTKFLT: not sent to ordinary processes.

Rules:
- A signal whose disposition is SIG_IGN when a hook registers stays ignored: the parent
  chose that (nohup ignores SIGHUP; a shell's background job ignores SIGINT and SIGQUIT), the
  process will not stop on it, so there is nothing to clean up for.
- SIGINT and SIGTERM with a Python handler already installed: run the cleanup, then call that
  handler (Python's own SIGINT handler raises KeyboardInterrupt; an application's SIGTERM handler
  decides itself whether the process goes on).
- Every other handled signal is taken over only while its action is the default one (the process
  would die of it); an application handler for, say, SIGALRM is left alone.
- With the default action, after the cleanup the handler resets the signal to SIG_DFL and sends it
  to the process again, so the process dies OF THE SIGNAL: a parent sees WIFSIGNALED, and a shell
  reports the conventional status 128 + signal number. Should the process survive that (the signal
  blocked), it exits with status 128 + signal number.
- A cleanup that would interrupt the main thread inside a critical section (`busy()` true) is
  deferred until `run_deferred()` is called at the end of that section, so a save of the original
  limits is never interrupted half-way by the restore of the same limits. (Critical sections on
  other threads are the hook's business: PowerLimitGuard's cleanup waits for their lock.)

Only the main thread can install handlers; elsewhere `register` returns None and says why.

API: `register(cleanup, busy)` -> `Registration | None`, `unregister(registration)`,
`run_deferred()`, `stop_on_terminating_signals(callback)` (for a service's own shutdown path).
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

TERMINATING_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name)
    for name in ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU", "SIGPIPE",
                 "SIGXFSZ")
    if hasattr(signal, name)
)
"""The signals whose default action ends the process and that a Python handler can act on."""

CHAINED_SIGNALS = frozenset(s for s in (signal.SIGINT, signal.SIGTERM))
"""Signals whose existing Python handler is called after the cleanup (see the module docstring)."""


@dataclass(eq=False)
class Registration:
    """One cleanup hook: `cleanup(signal_name)` runs before the process acts on the signal."""

    cleanup: Callable[[str], None]
    busy: Callable[[], bool]
    notes: list[str] = field(default_factory=list)


class _Hub:
    """The process-wide handler: one per signal, shared by every registered hook."""

    def __init__(self) -> None:
        self.hooks: list[Registration] = []
        self.previous: dict[int, Any] = {}
        self.pending: list[int] = []

    def install(self) -> list[str]:
        notes = []
        for signum in TERMINATING_SIGNALS:
            previous = signal.getsignal(signum)
            if previous == self.on_signal:
                continue  # taken when an earlier hook registered
            if previous == signal.SIG_IGN:
                if signum not in (signal.SIGPIPE, getattr(signal, "SIGXFSZ", None)):
                    notes.append(f"{signum.name} is ignored (nohup or a background job): it stays ignored")
                continue
            if previous is None:
                continue  # installed from C, not by Python: leave it alone
            if callable(previous) and signum not in CHAINED_SIGNALS:
                notes.append(f"{signum.name} has the application's own handler: left to it")
                continue
            self.previous[signum] = previous
            signal.signal(signum, self.on_signal)
        return notes

    def uninstall(self) -> None:
        for signum, previous in list(self.previous.items()):
            # Only put the old handler back if ours is still the one installed.
            if signal.getsignal(signum) == self.on_signal:
                signal.signal(signum, previous)
        self.previous.clear()
        self.pending.clear()

    def on_signal(self, signum: int, frame: Any) -> None:
        if any(hook.busy() for hook in self.hooks):
            if signum not in self.pending:
                self.pending.append(signum)
            return
        self.act(signum, frame)

    def act(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        for hook in list(self.hooks):
            hook.cleanup(name)
        previous = self.previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            previous(signum, frame)  # chain: e.g. Python's SIGINT handler raises KeyboardInterrupt
            return
        _die_of(signum)


def _die_of(signum: int) -> None:
    """Die of `signum` with its default action, so the exit status stays conventional."""
    signal.signal(signum, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # only reached if the signal could not end the process


_hub = _Hub()
_lock = threading.Lock()


def register(cleanup: Callable[[str], None], busy: Callable[[], bool] = lambda: False) -> Registration | None:
    """Run `cleanup(signal_name)` before the process acts on any terminating signal.

    Returns None (and installs nothing) outside the main thread, where Python cannot install
    signal handlers; the caller must then rely on its own shutdown path.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    with _lock:
        registration = Registration(cleanup, busy)
        # Every registration looks again: a disposition may have changed since the last one.
        registration.notes.extend(_hub.install())
        _hub.hooks.append(registration)
        return registration


def unregister(registration: Registration | None) -> None:
    """Remove a hook; the last one out puts the previous handlers back."""
    if registration is None or threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        if registration in _hub.hooks:
            _hub.hooks.remove(registration)
        if not _hub.hooks:
            _hub.uninstall()


def run_deferred() -> None:
    """Act on signals that arrived while a hook was busy (call it when a critical section ends).

    Main thread only (signal dispositions can only change there); elsewhere it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if not _hub.pending or any(hook.busy() for hook in _hub.hooks):
        return
    pending, _hub.pending = _hub.pending, []
    for signum in pending:
        _hub.act(signum, None)


def stop_on_terminating_signals(callback: Callable[[int], None]) -> Callable[[], None]:
    """Call `callback(signum)` on every terminating signal that is not ignored; returns an undo.

    For a long-running service with its own orderly shutdown (`pals serve`: stop the loop, restore
    the limits, stop vLLM): the callback should only set a flag. Main thread only.
    """
    previous = {}
    for signum in TERMINATING_SIGNALS:
        if signal.getsignal(signum) == signal.SIG_IGN:
            continue
        previous[signum] = signal.signal(signum, lambda s, _frame: callback(s))

    def undo() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    return undo
