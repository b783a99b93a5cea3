"""Per-GPU ownership: one `flock`ed lock file per GPU UUID, held while a PALS process controls it.

Why flock: the lock belongs to the open file, and the kernel drops it when the process dies,
however it dies (kill -9, OOM killer, a segfault in a driver library), so a crash never leaves a
stale lock and no pid-liveness guess is needed. The descriptor is opened close-on-exec, so a
child process (vLLM, started by `pals serve`) never inherits the lock and cannot keep it alive.

Lock files are never deleted: unlinking a lock file another process has open splits one lock into
two. They are a few bytes each, one per GPU, and reused.

After locking, the holder writes who it is (pid, owner id, host, start time) into the file, so a
process that finds the GPU taken can name the holder in its error.

One process holds a GPU through one lock object: flock locks of two open files conflict even
within one process, so a second guard on the same GPU in the same process is refused too.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pals.errors import ConfigError

PRIVATE_DIR_MODE = 0o700
"""State and lock directories: only their owner may list or change them."""

_HOLDER_MAX_BYTES = 4096
_HOLDER_READ_ATTEMPTS = 200
_HOLDER_READ_PAUSE_S = 0.005
"""A holder writes its identity right after it locks; a reader that catches the gap retries for
up to about a second, then names the holder 'unknown'."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a GPU."""

    pid: int
    """Process id of the holder (on `host`)."""
    owner_id: str
    """Random id of the holder's guard: tells two guards of one process apart, and a reused pid."""
    host: str
    since: str
    """When the holder took the GPU (ISO 8601, UTC)."""

    def describe(self) -> str:
        mine = ", this process" if self.pid == os.getpid() else ""
        return f"PALS pid {self.pid} (owner {self.owner_id[:8]}{mine}, since {self.since})"


def lock_file_name(uuid: str) -> str:
    """The lock file of GPU `uuid` (characters other than letters, digits, '.', '_', '-' become '_')."""
    return "gpu-" + re.sub(r"[^A-Za-z0-9._-]", "_", uuid) + ".lock"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) if missing; the last level with mode 0700."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(f"cannot create {path} ({e.strerror}); make its parent writable or set PALS_STATE_DIR") from e
    if not path.is_dir():
        raise ConfigError(f"{path} exists and is not a directory; remove it or set PALS_STATE_DIR elsewhere")
    return path


class GpuLock:
    """An exclusive flock on one GPU's lock file; `release()` (or process death) frees it."""

    def __init__(self, path: Path, fd: int, uuid: str) -> None:
        self.path = path
        self.uuid = uuid
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # nobody holds it now: a reader must not name a stale holder
        except OSError:
            pass
        os.close(fd)  # closing the only descriptor drops the flock


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise ConfigError(
            f"cannot open GPU lock file {path} ({e.strerror}); make {path.parent} yours (chmod 700) "
            "or set PALS_STATE_DIR to a directory of your own"
        ) from e


def try_lock(lock_dir: Path, uuid: str, holder: LockHolder) -> GpuLock | None:
    """Take GPU `uuid`'s lock without waiting; None if another open file holds it.

    On success the file names `holder`. Raises ConfigError when the lock file cannot be opened.
    """
    ensure_private_dir(lock_dir)
    path = lock_dir / lock_file_name(uuid)
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise ConfigError(f"cannot lock {path} ({e.strerror}); is {lock_dir} on a filesystem without flock?") from e
    data = json.dumps(asdict(holder)).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    return GpuLock(path, fd, uuid)


def read_holder(lock_dir: Path, uuid: str) -> LockHolder | None:
    """Who the lock file of GPU `uuid` names; None if nobody (or it cannot be read)."""
    path = lock_dir / lock_file_name(uuid)
    for _ in range(_HOLDER_READ_ATTEMPTS):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            raw = os.read(fd, _HOLDER_MAX_BYTES)
        finally:
            os.close(fd)
        try:
            data = json.loads(raw)
            return LockHolder(int(data["pid"]), str(data["owner_id"]), str(data["host"]), str(data["since"]))
        except (ValueError, KeyError, TypeError):
            time.sleep(_HOLDER_READ_PAUSE_S)  # locked, identity not written yet
    return None


def is_locked(lock_dir: Path, uuid: str) -> bool:
    """True if some live process holds GPU `uuid`'s lock (probes without keeping it)."""
    path = lock_dir / lock_file_name(uuid)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise ConfigError(f"cannot open GPU lock file {path} ({e.strerror}); check its permissions") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def lock_all(lock_dir: Path, uuids: list[str], holder: LockHolder) -> list[GpuLock]:
    """Take every GPU's lock, or none: on the first GPU held by someone else, release what was
    taken and raise one ConfigError that names the holder.
    """
    taken: list[GpuLock] = []
    for uuid in sorted(set(uuids)):
        try:
            lock = try_lock(lock_dir, uuid, holder)
        except ConfigError:
            for done in taken:
                done.release()
            raise
        if lock is None:
            for done in taken:
                done.release()
            other = read_holder(lock_dir, uuid)
            who = other.describe() if other else "another PALS process (pid unknown)"
            stop = (
                "close the other PowerLimitGuard first"
                if other and other.pid == os.getpid()
                else f"stop it first (kill -TERM {other.pid}: it restores the limits as it exits) or wait for it"
                if other
                else "stop the other PALS process first"
            )
            raise ConfigError(f"GPU {uuid} is already controlled by {who}; {stop}")
        taken.append(lock)
    return taken
