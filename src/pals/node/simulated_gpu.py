"""SimulatedGpuBackend: the GPU TEST DOUBLE, for hosts without a GPU.

This is not a GPU. It stands in for one behind `pals.node.gpu_backend.GpuBackend` so
that the power-limit guard, `pals restore`, `pals doctor` and the real-node
code can be exercised on a CPU-only machine. Its numbers come from the
simulator's GPU presets (`pals.sim.hardware.GpuSpec`: power-limit range, TDP,
idle draw with a context loaded), so they are physically consistent:

- natural draw = `natural_power_w(index, t_s)` if given, else
  idle_context_w + utilisation * (tdp_w - idle_context_w);
- power = min(power limit, natural draw): a cap above the natural draw
  changes nothing, as on real GPUs;
- energy integrates that power over the clock (wall clock by default), from
  0 J when the backend opens (a per-process counter: "since driver load" is
  approximated by "since open").

The power limits themselves live in a small JSON "driver state" file, shared
by every process that opens the same path: the double plays the driver, which
outlives a killed PALS process. That is what makes the kill -9 followed by
`pals restore` test meaningful. Writes go through `pals.core.io.atomic_write_text`
(temporary file, fsync, rename, fsync of the folder) under an advisory lock.

API (besides GpuBackend):
    SimulatedGpuBackend(spec, num_gpus, driver_state_path, *, utilisation=0.8,
                        natural_power_w=None, clock=None, settable=True)
    SimulatedGpuBackend.open(sim_gpus=4, sim_gpu="A100-SXM4-40GB", driver_state_path=None, ...)
    .set_utilisation(utilisation, index=None)   # feed load (0-1) from a workload
    .natural_power_w = callable(index, t_s) -> W  # or a full power model
    .fail_writes = PalsError | None               # inject a driver failure (tests)
    default_driver_state_path(num_gpus, gpu)      # ~/.local/state/pals/sim-gpu-<n>x<preset>/driver-state.json

The default driver-state file is per user ($PALS_STATE_DIR, else $XDG_STATE_HOME/pals, else
~/.local/state/pals) and per configuration (one directory per GPU count and preset), so two
configurations never fight over one file, and nothing lands in a shared $TMPDIR. Tests pass a
path under pytest's tmp_path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from pals.core.clock import Clock, WallClock
from pals.core.io import atomic_write_text
from pals.core.paper import PAPER_GPU
from pals.errors import ConfigError, PalsError, PermissionDenied
from pals.node.gpu_backend import NO_PERMISSION_FIX, check_index, check_limit_in_range
from pals.node.gpu_lock import ensure_private_dir
from pals.node.saved_limits import pals_state_dir
from pals.sim.hardware import get_gpu

DRIVER_SCHEMA = "pals-simulated-gpu-driver/1"
DEFAULT_SIM_GPU = PAPER_GPU
MAX_SIM_GPUS = 64
"""More GPUs than any node has; a larger count is a typo, not a node."""
MAX_DRIVER_STATE_BYTES = 1 << 20
"""A driver-state file lists a few GPUs; anything larger is not one."""


def default_driver_state_path(num_gpus: int, gpu: str) -> Path:
    """Where the test double keeps its 'driver' state unless told otherwise (per user, per configuration)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", gpu)
    return pals_state_dir() / f"sim-gpu-{int(num_gpus)}x{safe}" / "driver-state.json"


def _write_driver_state(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


class SimulatedGpuBackend:
    """GPU TEST DOUBLE: `num_gpus` identical simulated GPUs of model `spec`.

    Args:
        spec: a `pals.sim.hardware.GpuSpec` (or any object with name, tdp_w,
            power_limit_min_w, power_limit_max_w, idle_context_w).
        num_gpus: how many GPUs the double exposes.
        driver_state_path: JSON file holding the limits (the 'driver'). Created
            with every limit at the default (tdp_w) if absent; reused if present.
        utilisation: load 0-1 for the default natural-draw model.
        natural_power_w: optional `(index, t_s) -> W` draw model; overrides `utilisation`.
        clock: time source for energy integration (default: wall clock).
        settable: False plays a process without permission to set limits.

    Raises:
        ConfigError: the driver-state file describes different GPUs, or is corrupt.
    """

    kind = "simulated"

    def __init__(
        self,
        spec: Any,
        num_gpus: int,
        driver_state_path: str | os.PathLike | None = None,
        *,
        utilisation: float = 0.8,
        natural_power_w: Callable[[int, float], float] | None = None,
        clock: Clock | None = None,
        settable: bool = True,
    ) -> None:
        if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or not 1 <= num_gpus <= MAX_SIM_GPUS:
            raise ConfigError(f"sim_gpus must be a whole number within 1-{MAX_SIM_GPUS}, got {num_gpus!r}")
        self.spec = spec
        self._num_gpus = int(num_gpus)
        self.driver_state_path = (
            Path(driver_state_path) if driver_state_path else default_driver_state_path(num_gpus, spec.name)
        )
        self._utilisation = [0.0] * self._num_gpus
        self.set_utilisation(utilisation)
        self.natural_power_w = natural_power_w
        self._clock = clock or WallClock()
        self.settable = settable
        self._lock_depth = 0
        self.fail_writes: PalsError | None = None
        """When set, every limit write raises this error (plays a driver failure)."""
        t0 = self._clock.now_s()
        self._last_t_s = [t0] * self._num_gpus
        self._energy_j = [0.0] * self._num_gpus
        self._init_driver_state()

    @classmethod
    def open(
        cls,
        sim_gpus: int = 4,
        sim_gpu: str = DEFAULT_SIM_GPU,
        driver_state_path: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> "SimulatedGpuBackend":
        """Build the double from a simulator GPU preset name (e.g. 'A100-SXM4-40GB')."""
        return cls(get_gpu(sim_gpu), sim_gpus, driver_state_path, **kwargs)

    # --- the 'driver' file ------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock_depth:
            # Re-entered from a signal handler (the guard restoring on SIGTERM) while
            # this process already holds the lock: a second flock would deadlock.
            yield
            return
        lock_path = self.driver_state_path.with_name(self.driver_state_path.name + ".lock")
        ensure_private_dir(lock_path.parent)
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        try:
            with open(self.driver_state_path, "rb") as handle:
                raw = handle.read(MAX_DRIVER_STATE_BYTES + 1)
            if len(raw) > MAX_DRIVER_STATE_BYTES:
                raise ValueError(f"over {MAX_DRIVER_STATE_BYTES} bytes")
            data = json.loads(raw.decode("utf-8"))
            limits = [float(g["power_limit_w"]) for g in data["gpus"]]
            if not all(math.isfinite(w) and w > 0 for w in limits):
                raise ValueError(f"limits {limits} are not positive numbers of watts")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
            detail = (getattr(e, "strerror", None) or str(e)).splitlines()[0][:200] if str(e) else type(e).__name__
            raise ConfigError(
                f"simulated-GPU driver state {self.driver_state_path} is unreadable ({detail}); "
                "delete it to start fresh, or pass another --sim-state path"
            ) from e
        if data.get("schema") != DRIVER_SCHEMA or len(limits) != self._num_gpus or data.get("gpu") != self.spec.name:
            raise ConfigError(
                f"simulated-GPU driver state {self.driver_state_path} describes "
                f"{len(limits)}x {data.get('gpu')}, not {self._num_gpus}x {self.spec.name}; "
                "pass another --sim-state path or delete that file"
            )
        return data

    def _init_driver_state(self) -> None:
        with self._locked():
            if self.driver_state_path.exists():
                self._read()  # validates
                return
            _write_driver_state(
                self.driver_state_path,
                {
                    "schema": DRIVER_SCHEMA,
                    "gpu": self.spec.name,
                    "gpus": [
                        {"index": i, "uuid": self.uuid(i), "power_limit_w": float(self.spec.tdp_w)}
                        for i in range(self._num_gpus)
                    ],
                },
            )

    # --- load model ---------------------------------------------------------------

    def set_utilisation(self, utilisation: float, index: int | None = None) -> None:
        """Set the load (0-1) of one GPU, or of all when `index` is None."""
        if not 0.0 <= utilisation <= 1.0:
            raise ConfigError(f"utilisation must be within 0-1, got {utilisation}")
        targets = range(self._num_gpus) if index is None else [index]
        for i in targets:
            if index is not None:
                check_index(self, i)
            # Integrate energy up to now at the old load before switching.
            if hasattr(self, "_energy_j"):
                self._advance(i)
            self._utilisation[i] = float(utilisation)

    def _natural_w(self, index: int, t_s: float) -> float:
        if self.natural_power_w is not None:
            return float(self.natural_power_w(index, t_s))
        idle_w = float(self.spec.idle_context_w)
        return idle_w + self._utilisation[index] * (float(self.spec.tdp_w) - idle_w)

    def _advance(self, index: int) -> float:
        """Integrate energy up to now; return the power in force now (W)."""
        now_s = self._clock.now_s()
        power_w = min(self.get_power_limit_w(index), self._natural_w(index, now_s))
        # Piecewise-constant: the power read now is taken to hold since the last read.
        self._energy_j[index] += power_w * max(0.0, now_s - self._last_t_s[index])
        self._last_t_s[index] = now_s
        return power_w

    # --- GpuBackend -------------------------------------------------------------

    def count(self) -> int:
        return self._num_gpus

    def name(self, index: int) -> str:
        check_index(self, index)
        return f"{self.spec.name} (simulated test double)"

    def uuid(self, index: int) -> str:
        check_index(self, index)
        return f"SIM-GPU-{self.spec.name}-{index}"

    def power_limit_range_w(self, index: int) -> tuple[float, float]:
        check_index(self, index)
        return float(self.spec.power_limit_min_w), float(self.spec.power_limit_max_w)

    def default_power_limit_w(self, index: int) -> float:
        check_index(self, index)
        return float(self.spec.tdp_w)

    def get_power_limit_w(self, index: int) -> float:
        check_index(self, index)
        return float(self._read()["gpus"][index]["power_limit_w"])

    def set_power_limit_w(self, index: int, watts: float) -> None:
        check_index(self, index)
        check_limit_in_range(self, index, watts)
        if self.get_power_limit_w(index) == float(watts):
            return  # unchanged: no write, as the real backends
        if not self.settable:
            raise PermissionDenied(f"cannot set GPU {index}'s power limit (simulated): {NO_PERMISSION_FIX}")
        if self.fail_writes is not None:
            raise self.fail_writes
        self._advance(index)  # the old limit applies up to now
        with self._locked():
            data = self._read()
            data["gpus"][index]["power_limit_w"] = float(watts)
            _write_driver_state(self.driver_state_path, data)

    def power_w(self, index: int) -> float:
        check_index(self, index)
        return self._advance(index)

    def energy_j(self, index: int) -> float:
        check_index(self, index)
        self._advance(index)
        return self._energy_j[index]

    def can_set_power_limit(self) -> bool:
        return self.settable
