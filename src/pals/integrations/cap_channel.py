"""A versioned, cross-process channel for the engine's batch cap.

The controller (in the `pals` process) writes a command record; the vLLM
scheduler subclass (in vLLM's engine-core process) polls it at most every
`min_interval_s` and writes back what it applied. Both records are one small
fixed-size binary file each, replaced atomically (a temporary file, then
`os.replace`), so a reader sees the old record or the new one, never a mix.

The channel's directory is private: `prepare_channel_dir` creates it with mode
0700, and `CapWriter` refuses (one ConfigError naming the fix) a directory that
is a symlink, is owned by another user (root excepted), or is writable by group
or others. Otherwise another local user could pre-create `/tmp/pals-<uid>`,
read or forge the caps, or plant symlinks. The temporary file is created with
O_CREAT|O_EXCL|O_NOFOLLOW under an unpredictable name, so a planted symlink is
never followed (the write retries under a fresh name), and the rename replaces
a symlink at the record's own path instead of writing through it.

A reader still checks every record, because files can be written by hand or by
an older writer: a record with the wrong length, magic, format or CRC-32 is
*torn* and ignored; a record whose sequence number is not newer than the last
one applied is *stale* and ignored. Nothing is ever applied half.

Standard library and `pals.errors` only: vLLM's engine-core process imports
this module, and it must not pull anything heavy (or anything vLLM lacks) into
that process.
"""

from __future__ import annotations

import os
import secrets
import stat
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable

from pals.errors import ConfigError

ENV_VAR = "PALS_CAP_CHANNEL"
"""Environment variable that names the command file; vLLM's engine process inherits it."""

APPLIED_SUFFIX = ".applied"
"""The scheduler's report sits next to the command file, with this suffix."""

KIND_COMMAND = 1
KIND_APPLIED = 2

_MAGIC = b"PALS"
_FORMAT_VERSION = 1
# magic, format, kind, seq, cap, effective_cap, running, waiting, running_at_apply, max_cap, time_s | crc32.
_BODY = struct.Struct("<4sHHQqqqqqqd")
_CRC = struct.Struct("<I")
RECORD_SIZE_BYTES = _BODY.size + _CRC.size


@dataclass(frozen=True)
class CapRecord:
    """One record of the channel.

    For a command, `cap` is the requested batch cap and `effective_cap` and
    `running` are -1. For an applied report, `seq` and `cap` echo the command
    that was applied, `effective_cap` is the limit the scheduler set on this
    step (above `cap` while the drain-safe path waits for running requests to
    finish), `running` and `waiting` are the request counts it saw,
    `running_at_apply` the running count when it first applied this command, and
    `max_cap` is the engine's `max_num_seqs` (the largest cap it can apply).
    """

    kind: int
    seq: int
    cap: int
    time_s: float
    """Wall-clock time (`time.time()`) the record was written. Units: s."""
    effective_cap: int = -1
    running: int = -1
    max_cap: int = -1
    waiting: int = -1
    running_at_apply: int = -1

    @property
    def settled(self) -> bool:
        """Applied report: the running count follows the cap (at it, or under it with nothing waiting)."""
        return 0 <= self.running <= self.cap and (self.running == self.cap or self.waiting == 0)


def encode_record(record: CapRecord) -> bytes:
    """Pack `record` into RECORD_SIZE_BYTES bytes, CRC-32 last."""
    body = _BODY.pack(
        _MAGIC,
        _FORMAT_VERSION,
        record.kind,
        record.seq,
        record.cap,
        record.effective_cap,
        record.running,
        record.waiting,
        record.running_at_apply,
        record.max_cap,
        record.time_s,
    )
    return body + _CRC.pack(zlib.crc32(body))


def decode_record(data: bytes) -> CapRecord | None:
    """Unpack one record, or None if it is torn, corrupt or of another format."""
    if len(data) != RECORD_SIZE_BYTES:
        return None
    body, crc = data[: _BODY.size], data[_BODY.size :]
    if _CRC.unpack(crc)[0] != zlib.crc32(body):
        return None
    magic, fmt, kind, seq, cap, effective_cap, running, waiting, at_apply, max_cap, time_s = _BODY.unpack(body)
    if magic != _MAGIC or fmt != _FORMAT_VERSION or kind not in (KIND_COMMAND, KIND_APPLIED):
        return None
    return CapRecord(kind, seq, cap, time_s, effective_cap, running, max_cap, waiting, at_apply)


_RECORD_FILE_MODE = 0o644
"""The records are not secret; the private directory is what keeps other users out."""
CHANNEL_DIR_MODE = 0o700
_TEMP_NAME_ATTEMPTS = 8


def prepare_channel_dir(channel_path: str | os.PathLike) -> str:
    """Create the channel's directory (mode 0700; parents as usual) if missing, then check it.

    Returns the directory. Raises ConfigError as `check_channel_dir`.
    """
    directory = os.path.dirname(os.path.abspath(os.fspath(channel_path)))
    parent = os.path.dirname(directory)
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(directory, CHANNEL_DIR_MODE)  # the mode is masked by umask, never widened by it
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(
            f"cannot create the cap channel directory {directory} ({e.strerror}); "
            "pass --cap-channel in a directory of your own"
        ) from e
    check_channel_dir(directory)
    return directory


def check_channel_dir(directory: str | os.PathLike) -> None:
    """Refuse a channel directory another user could control.

    Raises:
        ConfigError: it is a symlink, not a directory, owned by another user (root is trusted), or
            writable by group or others; the message names the fix.
    """
    directory = os.fspath(directory)
    try:
        info = os.lstat(directory)
    except OSError as e:
        raise ConfigError(f"cap channel directory {directory} is unusable ({e.strerror}); create it: mkdir -m 700 {directory}") from e
    fix = f"remove it (rm -r {directory}) so PALS can create its own, or pass --cap-channel in a directory of your own"
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"cap channel directory {directory} is a symlink, which another user may have planted; {fix}")
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"cap channel directory {directory} is not a directory; {fix}")
    uid = os.geteuid()
    if info.st_uid not in (uid, 0):
        raise ConfigError(f"cap channel directory {directory} is owned by uid {info.st_uid}, not by you (uid {uid}); {fix}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"cap channel directory {directory} is writable by group or others (mode "
            f"{stat.S_IMODE(info.st_mode):o}); make it private: chmod 700 {directory}"
        )


def _write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` by a rename; the temporary is O_EXCL|O_NOFOLLOW, never followed.

    Not durable: a record matters only to the live processes at both ends, and an fsync per write
    would stall the scheduler step that reports.
    """
    directory, name = os.path.split(os.path.abspath(path))
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_TEMP_NAME_ATTEMPTS):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, flags, _RECORD_FILE_MODE)
        except FileExistsError:
            continue  # something (perhaps a planted symlink) has that name: never touch it, pick another
        try:
            try:
                os.fchmod(fd, _RECORD_FILE_MODE)  # exactly 0644 whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            # Interrupted or failed: the old record stays, and no stray temporary is left.
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return
    raise FileExistsError(f"could not create a temporary file in {directory} after {_TEMP_NAME_ATTEMPTS} tries")


def read_record_file(path: str, size_bytes: int) -> bytes | None:
    """The file's first `size_bytes` + 1 bytes; None when absent; b"" (a torn record) for a symlink,
    FIFO or other non-regular file. Shared by the cap channel and the engine-state record."""
    try:
        # No following symlinks, and no blocking on a FIFO planted at the path.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        # Read one byte more than a record, so an over-long file counts as torn.
        return os.read(fd, size_bytes + 1)
    finally:
        os.close(fd)


def read_record(path: str) -> CapRecord | None:
    """The record in `path`, or None if absent, torn or corrupt."""
    data = read_record_file(path, RECORD_SIZE_BYTES)
    return None if data is None else decode_record(data)


class CapWriter:
    """The controller's end: writes batch-cap commands, reads what was applied.

    Args:
        path: The command file. Its directory is created (mode 0700) if missing.

    Raises:
        ConfigError: the directory is not private to this user (see `check_channel_dir`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        prepare_channel_dir(self.path)
        self.applied_path = self.path + APPLIED_SUFFIX
        # Continue after any record already there, so a restarted controller's
        # first command is newer than the one the scheduler last applied.
        previous = read_record(self.path)
        self._seq = previous.seq if previous is not None else 0
        self._lock = threading.Lock()

    def write(self, cap: int) -> CapRecord:
        """Atomically publish a new batch cap and return the record written."""
        if int(cap) < 1:
            raise ValueError(f"batch cap must be at least 1, got {cap}")
        with self._lock:
            self._seq += 1
            record = CapRecord(KIND_COMMAND, self._seq, int(cap), time.time())
            _write_atomic(self.path, encode_record(record))
        return record

    @property
    def last_seq(self) -> int:
        return self._seq

    def read_applied(self) -> CapRecord | None:
        """The scheduler's latest report, or None if it has not reported yet."""
        record = read_record(self.applied_path)
        return record if record is not None and record.kind == KIND_APPLIED else None


class CapReader:
    """The scheduler's end: polls for new commands and reports what it applied.

    Args:
        path: The command file (it may not exist yet).
        min_interval_s: The file is read at most this often; `poll()` calls in
            between return None at the cost of one clock read.
        clock: Monotonic time source, injectable for tests.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        min_interval_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        self.path = os.fspath(path)
        self.applied_path = self.path + APPLIED_SUFFIX
        self.min_interval_s = float(min_interval_s)
        self._clock = clock
        self._next_read_s = float("-inf")
        self.last_seq = 0
        self.reads = 0
        self.ignored_torn = 0
        self.ignored_stale = 0

    def poll(self, force: bool = False) -> CapRecord | None:
        """Return a command newer than the last one returned, else None.

        Torn or corrupt records and records not newer than the last one are
        ignored (and counted in `ignored_torn` / `ignored_stale`).
        """
        now_s = self._clock()
        if not force and now_s < self._next_read_s:
            return None
        self._next_read_s = now_s + self.min_interval_s
        self.reads += 1
        data = read_record_file(self.path, RECORD_SIZE_BYTES)
        if data is None:
            return None
        record = decode_record(data)
        if record is None or record.kind != KIND_COMMAND or record.cap < 1:
            self.ignored_torn += 1
            return None
        if record.seq <= self.last_seq:
            if record.seq < self.last_seq:
                self.ignored_stale += 1
            return None
        self.last_seq = record.seq
        return record

    def report_applied(
        self,
        seq: int,
        cap: int,
        effective_cap: int,
        running: int,
        max_cap: int = -1,
        waiting: int = -1,
        running_at_apply: int = -1,
    ) -> CapRecord:
        """Atomically publish what the scheduler applied."""
        record = CapRecord(
            KIND_APPLIED, int(seq), int(cap), time.time(), int(effective_cap), int(running), int(max_cap),
            int(waiting), int(running_at_apply),
        )
        _write_atomic(self.applied_path, encode_record(record))
        return record


def reader_from_env(min_interval_s: float = 0.05) -> CapReader | None:
    """A reader on the file named by $PALS_CAP_CHANNEL, or None when it is unset."""
    path = os.environ.get(ENV_VAR)
    return CapReader(path, min_interval_s=min_interval_s) if path else None


def effective_cap(target_cap: int, running: int, max_num_seqs: int, drain_safe: bool) -> int:
    """The admission limit to set on one scheduler step.

    Args:
        target_cap: The batch cap the controller asked for.
        running: Requests running before this step.
        max_num_seqs: The engine's `--max-num-seqs` (runner slots); never exceeded.
        drain_safe: True on engines where the limit is also checked against the
            running count (vLLM before 0.33 asserts `len(running) <=
            max_num_running_reqs`): the limit then never drops below `running`
            and falls step by step as requests finish, so nothing is preempted
            and the assertion cannot trip. False where the engine has a separate
            admission limit (`max_num_active_reqs`, vLLM 0.33+), which is set
            directly.

    Returns:
        The limit, in [1, max_num_seqs].
    """
    target = min(max(1, int(target_cap)), int(max_num_seqs))
    if drain_safe:
        target = min(max(target, int(running)), int(max_num_seqs))
    return target
