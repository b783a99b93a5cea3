"""Save GPU power limits before the first write; always put them back.

`PowerLimitGuard` wraps a `pals.node.gpu_backend.GpuBackend`. Every power-limit write
must go through it:

    with PowerLimitGuard(backend) as guard:        # state file: default_state_path(backend)
        guard.set_power_limit_w(0, 250.0)          # 1st write: saves ALL originals first
        guard.set_all_power_limits_w(300.0)
    # limits are back to the saved originals here, and the state file is gone

Guarantees (GEOPM's save/restore discipline):
- Before the first write, every GPU's limit is saved atomically and durably
  (`pals.core.io.atomic_write_text`: temporary file, fsync, rename) to a JSON state file with the backend kind, GPU index,
  UUID, name, original limit (W), pid, host and time.
- An existing state file is never overwritten: after a crash the live limits
  are PALS's own, so the first saved originals are the truth and are reused
  (GPUs missing from it are added). If the pid in it is still alive, another
  PALS process owns the GPUs and the guard refuses (ConfigError).
- Restore runs on `close()` / leaving the `with` block, on SIGINT and SIGTERM
  (the guard restores, then hands the signal to the previous handler, or dies
  of it with the default action, so the exit code stays conventional), and
  through `atexit`. After a successful restore the state file is removed.
- If a restore fails, the state file is kept where it is (so the next run
  reuses it instead of saving PALS's own limits as "originals") and the error
  says to run `pals restore`, which calls `restore_from_state`.
- A kill -9 skips all of this: the state file survives, and `pals restore`
  reads it and sets every GPU back.

Functions: `default_state_path(backend=None)`, `load_state(path)`,
`restore_from_state(state_path, backend)` -> `RestoreReport`,
`open_backend_for_state(state, ...)`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import os
import signal
import socket
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pals.core.io import atomic_write_text
from pals.core.paper import PAPER_GPU as DEFAULT_SIM_GPU
from pals.errors import ActuationError, ConfigError, PalsError
from pals.node.gpu import open_gpus
from pals.node.gpu_backend import GpuBackend, check_index, check_limit_in_range

STATE_SCHEMA = "pals-power-limits/1"
STATE_FILE_NAME = "power-limits.json"
READBACK_TOLERANCE_W = 0.5
"""A limit read back within this of the target counts as set (NVML rounds to mW)."""


def default_state_path(backend: GpuBackend | None = None) -> Path:
    """Where saved limits live: $PALS_STATE_DIR, else $XDG_STATE_HOME/pals, else ~/.local/state/pals.

    The simulated test double keeps its own state next to its driver file, so a
    simulated run can never touch a real GPU's saved state.
    """
    if backend is not None and getattr(backend, "kind", None) == "simulated":
        return Path(backend.driver_state_path).parent / STATE_FILE_NAME  # type: ignore[attr-defined]
    if os.environ.get("PALS_STATE_DIR"):
        return Path(os.environ["PALS_STATE_DIR"]) / STATE_FILE_NAME
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "pals" / STATE_FILE_NAME


@dataclass(frozen=True)
class SavedGpu:
    """One GPU's limit as it was before PALS first wrote to it."""

    index: int
    uuid: str
    name: str
    original_limit_w: float


@dataclass(frozen=True)
class SavedState:
    """The content of a state file."""

    backend_kind: str
    gpus: tuple[SavedGpu, ...]
    pid: int
    host: str
    saved_at: str
    backend_info: dict = field(default_factory=dict)
    """What `pals restore` needs to reopen the same backend (e.g. the test double's driver file)."""

    def to_json(self) -> dict:
        out = asdict(self)
        out["schema"] = STATE_SCHEMA
        out["gpus"] = [asdict(g) for g in self.gpus]
        return out

    @classmethod
    def from_json(cls, data: Any, path: Path) -> "SavedState":
        try:
            if data.get("schema") != STATE_SCHEMA:
                raise ValueError(f"schema {data.get('schema')!r}, expected {STATE_SCHEMA!r}")
            gpus = tuple(
                SavedGpu(int(g["index"]), str(g["uuid"]), str(g["name"]), float(g["original_limit_w"]))
                for g in data["gpus"]
            )
            if not gpus:
                raise ValueError("no GPUs listed")
            return cls(
                backend_kind=str(data["backend_kind"]),
                gpus=gpus,
                pid=int(data["pid"]),
                host=str(data.get("host", "")),
                saved_at=str(data.get("saved_at", "")),
                backend_info=dict(data.get("backend_info") or {}),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(_corrupt_message(path, e)) from e


def _corrupt_message(path: Path, error: Exception) -> str:
    return (
        f"saved power-limit state {path} is corrupt ({error}); check the limits by hand "
        "(nvidia-smi -q -d POWER), set them with nvidia-smi -pl, then delete that file"
    )


def load_state(path: str | os.PathLike) -> SavedState | None:
    """Read a state file; None if there is none.

    Raises:
        ConfigError: the file exists but cannot be parsed (one line, with the fix).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read saved power-limit state {path}: {e}") from e
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(_corrupt_message(path, e)) from e
    return SavedState.from_json(data, path)


def _write_state(path: Path, state: SavedState) -> None:
    # The rename replaces any file at `path`; "never overwrite saved originals" is the guard's
    # rule, kept by `PowerLimitGuard.save` reading the file first and reusing what it finds.
    atomic_write_text(path, json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (and is not us)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0) but holds nothing; treat it as gone.
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().split(") ", 1)[1].startswith("Z"):
                return False
    return True


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _backend_info(backend: GpuBackend) -> dict:
    describe = getattr(backend, "describe", None)
    if callable(describe):
        return dict(describe())
    if getattr(backend, "kind", None) == "simulated":
        return {
            "driver_state_path": str(backend.driver_state_path),  # type: ignore[attr-defined]
            "sim_gpu": backend.spec.name,  # type: ignore[attr-defined]
            "sim_gpus": backend.count(),
        }
    return {}


@dataclass(frozen=True)
class GpuRestore:
    """What restoring one GPU did."""

    index: int
    uuid: str
    name: str
    original_limit_w: float
    before_w: float | None
    after_w: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.after_w is not None
            and abs(self.after_w - self.original_limit_w) <= READBACK_TOLERANCE_W
        )


@dataclass(frozen=True)
class RestoreReport:
    """Result of one restore: per-GPU outcomes, and where the state went."""

    state_path: Path
    gpus: tuple[GpuRestore, ...]
    state_removed: bool

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.gpus)

    def failure_message(self) -> str:
        failed = [g for g in self.gpus if not g.ok]
        parts = ", ".join(
            f"GPU {g.index}: {g.error or f'reads {g.after_w} W, expected {g.original_limit_w:g} W'}" for g in failed
        )
        return (
            f"could not restore GPU power limits ({parts}); the saved originals are kept in "
            f"{self.state_path}: fix the cause, then run `pals restore --state {self.state_path}`"
        )


def restore_from_state(
    state_path: str | os.PathLike,
    backend: GpuBackend,
    *,
    state: SavedState | None = None,
) -> RestoreReport:
    """Set every saved GPU back to its original limit; remove the state file if all succeed.

    GPUs are matched by UUID, so a changed CUDA_VISIBLE_DEVICES cannot restore
    the wrong GPU. One GPU failing does not stop the others. On any failure the
    state file is kept. Calling it with no state file is a no-op (empty report).

    Raises:
        ConfigError: the state file is corrupt, or was saved by another kind of backend.
    """
    path = Path(state_path)
    if state is None:
        state = load_state(path)
    if state is None:
        return RestoreReport(path, (), state_removed=False)
    kind = getattr(backend, "kind", "?")
    real_kinds = {"zeus", "nvml"}  # same hardware, same UUIDs
    if state.backend_kind != kind and not {state.backend_kind, kind} <= real_kinds:
        raise ConfigError(
            f"{path} was saved by the '{state.backend_kind}' GPU backend, not '{kind}'; "
            f"run `pals restore --state {path} --gpu-backend {state.backend_kind}`"
        )
    uuids = [backend.uuid(i) for i in range(backend.count())]
    results = []
    for saved in state.gpus:
        index = uuids.index(saved.uuid) if saved.uuid in uuids else None
        if index is None:
            results.append(
                GpuRestore(saved.index, saved.uuid, saved.name, saved.original_limit_w, None, None,
                           "GPU not visible to this process (check CUDA_VISIBLE_DEVICES)")
            )
            continue
        before_w = after_w = None
        try:
            before_w = backend.get_power_limit_w(index)
            backend.set_power_limit_w(index, saved.original_limit_w)
            after_w = backend.get_power_limit_w(index)
            error = None
        except PalsError as e:
            error = str(e)
        results.append(GpuRestore(index, saved.uuid, saved.name, saved.original_limit_w, before_w, after_w, error))
    report_gpus = tuple(results)
    removed = False
    if all(g.ok for g in report_gpus):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        removed = True
    return RestoreReport(path, report_gpus, removed)


def open_backend_for_state(state: SavedState, kind: str = "auto", sim_state: str | None = None) -> GpuBackend:
    """Open the backend a saved state needs ('auto' follows the state's own kind)."""
    if kind == "auto":
        kind = state.backend_kind if state.backend_kind in ("simulated", "nvml", "zeus") else "auto"
    if kind == "simulated":
        info = state.backend_info
        return open_gpus(
            "simulated",
            sim_gpus=int(info.get("sim_gpus", len(state.gpus))),
            sim_gpu=str(info.get("sim_gpu", DEFAULT_SIM_GPU)),
            driver_state_path=sim_state or info.get("driver_state_path"),
        )
    return open_gpus(kind)


class PowerLimitGuard:
    """Saves every GPU's limit before the first write and restores it on every exit path.

    Args:
        backend: the GPUs.
        state_path: the state file; default `default_state_path(backend)`.
        handle_signals: install SIGINT/SIGTERM handlers (main thread only;
            elsewhere this is skipped and noted in `notes`).
        register_atexit: restore at interpreter exit too.

    Raises:
        ConfigError: (on the first write) another live PALS process owns the state file.
    """

    def __init__(
        self,
        backend: GpuBackend,
        state_path: str | os.PathLike | None = None,
        *,
        handle_signals: bool = True,
        register_atexit: bool = True,
    ) -> None:
        self.backend = backend
        self.state_path = Path(state_path) if state_path else default_state_path(backend)
        self.saved: SavedState | None = None
        self.notes: list[str] = []
        self._previous_handlers: dict[int, Any] = {}
        self._closed = False
        self._atexit_registered = False
        if register_atexit:
            atexit.register(self._restore_at_exit)
            self._atexit_registered = True
        if handle_signals:
            self._install_signal_handlers()

    # --- writing ------------------------------------------------------------------

    def save(self) -> SavedState:
        """Save every GPU's current limit unless a saved state already exists (then adopt it)."""
        if self.saved is not None and self.state_path.exists():
            return self.saved
        backend = self.backend
        live = [
            SavedGpu(i, backend.uuid(i), backend.name(i), backend.get_power_limit_w(i)) for i in range(backend.count())
        ]
        existing = load_state(self.state_path)
        if existing is not None:
            if pid_alive(existing.pid):
                raise ConfigError(
                    f"another PALS process (pid {existing.pid}) is controlling these GPUs "
                    f"(state {self.state_path}); stop it first, or wait for it to exit"
                )
            # A crashed run's limits are live now: keep its originals, add GPUs it did not list.
            known = {g.uuid for g in existing.gpus}
            gpus = existing.gpus + tuple(g for g in live if g.uuid not in known)
            self.notes.append(
                f"reused saved original limits from pid {existing.pid} ({existing.saved_at}); "
                "the previous run did not restore them"
            )
            state = SavedState(existing.backend_kind, gpus, os.getpid(), socket.gethostname(), existing.saved_at,
                               existing.backend_info or _backend_info(backend))
        else:
            state = SavedState(getattr(backend, "kind", "unknown"), tuple(live), os.getpid(), socket.gethostname(),
                               _now_iso(), _backend_info(backend))
        _write_state(self.state_path, state)
        self.saved = state
        return state

    def set_power_limit_w(self, index: int, watts: float) -> None:
        """Set one GPU's limit (saving all originals first). Errors as `GpuBackend.set_power_limit_w`."""
        if self._closed:
            raise ActuationError("this PowerLimitGuard is closed; open a new one to change limits")
        check_index(self.backend, index)
        check_limit_in_range(self.backend, index, watts)  # bad input never reaches the driver
        self.save()
        self.backend.set_power_limit_w(index, watts)

    def set_all_power_limits_w(self, watts: float) -> None:
        """Set every GPU's limit to `watts` (all checked before any is written)."""
        for i in range(self.backend.count()):
            check_limit_in_range(self.backend, i, watts)
        for i in range(self.backend.count()):
            self.set_power_limit_w(i, watts)

    # --- restoring ----------------------------------------------------------------

    def restore(self) -> RestoreReport:
        """Put every saved limit back now; the guard may be used again afterwards."""
        if self.saved is None:
            return RestoreReport(self.state_path, (), state_removed=False)
        report = restore_from_state(self.state_path, self.backend, state=self.saved)
        if report.ok:
            self.saved = None
        return report

    def close(self) -> None:
        """Restore, uninstall the signal handlers and the atexit hook.

        Raises:
            ActuationError: a limit could not be restored (the state file is kept).
        """
        if self._closed:
            return
        self._closed = True
        self._uninstall_signal_handlers()
        if self._atexit_registered:
            atexit.unregister(self._restore_at_exit)
            self._atexit_registered = False
        report = self.restore()
        if not report.ok:
            raise ActuationError(report.failure_message())

    def __enter__(self) -> "PowerLimitGuard":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        # Do not mask the exception already unwinding; report a failed restore on stderr.
        try:
            self.close()
        except PalsError as restore_error:
            print(f"pals: {restore_error}", file=sys.stderr)

    # --- exit paths ----------------------------------------------------------------

    def _restore_quietly(self, why: str) -> None:
        try:
            report = self.restore()
        except Exception as e:  # never let a restore failure hide the exit itself
            print(f"pals: restoring GPU power limits on {why} failed: {e}; run `pals restore`", file=sys.stderr)
            return
        if not report.ok:
            print(f"pals: on {why}: {report.failure_message()}", file=sys.stderr)

    def _restore_at_exit(self) -> None:
        if not self._closed:
            self._restore_quietly("exit")

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            self.notes.append("not in the main thread: SIGINT/SIGTERM restore relies on the caller")
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if previous == signal.SIG_IGN:
                # The parent chose to ignore it (nohup, a background job): the process will not
                # stop on it, so there is nothing to restore for; keep ignoring it.
                continue
            self._previous_handlers[signum] = previous
            signal.signal(signum, self._on_signal)

    def _uninstall_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in list(self._previous_handlers.items()):
            # Only put the old handler back if ours is still the one installed.
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        self._restore_quietly(signal.Signals(signum).name)
        if callable(previous):
            previous(signum, frame)  # chain: e.g. Python's SIGINT handler raises KeyboardInterrupt
            return
        if previous == signal.SIG_IGN:
            return
        # Default action: die of the same signal, so the exit status stays conventional.
        self._closed = True
        self._uninstall_signal_handlers()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
