"""The decision log: one `IntervalRecord` per control interval, appended to a file and kept in memory.

Each line of the file is `IntervalRecord.to_json()` in compact JSON (`decisions.jsonl`; every key
is documented in `docs/decisions-schema.md` and checked by `pals/data/decisions.schema.json`).
"""

from __future__ import annotations

import collections
import json
import threading
from pathlib import Path
from typing import Any

from pals.control.record import IntervalRecord
from pals.core.io import dumps_json


class DecisionLog:
    """Append-only JSON-lines file plus the last `keep` records in memory (for GET /decisions).

    Args:
        path: file to write (parent directories are created); None keeps records in memory only.
        keep: how many recent records to hold in memory.
    """

    def __init__(self, path: str | Path | None = None, keep: int = 10_000) -> None:
        self.path = Path(path) if path is not None else None
        # Each record with the JSON dict written for it: `recent()` hands out the logged form as is.
        self._recent: collections.deque[tuple[IntervalRecord, dict[str, Any]]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")

    def append(self, record: IntervalRecord) -> None:
        data = record.to_json()
        line = dumps_json(data, separators=(",", ":"))
        with self._lock:
            self._recent.append((record, data))
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def records(self, n: int | None = None) -> list[IntervalRecord]:
        """The last `n` records (all kept ones when None), oldest first."""
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
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    @staticmethod
    def read(path: str | Path) -> list[dict[str, Any]]:
        """Load a decision log written by `DecisionLog`, one JSON dict per line."""
        with Path(path).open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    @staticmethod
    def read_records(path: str | Path) -> list[IntervalRecord]:
        """Load a decision log as typed records (`IntervalRecord.from_json` of each line)."""
        return [IntervalRecord.from_json(data) for data in DecisionLog.read(path)]
