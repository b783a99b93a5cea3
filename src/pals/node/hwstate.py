"""Own the GPUs, save their power limits before the first write, and always put them back.

`PowerLimitGuard` wraps a `pals.node.gpu_backend.GpuBackend`. Every power-limit write must go
through it:

    with PowerLimitGuard(backend) as guard:        # takes the GPUs' locks, or raises ConfigError
        guard.set_power_limit_w(0, 250.0)          # 1st write: saves the originals first
        guard.set_all_power_limits_w(300.0)
    # limits are back to the saved originals here, this owner's entries are gone, the locks free

Ownership (`pals.node.gpu_lock`): the guard takes an exclusive `flock` on one lock file per GPU
(by UUID) when it is made, and holds it for its lifetime. A second PALS process (or a second
guard) on any of those GPUs is refused with one error that names the holder's pid. The kernel
drops the locks when the process dies, however it dies, so a crash never leaves a stale lock.
Locks live in `default_lock_dir(backend)`: the per-user state directory for real GPUs (so two
users' PALS processes do not see each other's locks: give them one PALS_STATE_DIR), the test
double's driver directory for the double.

Saved originals (`pals.node.saved_limits`): before the first write, each owned GPU's limit is
saved (atomically, durably) to the state file with the owner (pid, random owner id, host, time).
Several owners may share the file, each with its own GPUs; every change is a locked
read-modify-write, so no owner ever loses or removes another's entries. An entry is never
overwritten: when an owner crashed, the live limits are its caps, so the next owner of that GPU
adopts the saved original (and becomes the entry's owner) instead of saving the capped value.

Restore runs on `close()` / leaving the `with` block, through `atexit`, and on every
terminating signal (`pals.node.exit_signals`: SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1,
SIGUSR2, SIGALRM, SIGXCPU, and SIGPIPE/SIGXFSZ when not ignored); after restoring, the process
dies of the signal, so callers see status 128 + signal number. A signal that arrives while the
guard saves or writes is acted on as soon as that step ends. A restore removes only this owner's
entries. If it fails, the entries stay (so the next owner adopts them instead of saving caps as
originals) and the error says to run `pals restore`, which calls `restore_from_state`.

`restore_from_state` (what `pals restore` runs) restores only GPUs whose owner is dead: it takes
each GPU's lock first; a GPU whose lock a live owner holds is left alone and reported. After a
kill -9 the owner's lock is free, and `pals restore` brings back the true originals.

Functions: `default_state_path(backend=None)`, `default_lock_dir(backend=None)`,
`load_state(path)`, `restore_from_state(state_path, backend)` -> `RestoreReport`,
`open_backend_for_state(state, ...)`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import os
import socket
import sys
import threading
import uuid as _uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

from pals.core.paper import PAPER_GPU as DEFAULT_SIM_GPU
from pals.errors import ActuationError, ConfigError, PalsError
from pals.node import exit_signals
from pals.node.gpu import open_gpus
from pals.node.gpu_backend import GpuBackend, check_index, check_limit_in_range
from pals.node.gpu_lock import GpuLock, LockHolder, is_locked, lock_all, read_holder, try_lock
from pals.node.saved_limits import (
    STATE_SCHEMA,
    SavedGpu,
    SavedState,
    load_state,
    pals_state_dir,
    state_lock,
    write_state,
)

__all__ = [
    "STATE_SCHEMA", "STATE_FILE_NAME", "SavedGpu", "SavedState", "GpuRestore", "RestoreReport", "PowerLimitGuard",
    "default_state_path", "default_lock_dir", "load_state", "restore_from_state", "open_backend_for_state",
    "pid_alive", "owner_is_live",
]

STATE_FILE_NAME = "power-limits.json"
LOCK_DIR_NAME = "locks"
READBACK_TOLERANCE_W = 0.5
"""A limit read back within this of the target counts as set (NVML rounds to mW)."""
SIGNAL_WRITE_WAIT_S = 30.0
"""On a terminating signal, how long the restore waits for a limit write in flight on another thread."""
_REAL_KINDS = frozenset({"zeus", "nvml"})
"""Backends that reach the same hardware (same UUIDs): a state saved by one is restored by the other."""


def _simulated_dir(backend: GpuBackend | None) -> Path | None:
    if backend is not None and getattr(backend, "kind", None) == "simulated":
        return Path(backend.driver_state_path).parent  # type: ignore[attr-defined]
    return None


def default_state_path(backend: GpuBackend | None = None) -> Path:
    """Where saved limits live: $PALS_STATE_DIR, else $XDG_STATE_HOME/pals, else ~/.local/state/pals.

    The simulated test double keeps its own state next to its driver file, so a simulated run can
    never touch a real GPU's saved state.
    """
    return (_simulated_dir(backend) or pals_state_dir()) / STATE_FILE_NAME


def default_lock_dir(backend: GpuBackend | None = None) -> Path:
    """Where the per-GPU lock files live (beside the state, or beside the test double's driver file)."""
    return (_simulated_dir(backend) or pals_state_dir()) / LOCK_DIR_NAME


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (and is not us). Only for legacy state files without locks."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0) but holds nothing; treat it as gone.
    with contextlib.suppress(OSError, IndexError):
        with open(f"/proc/{pid}/stat") as handle:
            if handle.read().split(") ", 1)[1].startswith("Z"):
                return False
    return True


def owner_is_live(state: SavedState, gpu: SavedGpu) -> bool:
    """True if the owner of `gpu`'s entry still runs (holds the GPU's lock; by pid in a legacy file)."""
    if state.lock_dir is None:
        return pid_alive(gpu.owner.pid)
    return is_locked(Path(state.lock_dir), gpu.uuid)


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


def _check_kind(path: Path, state: SavedState, backend: GpuBackend) -> None:
    kind = getattr(backend, "kind", "?")
    if state.backend_kind != kind and not {state.backend_kind, kind} <= _REAL_KINDS:
        raise ConfigError(
            f"{path} was saved by the '{state.backend_kind}' GPU backend, not '{kind}'; "
            f"run `pals restore --state {path} --gpu-backend {state.backend_kind}`"
        )


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
    held_by: str | None = None
    """A live owner holds this GPU: it was left alone (that owner restores it as it exits)."""

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.held_by is None
            and self.after_w is not None
            and abs(self.after_w - self.original_limit_w) <= READBACK_TOLERANCE_W
        )


@dataclass(frozen=True)
class RestoreReport:
    """Result of one restore: per-GPU outcomes, and whether the restored entries left the state file."""

    state_path: Path
    gpus: tuple[GpuRestore, ...]
    state_removed: bool
    """True when every entry this restore covered is gone from the state file."""

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.gpus)

    @property
    def held(self) -> tuple[GpuRestore, ...]:
        return tuple(g for g in self.gpus if g.held_by is not None)

    def failure_message(self) -> str:
        failed = [g for g in self.gpus if not g.ok and g.held_by is None]
        parts = ", ".join(
            f"GPU {g.index}: {g.error or f'reads {g.after_w} W, expected {g.original_limit_w:g} W'}" for g in failed
        )
        return (
            f"could not restore GPU power limits ({parts}); the saved originals are kept in "
            f"{self.state_path}: fix the cause, then run `pals restore --state {self.state_path}`"
        )


def _set_back(backend: GpuBackend, saved: Sequence[SavedGpu]) -> list[GpuRestore]:
    """Set each saved GPU (matched by UUID) back to its original; one failing does not stop the others."""
    uuids = [backend.uuid(i) for i in range(backend.count())]
    results = []
    for gpu in saved:
        if gpu.uuid not in uuids:
            results.append(GpuRestore(gpu.index, gpu.uuid, gpu.name, gpu.original_limit_w, None, None,
                                      "GPU not visible to this process (check CUDA_VISIBLE_DEVICES)"))
            continue
        index = uuids.index(gpu.uuid)
        before_w = after_w = error = None
        try:
            before_w = backend.get_power_limit_w(index)
            backend.set_power_limit_w(index, gpu.original_limit_w)
            after_w = backend.get_power_limit_w(index)
        except PalsError as e:
            error = str(e)
        results.append(GpuRestore(index, gpu.uuid, gpu.name, gpu.original_limit_w, before_w, after_w, error))
    return results


def _drop_entries(path: Path, done: dict[str, str]) -> bool:
    """Remove the entries {uuid: owner_id} from the state file; True if none of them is left there."""
    with state_lock(path):
        try:
            current = load_state(path)
        except ConfigError:
            return False  # someone replaced it with something unreadable: leave it for a human
        if current is None:
            return True
        kept = tuple(g for g in current.gpus if done.get(g.uuid) != g.owner.owner_id)
        if len(kept) != len(current.gpus):
            write_state(path, current.with_gpus(kept))
        return not any(g.uuid in done for g in kept)


def restore_from_state(
    state_path: str | os.PathLike,
    backend: GpuBackend,
    *,
    state: SavedState | None = None,
) -> RestoreReport:
    """Set every GPU of a dead owner back to its saved original; drop those entries from the file.

    Each GPU's lock is taken first and held until its entry is gone: a GPU a live owner holds is
    left alone (reported with `held_by`), and no new owner can start on it half-way. GPUs are
    matched by UUID, so a changed CUDA_VISIBLE_DEVICES cannot restore the wrong GPU. One GPU failing
    does not stop the others; a failed GPU keeps its entry. No state file: an empty report.

    Raises:
        ConfigError: the state file is corrupt, or was saved by another kind of backend.
    """
    path = Path(state_path)
    if state is None:
        state = load_state(path)
    if state is None:
        return RestoreReport(path, (), state_removed=False)
    _check_kind(path, state, backend)
    me = LockHolder(os.getpid(), _uuid.uuid4().hex, socket.gethostname(), _now_iso())
    locks: list[GpuLock] = []
    held: list[GpuRestore] = []
    free: set[str] = set()
    try:
        for gpu in state.gpus:
            holder = None
            if state.lock_dir is None:  # legacy file: liveness by pid
                holder = f"PALS pid {gpu.owner.pid}" if pid_alive(gpu.owner.pid) else None
            else:
                lock = try_lock(Path(state.lock_dir), gpu.uuid, me)
                if lock is None:
                    other = read_holder(Path(state.lock_dir), gpu.uuid)
                    holder = other.describe() if other else "a live PALS process (pid unknown)"
                else:
                    locks.append(lock)
            if holder is None:
                free.add(gpu.uuid)
            else:
                held.append(GpuRestore(gpu.index, gpu.uuid, gpu.name, gpu.original_limit_w, None, None, None, holder))
        # Re-read under the locks: an owner may have restored (and dropped) an entry meanwhile.
        with state_lock(path):
            current = load_state(path)
        todo = [g for g in (current.gpus if current else ()) if g.uuid in free]
        results = _set_back(backend, todo)
        done = {g.uuid: g.owner.owner_id for g, r in zip(todo, results) if r.ok}
        removed = _drop_entries(path, done) if done else not todo
    finally:
        for lock in locks:
            lock.release()
    all_ok = all(r.ok for r in results)
    return RestoreReport(path, tuple(results) + tuple(held), state_removed=removed and all_ok and not held)


def open_backend_for_state(state: SavedState, kind: str = "auto", sim_state: str | None = None) -> GpuBackend:
    """Open the backend a saved state needs ('auto' follows the state's own kind)."""
    if kind == "auto":
        kind = state.backend_kind if state.backend_kind in ("simulated", "nvml", "zeus") else "auto"
    if kind == "simulated":
        info = state.backend_info
        sim_gpus, sim_gpu = info.get("sim_gpus", len(state.gpus)), info.get("sim_gpu", DEFAULT_SIM_GPU)
        driver = sim_state or info.get("driver_state_path")
        if not isinstance(sim_gpus, int) or not isinstance(sim_gpu, str) or not isinstance(driver, (str, type(None))):
            raise ConfigError(f"the saved state's backend_info {info!r} is not a simulated GPU's; "
                              "pass --sim-state DRIVER.json, or delete the state file")
        return open_gpus("simulated", sim_gpus=sim_gpus, sim_gpu=sim_gpu, driver_state_path=driver)
    return open_gpus(kind)


class PowerLimitGuard:
    """Owns GPUs (per-GPU locks), saves their limits before the first write, restores on every exit path.

    Args:
        backend: the GPUs.
        state_path: the state file; default `default_state_path(backend)`.
        lock_dir: the per-GPU lock files; default `default_lock_dir(backend)`.
        gpu_indices: the GPUs (backend indices) this guard owns; default all. Two guards may own
            disjoint sets of the same backend's GPUs (as two processes do with different
            CUDA_VISIBLE_DEVICES).
        handle_signals: restore on every terminating signal (main thread only; elsewhere this is
            skipped and noted in `notes`).
        register_atexit: restore at interpreter exit too.

    Raises:
        ConfigError: another live PALS owner holds one of these GPUs (names its pid), or an index is bad.
    """

    def __init__(
        self,
        backend: GpuBackend,
        state_path: str | os.PathLike | None = None,
        *,
        lock_dir: str | os.PathLike | None = None,
        gpu_indices: Sequence[int] | None = None,
        handle_signals: bool = True,
        register_atexit: bool = True,
    ) -> None:
        self.backend = backend
        self.state_path = Path(state_path) if state_path else default_state_path(backend)
        self.lock_dir = Path(lock_dir) if lock_dir else default_lock_dir(backend)
        indices = range(backend.count()) if gpu_indices is None else gpu_indices
        for i in indices:
            check_index(backend, i)
        if not indices:
            raise ConfigError("a PowerLimitGuard needs at least one GPU; gpu_indices is empty")
        self.gpu_indices: tuple[int, ...] = tuple(sorted(set(indices)))
        self.owner = LockHolder(os.getpid(), _uuid.uuid4().hex, socket.gethostname(), _now_iso())
        self.saved: SavedState | None = None
        """This owner's saved originals (its entries of the state file); None before the first write."""
        self.notes: list[str] = []
        self._closed = False
        self._stopped_by: str | None = None
        """The signal whose cleanup restored the limits; the guard takes no more writes after it."""
        self._write_lock = threading.RLock()
        self._busy_main = 0
        self._locks = lock_all(self.lock_dir, [backend.uuid(i) for i in self.gpu_indices], self.owner)
        self._signals: exit_signals.Registration | None = None
        self._atexit_registered = False
        if register_atexit:
            atexit.register(self._restore_at_exit)
            self._atexit_registered = True
        if handle_signals:
            self._signals = exit_signals.register(self._restore_on_signal, lambda: self._busy_main > 0)
            if self._signals is None:
                self.notes.append("not in the main thread: restore on signals relies on the caller")
            else:
                self.notes.extend(self._signals.notes)

    @contextlib.contextmanager
    def _critical(self) -> Iterator[None]:
        """A save, write or restore in progress; one thread at a time.

        A terminating signal that lands while the main thread is inside is acted on when the main
        thread leaves (exit_signals defers it); while another thread (a control loop) is inside,
        the signal's cleanup waits for the lock, so no write can land after the restore.
        """
        main = threading.current_thread() is threading.main_thread()
        with self._write_lock:
            if main:
                self._busy_main += 1
            try:
                yield
            finally:
                if main:
                    self._busy_main -= 1
        if main and not self._busy_main:
            exit_signals.run_deferred()

    # --- writing ------------------------------------------------------------------

    def save(self) -> SavedState:
        """Save every owned GPU's current limit, unless an entry for it exists (then adopt it)."""
        with self._critical(), state_lock(self.state_path):
            existing = load_state(self.state_path)
            mine = {g.uuid: g for g in existing.gpus if g.owner.owner_id == self.owner.owner_id} if existing else {}
            if self.saved is not None and all(g.uuid in mine for g in self.saved.gpus):
                return self.saved
            if existing is not None:
                self._check_compatible(existing)
            others = {g.uuid: g for g in existing.gpus} if existing else {}
            entries = []
            for i in self.gpu_indices:
                uuid = self.backend.uuid(i)
                kept = self.saved and next((g for g in self.saved.gpus if g.uuid == uuid), None)
                if kept:  # our entry vanished from the file: write it back from memory, never re-save
                    entries.append(kept)
                elif uuid in others:
                    entries.append(self._adopt(others[uuid], i, existing))
                else:
                    entries.append(SavedGpu(i, uuid, self.backend.name(i), self.backend.get_power_limit_w(i),
                                            self.owner, _now_iso()))
            ours = {g.uuid for g in entries}
            base = existing.gpus if existing else ()
            state = SavedState(getattr(self.backend, "kind", "unknown"),
                               tuple(g for g in base if g.uuid not in ours) + tuple(entries),
                               (existing.backend_info if existing else None) or _backend_info(self.backend),
                               str(self.lock_dir))
            write_state(self.state_path, state)
            self.saved = state.with_gpus(tuple(entries))
            return self.saved

    def _check_compatible(self, existing: SavedState) -> None:
        _check_kind(self.state_path, existing, self.backend)
        if existing.lock_dir is not None and existing.lock_dir != str(self.lock_dir):
            raise ConfigError(
                f"{self.state_path} belongs with the GPU locks in {existing.lock_dir}, not {self.lock_dir}; "
                "use the PALS_STATE_DIR its owners use, or another --state file"
            )
        driver = existing.backend_info.get("driver_state_path")
        ours = _backend_info(self.backend).get("driver_state_path")
        if driver and ours and os.path.abspath(driver) != os.path.abspath(ours):
            raise ConfigError(
                f"{self.state_path} belongs to the simulated GPUs of {driver}, not {ours}; "
                "give each driver-state file its own directory"
            )

    def _adopt(self, entry: SavedGpu, index: int, existing: SavedState) -> SavedGpu:
        # We hold this GPU's lock, so the entry's owner is dead (or, in a legacy file, judged by pid):
        # its caps are the live limits now, and the original it saved is the truth.
        if existing.lock_dir is None and pid_alive(entry.owner.pid):
            raise ConfigError(
                f"another PALS process (pid {entry.owner.pid}, an older version) is controlling GPU {entry.uuid} "
                f"(state {self.state_path}); stop it first, or wait for it to exit"
            )
        self.notes.append(
            f"reused saved original limit {entry.original_limit_w:g} W of GPU {index} from pid {entry.owner.pid} "
            f"({entry.saved_at}); the previous run did not restore it"
        )
        return replace(entry, index=index, owner=self.owner)

    def set_power_limit_w(self, index: int, watts: float) -> None:
        """Set one owned GPU's limit (saving the originals first). Errors as `GpuBackend.set_power_limit_w`."""
        if self._closed:
            raise ActuationError("this PowerLimitGuard is closed; open a new one to change limits")
        check_index(self.backend, index)
        if index not in self.gpu_indices:
            raise ConfigError(f"GPU {index} is not owned by this PowerLimitGuard (it owns {list(self.gpu_indices)})")
        check_limit_in_range(self.backend, index, watts)  # bad input never reaches the driver
        with self._critical():
            if self._stopped_by is not None:
                raise ActuationError(f"the limits were restored on {self._stopped_by}; this guard takes no more writes")
            self.save()
            self.backend.set_power_limit_w(index, watts)

    def set_all_power_limits_w(self, watts: float) -> None:
        """Set every owned GPU's limit to `watts` (all checked before any is written)."""
        for i in self.gpu_indices:
            check_limit_in_range(self.backend, i, watts)
        with self._critical():
            for i in self.gpu_indices:
                self.set_power_limit_w(i, watts)

    # --- restoring ----------------------------------------------------------------

    def restore(self) -> RestoreReport:
        """Put this owner's saved limits back now and drop its entries; the guard may be used again."""
        with self._critical():
            if self.saved is None:
                return RestoreReport(self.state_path, (), state_removed=False)
            results = _set_back(self.backend, self.saved.gpus)
            done = {r.uuid: self.owner.owner_id for r in results if r.ok}
            removed = _drop_entries(self.state_path, done) if done else False
            failed = {r.uuid for r in results if not r.ok}
            remaining = tuple(g for g in self.saved.gpus if g.uuid in failed)
            self.saved = self.saved.with_gpus(remaining) if remaining else None
            return RestoreReport(self.state_path, tuple(results), state_removed=removed and not failed)

    def release(self) -> None:
        """Free the GPUs' locks (without restoring). `close()` does this after restoring."""
        for lock in self._locks:
            lock.release()

    def close(self) -> None:
        """Restore, release the GPUs, uninstall the signal hooks and the atexit hook.

        Raises:
            ActuationError: a limit could not be restored (its entry is kept for `pals restore`).
        """
        if self._closed:
            return
        self._closed = True
        exit_signals.unregister(self._signals)
        self._signals = None
        if self._atexit_registered:
            atexit.unregister(self._restore_at_exit)
            self._atexit_registered = False
        try:
            report = self.restore()
        finally:
            self.release()  # a failed GPU's entry is now a dead owner's: `pals restore` may take it
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

    def _restore_on_signal(self, signal_name: str) -> None:
        if self._closed:
            return
        # Wait for a write in flight on another thread (bounded: a hung driver must not stop the exit).
        locked = self._write_lock.acquire(timeout=SIGNAL_WRITE_WAIT_S)
        try:
            self._stopped_by = signal_name
            self._restore_quietly(signal_name)
        finally:
            if locked:
                self._write_lock.release()

    def _restore_at_exit(self) -> None:
        if not self._closed:
            self._restore_quietly("exit")
            self.release()
