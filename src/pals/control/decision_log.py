"""The decision log: one JSON object per control interval, appended to a file and kept in memory.

Each record (written by `ControlLoop.step`) has: `t_s` (seconds since the loop started),
`time_s` (node clock), `interval`, `policy`, `sample` (the interval's measured summary),
`budget`, `target`, `decision` (chosen configuration, reason, candidates considered / feasible /
meeting the target, predictions), `predicted` vs `measured` (throughput and power for the
configuration that was in force during the interval), `qos_violation`, `config_changed`,
`decide_ms`, `warnings`.
"""

from __future__ import annotations

import collections
import json
import math
import threading
from pathlib import Path
from typing import Any


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and inf become None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    return value


class DecisionLog:
    """Append-only JSON-lines file plus the last `keep` records in memory (for GET /decisions).

    Args:
        path: file to write (parent directories are created); None keeps records in memory only.
        keep: how many recent records to hold in memory.
    """

    def __init__(self, path: str | Path | None = None, keep: int = 10_000) -> None:
        self.path = Path(path) if path is not None else None
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        record = _clean(record)
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._recent.append(record)
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def recent(self, n: int | None = None) -> list[dict[str, Any]]:
        """The last `n` records (all kept ones when None), oldest first."""
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
        """Load a decision log written by `DecisionLog`."""
        with Path(path).open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
