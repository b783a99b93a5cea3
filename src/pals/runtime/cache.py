"""Where profiles, predictors and ground truth built on the simulated node are kept between runs.

A cached result measured by another version of the simulator or the profiler must not be reused,
so every key carries a fingerprint of that code.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pals.model.profiler as profiler
import pals.sim as sim

CACHE_DIR_ENV = "PALS_CACHE_DIR"
"""Environment variable that moves the cache (tests and parallel runs point it at their own folder)."""


def cache_dir() -> Path:
    """Where profiles and predictors built on the fly are kept ($PALS_CACHE_DIR or ~/.cache/pals)."""
    root = os.environ.get(CACHE_DIR_ENV)
    return Path(root) if root else Path.home() / ".cache" / "pals"


def simulator_fingerprint(extra: str = "") -> str:
    """Short hash of the simulator's and profiler's source (plus `extra`).

    Profiles and ground truth built on the fly are cached across runs; a cached one measured by
    another version of the physics or the profiler must not be reused, so the key changes
    whenever that code does.
    """
    digest = hashlib.sha256(extra.encode())
    for path in sorted(Path(sim.__file__).parent.glob("*.py")) + [Path(profiler.__file__)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]
