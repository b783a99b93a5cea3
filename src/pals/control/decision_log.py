"""The decision log: one `IntervalRecord` per control interval, appended to a file and kept in memory.

Each line of the file is `IntervalRecord.to_json()` in compact JSON (`decisions.jsonl`; every key
is documented in `docs/decisions-schema.md` and checked by `pals/data/decisions.schema.json`).

The file is appended to (a restarted controller continues it; a new run starts again at
`interval` 0) and rotated by size: when the next line would take it past `max_bytes`, it becomes
`decisions.jsonl.1.gz` (older ones move up to `.2.gz` ... and the one past `keep` is deleted), and a
fresh file starts. Compression runs on a background thread, so a rotation never stalls a control
interval; until it finishes the rotated file sits uncompressed as `decisions.jsonl.1`, which the
readers also take. `read` and `read_records` read the whole history, oldest first.

Default size: at one line per 500 ms interval (~1.2 kB) a controller logs ~200 MB a day.
`DEFAULT_MAX_BYTES` (64 MiB, about 7.5 hours) keeps the live file small enough to `tail` and `jq`,
and compresses in a second or two of background CPU to ~3.7 MB (JSON lines shrink ~18x; measured
by `benchmarks/bench_soak.py`); `DEFAULT_KEEP` (20 rotated files, ~75 MB on disk) keeps about six
days of history.

A write that fails (a full disk, a lost mount) never stops control: the record stays in memory,
the error is counted (`errors`, `lines_lost`, `last_error`), a partly written line is cut off the
file, and writing resumes when it can.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import logging
import os
import shutil
import threading
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from pals.control.record import IntervalRecord
from pals.core.io import dumps_json
from pals.errors import ConfigError

DEFAULT_MAX_BYTES = 64 * 2**20
"""Rotate the live file when the next line would take it past this size (see the module docstring)."""
DEFAULT_KEEP = 20
"""Rotated files kept (`decisions.jsonl.1.gz` newest ... `.20.gz` oldest)."""
DEFAULT_MEMORY_RECORDS = 10_000
"""Records held in memory for `GET /decisions`, plots and `records()` (the summary does not need them)."""

_log = logging.getLogger(__name__)

Opener = Callable[[Path], BinaryIO]
"""Opens the live file for appending bytes (tests pass one whose writes fail)."""


def _open_append(path: Path) -> BinaryIO:
    return open(path, "ab", buffering=0)


class DecisionLog:
    """Append-only, size-rotated JSON-lines file plus the last records in memory.

    Args:
        path: file to write (parent directories are created); None keeps records in memory only.
        max_bytes: rotate the live file at this size (None: never rotate).
        keep: rotated (compressed) files to keep; 0 deletes the rotated file.
        memory_records: how many recent records to hold in memory.
        append: continue an existing file (True) or start it afresh (False: the old file and its
            rotated history are kept, the old file rotated away first).
        opener: opens the live file for appending bytes.

    Raises:
        ConfigError: the file cannot be created or opened (a bad `--out`): said once, at start.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        keep: int = DEFAULT_KEEP,
        memory_records: int = DEFAULT_MEMORY_RECORDS,
        append: bool = True,
        opener: Opener = _open_append,
    ) -> None:
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
            raise ConfigError(f"decision log max_bytes must be a positive integer, got {max_bytes!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ConfigError(f"decision log keep must be an integer >= 0, got {keep!r}")
        if isinstance(memory_records, bool) or not isinstance(memory_records, int) or memory_records < 1:
            raise ConfigError(f"decision log memory_records must be an integer >= 1, got {memory_records!r}")
        self.path = Path(path) if path is not None else None
        self.max_bytes = max_bytes
        self.keep = keep
        self._opener = opener
        # Each record with the JSON dict written for it: `recent()` hands out the logged form as is.
        self._recent: collections.deque[tuple[IntervalRecord, dict[str, Any]]] = collections.deque(maxlen=memory_records)
        self._lock = threading.Lock()
        self._error_lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._size = 0
        """Bytes of whole lines in the live file (a failed write is cut back to this)."""
        self._compressor: threading.Thread | None = None
        self.errors = 0
        """File operations that failed (writes, rotations, compressions)."""
        self.lines_lost = 0
        """Records that are in memory but not in the file."""
        self.last_error: str | None = None
        if self.path is not None:
            self._start(append)

    def _start(self, append: bool) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not append and self.path.exists() and self.path.stat().st_size > 0:
                self._rotate_files()
            self._open()
        except OSError as error:
            raise ConfigError(f"cannot write the decision log {self.path}: {error.strerror or error}; "
                              "choose a writable output directory") from error

    def _open(self) -> None:
        """Open the live file for appending; a partial last line (a crash mid-write) is ended first."""
        assert self.path is not None
        size = self.path.stat().st_size if self.path.exists() else 0
        self._file = self._opener(self.path)
        if size > 0 and _last_byte(self.path) != b"\n":
            self._write_all(b"\n")
            size += 1
        self._size = size

    # -- writing ----------------------------------------------------------------------------------

    def append(self, record: IntervalRecord) -> dict[str, Any]:
        """Keep `record` in memory and append its line to the file (never raises on I/O errors).

        Returns the logged JSON form (`record.to_json()`; shared with `recent()`: read, don't modify).
        """
        data = record.to_json()
        line = (dumps_json(data, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            self._recent.append((record, data))
            if self.path is None:
                return data
            try:
                if self.max_bytes is not None and self._size > 0 and self._size + len(line) > self.max_bytes:
                    self._rotate()
                if self._file is None:
                    self._open()
                self._write_all(line)
                self._size += len(line)
            except OSError as error:
                self._failed(error)
        return data

    def _write_all(self, data: bytes) -> None:
        assert self._file is not None
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            if written is None:  # a non-blocking raw file that could not take any: treat as full
                raise OSError(28, "write accepted no bytes")
            view = view[written:]

    def _failed(self, error: OSError) -> None:
        """Count a failed write, cut off any partial line, and reopen at the next append."""
        with self._error_lock:
            self.errors += 1
            self.lines_lost += 1
            self.last_error = f"{type(error).__name__}: {error}"
        if self.errors == 1 or self.errors % 1000 == 0:
            _log.warning("decision log %s: %s (%d lines not written so far)", self.path, self.last_error, self.lines_lost)
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except OSError:
                pass
        try:
            os.truncate(self.path, self._size)  # frees what a partial line took, even on a full disk
        except OSError:
            pass  # `_open` ends a partial line before the next one

    # -- rotation ---------------------------------------------------------------------------------

    def _rotate(self) -> None:
        """Move the live file to `.1` (compressed in the background) and start a fresh one."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._rotate_files()
        self._size = 0

    def _rotate_files(self) -> None:
        assert self.path is not None
        if self._compressor is not None:
            self._compressor.join()  # the previous rotation's file is in place before names shift
            self._compressor = None
        for k in range(self.keep, 0, -1):
            for suffix in (".gz", ""):
                older = _rotated(self.path, k, suffix)
                if not older.exists():
                    continue
                if k == self.keep:
                    older.unlink()
                else:
                    os.replace(older, _rotated(self.path, k + 1, suffix))
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
            return
        plain = _rotated(self.path, 1, "")
        os.replace(self.path, plain)
        self._compressor = threading.Thread(target=self._compress, args=(plain,), name="pals-log-gzip", daemon=True)
        self._compressor.start()

    def _compress(self, plain: Path) -> None:
        """gzip `plain` beside itself; on failure it stays uncompressed (the readers take both)."""
        target = plain.with_name(plain.name + ".gz")
        partial = plain.with_name(plain.name + ".gz.tmp")
        try:
            with plain.open("rb") as source, gzip.open(partial, "wb", compresslevel=6) as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            os.replace(partial, target)
            plain.unlink()
        except OSError as error:
            partial.unlink(missing_ok=True)
            # Not under `_lock`: a rotation holds it while it waits for this thread.
            with self._error_lock:
                self.errors += 1
                self.last_error = f"compressing {plain.name}: {type(error).__name__}: {error}"
            _log.warning("decision log: %s", self.last_error)

    # -- reading the memory -------------------------------------------------------------------------

    def records(self, n: int | None = None) -> list[IntervalRecord]:
        """The last `n` records held in memory (all of them when None), oldest first."""
        return [record for record, _ in self._last(n)]

    def recent(self, n: int | None = None) -> list[dict[str, Any]]:
        """The last `n` records as logged (`IntervalRecord.to_json()`), oldest first.

        Kept for readers that index the JSON form; new code should use `records()`.
        """
        return [data for _, data in self._last(n)]

    def _last(self, n: int | None) -> list[tuple[IntervalRecord, dict[str, Any]]]:
        with self._lock:
            items = list(self._recent)
        return items if n is None else items[-n:] if n > 0 else []

    def close(self) -> None:
        """Close the file and wait for a rotation's compression to finish."""
        with self._lock:
            compressor, self._compressor = self._compressor, None
            if self._file is not None:
                try:
                    self._file.close()
                except OSError as error:
                    self._failed(error)
                self._file = None
        if compressor is not None:
            compressor.join()

    # -- reading files ------------------------------------------------------------------------------

    @staticmethod
    def files(path: str | Path) -> list[Path]:
        """The log's files oldest first: rotated ones (`.N.gz` or `.N`, highest N first), then `path`."""
        path = Path(path)
        found: dict[int, Path] = {}
        for candidate in path.parent.glob(glob.escape(path.name) + ".*"):
            rest = candidate.name[len(path.name) + 1:]
            number = rest[:-3] if rest.endswith(".gz") else rest
            if number.isdigit() and (int(number) not in found or rest.endswith(".gz")):
                found[int(number)] = candidate  # both forms of one file (a compression that did
                # not finish removing the original): the compressed one is complete
        return [found[k] for k in sorted(found, reverse=True)] + ([path] if path.exists() else [])

    @staticmethod
    def read(path: str | Path, history: bool = True) -> list[dict[str, Any]]:
        """Load a decision log, one JSON dict per line, oldest first.

        `history`: include the rotated files (`path.N.gz`). A line that does not parse (cut short
        by a full disk or a crash) is skipped with a logged warning.

        Raises:
            ConfigError: `path` does not exist.
        """
        return list(DecisionLog.iter_lines(path, history))

    @staticmethod
    def iter_lines(path: str | Path, history: bool = True) -> Iterator[dict[str, Any]]:
        """`read` one line at a time (a week of history need not fit in memory)."""
        path = Path(path)
        files = DecisionLog.files(path) if history else [path]
        if not path.exists() and not (history and files):
            raise ConfigError(f"no decision log at {path}")
        for file in files:
            yield from _lines(file)

    @staticmethod
    def read_records(path: str | Path, history: bool = True) -> list[IntervalRecord]:
        """Load a decision log as typed records (`IntervalRecord.from_json` of each line)."""
        return [IntervalRecord.from_json(data) for data in DecisionLog.read(path, history)]


def _rotated(path: Path, k: int, suffix: str) -> Path:
    return path.with_name(f"{path.name}.{k}{suffix}")


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1)


def _lines(file: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if file.name.endswith(".gz") else open
    number = 0
    try:
        with opener(file, "rt", encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    _log.warning("decision log %s line %d is not JSON (cut short?): skipped", file, number)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        _log.warning("decision log %s is damaged after line %d (%s): the rest skipped", file, number, error)
