"""File output every layer shares: atomic writes and strict JSON.

Atomic: write a temporary file beside the target, fsync, rename; a reader (or a crash) sees
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True, mode: int | None = None) -> None:
    """Replace `path` with `data` in one rename (same directory, so same filesystem).

    Args:
        path: The file to replace; its directory is created if missing.
        data: The new content.
        durable: fsync the file before the rename and its directory after it, so the new content
            survives a power cut once this returns. False for records that live only as long as
            the processes exchanging them (the batch-cap channel, rewritten every control interval
            and from inside vLLM's scheduler step): the rename alone already keeps a reader from
            seeing half a record, and an fsync there would stall the writer.
        mode: Permission bits of the new file; None keeps `tempfile.mkstemp`'s owner-only 0o600.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        # Interrupted or failed: leave the old file as it was and no stray temporary.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    if durable:
        _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable; best effort (some filesystems refuse a directory fsync)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True, mode: int | None = None) -> None:
    """Replace `path` with UTF-8 `text` atomically (arguments as `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable, mode=mode)


class NanSafeJSONEncoder(json.JSONEncoder):
    """JSON that strict parsers (browsers, Prometheus tooling, jq) accept: NaN and inf become null,
    numpy scalars and arrays become numbers and lists."""

    def default(self, obj):  # noqa: D102 - json's hook
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - numpy is a core dependency
            np = None
        if np is not None:
            if isinstance(obj, np.generic):
                return obj.item()
            if isinstance(obj, np.ndarray):
                return obj.tolist()
        if hasattr(obj, "to_json"):
            return obj.to_json()
        return super().default(obj)

    def iterencode(self, obj, _one_shot=False):
        return super().iterencode(_finite(obj), _one_shot)


def _finite(obj):
    """A copy of `obj` with every non-finite float replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def dumps_json(obj, **kwargs) -> str:
    """`json.dumps` with `NanSafeJSONEncoder` (NaN/inf -> null, numpy -> Python)."""
    return json.dumps(obj, cls=NanSafeJSONEncoder, allow_nan=False, **kwargs)
