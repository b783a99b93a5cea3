"""The saved-original-limits state file: format, strict loading, and locked read-modify-write.

One JSON file holds, per GPU, the limit it had before the FIRST PALS write and the owner that
saved it (pid, owner id, host, time). Several owners may share one file (each its own GPUs);
every change is a read-modify-write under an exclusive flock on a hidden lock file beside it, and
the write itself is atomic (temporary file, fsync, rename), so no owner loses another's entries.

    {"schema": "pals-power-limits/2", "backend_kind": "nvml", "backend_info": {...},
     "lock_dir": "/home/u/.local/state/pals/locks",
     "gpus": [{"index": 0, "uuid": "GPU-...", "name": "...", "original_limit_w": 400.0,
               "saved_at": "...", "owner": {"pid": 123, "owner_id": "...", "host": "...", "since": "..."}}]}

Files of the first format (`pals-power-limits/1`: one pid for the whole file, no lock directory)
are still read, so a state left by an older PALS can be restored.

Loading is strict: a file that is not UTF-8 JSON of this schema, is over `MAX_STATE_BYTES`, or
holds a non-finite or non-positive limit is a ConfigError with one line that names the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from pals.core.io import atomic_write_text
from pals.errors import ConfigError
from pals.node.gpu_lock import LockHolder, ensure_private_dir

STATE_SCHEMA = "pals-power-limits/2"
LEGACY_STATE_SCHEMA = "pals-power-limits/1"
MAX_STATE_BYTES = 1 << 20
"""A state file lists a few GPUs (well under 1 KiB each); anything larger is not one."""


def pals_state_dir() -> Path:
    """PALS's per-user state directory: $PALS_STATE_DIR, else $XDG_STATE_HOME/pals, else ~/.local/state/pals."""
    if os.environ.get("PALS_STATE_DIR"):
        return Path(os.environ["PALS_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "pals"


@dataclass(frozen=True)
class SavedGpu:
    """One GPU's limit as it was before PALS first wrote to it, and who saved it."""

    index: int
    """Index in the saving process (informational: GPUs are matched by `uuid`)."""
    uuid: str
    name: str
    original_limit_w: float
    """The limit before the first PALS write. Never replaced while this entry exists."""
    owner: LockHolder
    """The guard that owns this GPU's entry (the one that restores it)."""
    saved_at: str = ""
    """When the original was first saved (ISO 8601); kept when a later owner adopts the entry."""


@dataclass(frozen=True)
class SavedState:
    """The content of a state file."""

    backend_kind: str
    gpus: tuple[SavedGpu, ...]
    backend_info: dict = field(default_factory=dict)
    """What `pals restore` needs to reopen the same backend (e.g. the test double's driver file)."""
    lock_dir: str | None = None
    """Where the per-GPU lock files are; None in a legacy file (liveness then by pid)."""

    @property
    def owner_pids(self) -> tuple[int, ...]:
        return tuple(sorted({g.owner.pid for g in self.gpus}))

    def with_gpus(self, gpus: tuple[SavedGpu, ...]) -> "SavedState":
        return replace(self, gpus=gpus)

    def to_json(self) -> dict:
        return {
            "schema": STATE_SCHEMA,
            "backend_kind": self.backend_kind,
            "backend_info": self.backend_info,
            "lock_dir": self.lock_dir,
            "gpus": [asdict(g) for g in self.gpus],
        }

    @classmethod
    def from_json(cls, data: Any, path: Path) -> "SavedState":
        try:
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            schema = data.get("schema")
            if schema not in (STATE_SCHEMA, LEGACY_STATE_SCHEMA):
                raise ValueError(f"schema {schema!r}, expected {STATE_SCHEMA!r}")
            legacy_owner = None
            if schema == LEGACY_STATE_SCHEMA:
                legacy_owner = LockHolder(_int(data["pid"], "pid"), "", _str(data.get("host", "")),
                                          _str(data.get("saved_at", "")))
            if not isinstance(data["gpus"], list) or not data["gpus"]:
                raise ValueError("no GPUs listed")
            gpus = tuple(_gpu_from_json(g, legacy_owner, data) for g in data["gpus"])
            info = data.get("backend_info") or {}
            if not isinstance(info, dict):
                raise ValueError("backend_info is not an object")
            lock_dir = data.get("lock_dir")
            return cls(_str(data["backend_kind"]), gpus, dict(info), None if lock_dir is None else _str(lock_dir))
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise ConfigError(corrupt_message(path, e)) from e


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is {value!r}, not an integer")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _gpu_from_json(g: Any, legacy_owner: LockHolder | None, top: dict) -> SavedGpu:
    if not isinstance(g, dict):
        raise ValueError("a GPU entry is not an object")
    limit_w = g["original_limit_w"]
    if isinstance(limit_w, bool) or not isinstance(limit_w, (int, float)) or not math.isfinite(limit_w) or limit_w <= 0:
        raise ValueError(f"original_limit_w is {limit_w!r}, not a positive number of watts")
    if legacy_owner is not None:
        owner, saved_at = legacy_owner, _str(top.get("saved_at", ""))
    else:
        o = g["owner"]
        if not isinstance(o, dict):
            raise ValueError("owner is not an object")
        owner = LockHolder(_int(o["pid"], "owner pid"), _str(o["owner_id"]), _str(o["host"]), _str(o["since"]))
        saved_at = _str(g.get("saved_at", ""))
    index = _int(g["index"], "index")
    if index < 0:
        raise ValueError(f"index {index} is negative")
    return SavedGpu(index, _str(g["uuid"]), _str(g["name"]), float(limit_w), owner, saved_at)


def corrupt_message(path: Path, error: Exception) -> str:
    detail = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
    return (
        f"saved power-limit state {path} is corrupt or not a PALS state file ({detail}); check the limits by hand "
        "(nvidia-smi -q -d POWER), set them with nvidia-smi -pl, then delete that file"
    )


def load_state(path: str | os.PathLike) -> SavedState | None:
    """Read a state file; None if there is none.

    Raises:
        ConfigError: the file exists but cannot be read or is not a valid state (one line, with the fix).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError(f"cannot read saved power-limit state {path} ({e.strerror}); check the path") from e
    if len(raw) > MAX_STATE_BYTES:
        raise ConfigError(corrupt_message(path, ValueError(f"over {MAX_STATE_BYTES} bytes")))
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ConfigError(corrupt_message(path, e)) from e
    return SavedState.from_json(data, path)


def write_state(path: Path, state: SavedState | None) -> None:
    """Replace the file with `state` (atomically), or remove it when `state` is None or lists no GPU.

    Call it only under `state_lock(path)`, after reading the current content there.
    """
    if state is None or not state.gpus:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    ensure_private_dir(path.parent)
    atomic_write_text(path, json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n")


_process_locks: dict[str, threading.RLock] = {}
_process_depth: dict[str, int] = {}
_registry_lock = threading.Lock()


@contextlib.contextmanager
def state_lock(path: Path) -> Iterator[None]:
    """Exclusive access to state file `path` for one read-modify-write, across processes.

    Re-entrant within a process (a signal handler that restores while the main thread is already
    inside, or a second guard in the same process), which a bare flock would deadlock on.
    """
    key = os.path.abspath(path)
    with _registry_lock:
        rlock = _process_locks.setdefault(key, threading.RLock())
    with rlock:
        depth = _process_depth.get(key, 0)
        _process_depth[key] = depth + 1
        try:
            if depth:
                yield
                return
            ensure_private_dir(path.parent)
            lock_path = path.with_name(f".{path.name}.lock")
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise ConfigError(f"cannot open {lock_path} ({e.strerror}); make {path.parent} yours (chmod 700)") from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)
        finally:
            _process_depth[key] -= 1
