"""Configurations measured on a fresh, noise-free node at saturation: capacities and busy power.

(The dynamic Oracle's truth is another: every configuration held over the run's own request stream,
`pals.runtime.delivered`.)

`measure_configuration` is the one measurement: a fresh `SimNode` with exact telemetry, started at
the configuration, run `warmup_s`, then measured over `window_s` from its exact counters.
`GroundTruth` answers `predict_candidates` (a `PerfModel`, as a predictor does) from such
measurements, in one of two modes:

- `GroundTruth.on_demand` (tests and benchmarks: the node's maximum throughput): each
  configuration is measured the first time it is asked for, under saturating load with the run's
  length distribution, and kept in memory and on disk; node power is the paper's node-power line
  over the measured GPU power.
- `GroundTruth.on_grid`: a whole (cap x batch) grid is measured up front under a given load; node power is the simulator's own; any configuration is answered with the nearest
  grid point's measurement.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pals.core.io import atomic_write_text
from pals.core.node import Actuation
from pals.core.paper import PAPER_BATCH_CAPS, PAPER_POWER_CAPS_W
from pals.core.power import NodePowerModel
from pals.model.predictor import Prediction
from pals.runtime.cache import cache_dir
from pals.runtime.deployment import Deployment
from pals.runtime.load import LoadSpec, saturating_equivalent
from pals.sim.node import NoiseConfig, SimNode, SimNodeSpec
from pals.sim.workload import Workload


@dataclass(frozen=True)
class Measured:
    """One configuration measured on the noise-free node over a window (ground truth)."""

    throughput_tps: float
    """Generated tokens per second over the window."""
    node_power_w: float
    """Mean node (wall) power over the window. Units: W."""
    gpu_power_total_w: float
    """Mean summed GPU power over the window. Units: W."""

    @property
    def tokens_per_joule(self) -> float:
        return self.throughput_tps / self.node_power_w if self.node_power_w > 0 else 0.0


def measure_configuration(spec: SimNodeSpec, workload: Workload, cap_w: float, batch: int, *,
                          warmup_s: float, window_s: float, seed: int) -> Measured:
    """Run one static configuration on a fresh noise-free node; measure it from the exact counters."""
    node = SimNode(spec, workload, seed=seed, noise=NoiseConfig.none(), initial=Actuation(cap_w, batch))
    node.clock.wait_until(warmup_s)
    tokens0, node_j0, gpu_j0 = node.generated_tokens_total(), node.node_energy_j_total(), node.energy_j_total()
    node.clock.wait_until(warmup_s + window_s)
    tokens = node.generated_tokens_total() - tokens0
    return Measured(
        throughput_tps=tokens / window_s,
        node_power_w=(node.node_energy_j_total() - node_j0) / window_s,
        gpu_power_total_w=(node.energy_j_total() - gpu_j0) / window_s,
    )


def _paper_line(throughput_tps: float, gpu_power_total_w: float) -> Measured:
    """A measurement whose node power is the paper's node-power line over its GPU power."""
    return Measured(throughput_tps, NodePowerModel().node_w(gpu_power_total_w), gpu_power_total_w)


class GroundTruth:
    """Measured throughput and power per (cap, batch), shaped as a predictor (a `PerfModel`).

    Build it with `on_demand` or `on_grid`. `caps_` and `batches_` are its grid (the Oracle's
    candidates when it has no predictor).
    """

    def __init__(self, table: dict[tuple[float, int], Measured], caps_w: Sequence[float], batches: Sequence[int], *,
                 measure: Callable[[float, int], Measured] | None = None, store: Path | None = None) -> None:
        self._table = table
        self._measure = measure
        self._store = store
        self._lock = threading.Lock()
        self.caps_ = np.array(caps_w)
        self.batches_ = np.array(batches)

    @classmethod
    def on_demand(cls, deployment: Deployment, load: LoadSpec, warmup_s: float = 20.0, window_s: float = 60.0,
                  seed: int = 4321, persist: bool = True) -> "GroundTruth":
        """Each configuration measured when first asked for, under saturating load with `load`'s lengths.

        Results are kept in memory and (with `persist`) under the cache directory, so benchmarks and
        demos reuse them. Node power is the paper's node-power line over the measured GPU power.
        """
        spec = deployment.sim_spec()

        def measure(cap_w: float, batch: int) -> Measured:
            m = measure_configuration(spec, saturating_equivalent(load, seed=seed), cap_w, batch,
                                      warmup_s=warmup_s, window_s=window_s, seed=seed)
            return _paper_line(m.throughput_tps, m.gpu_power_total_w)

        store = None
        if persist:
            name = f"{deployment.key()}_{load.length_key()}_w{int(warmup_s)}_{int(window_s)}_s{seed}.json"
            store = cache_dir() / "truth" / name
        batches = [b for b in PAPER_BATCH_CAPS if b <= deployment.batch_cap_max]
        return cls(_read_store(store), PAPER_POWER_CAPS_W, batches, measure=measure, store=store)

    @classmethod
    def on_grid(cls, measure: Callable[[float, int], Measured], caps_w: Sequence[float],
                batches: Sequence[int]) -> "GroundTruth":
        """Every grid point measured now (`measure(cap_w, batch)`); other points get the nearest one's value."""
        table = {(float(c), int(b)): measure(c, b) for c in caps_w for b in batches}
        return cls(table, sorted({c for c, _ in table}), sorted({b for _, b in table}))

    def lookup(self, cap_w: float, batch: int) -> Measured:
        """The measurement answering (cap, batch): exact on demand, the nearest grid point otherwise."""
        if self._measure is None:
            c = float(self.caps_[np.argmin(np.abs(self.caps_ - cap_w))])
            b = int(self.batches_[np.argmin(np.abs(np.log2(self.batches_) - math.log2(max(batch, 1))))])
            return self._table[(c, b)]
        key = (round(float(cap_w), 3), int(batch))
        with self._lock:
            if key not in self._table:
                self._table[key] = self._measure(*key)
                _write_store(self._store, self._table)
            return self._table[key]

    def predict_candidates(self, power_cap_w, batch_cap, workload: Any = None, tp=None, ep=None) -> Prediction:
        caps, batches = np.broadcast_arrays(np.asarray(power_cap_w, float).reshape(-1), np.asarray(batch_cap).reshape(-1))
        rows = [self.lookup(float(c), int(b)) for c, b in zip(caps, batches)]
        tps = np.array([r.throughput_tps for r in rows])
        gpu_w = np.array([r.gpu_power_total_w for r in rows])
        node_w = np.array([r.node_power_w for r in rows])
        zeros = np.zeros_like(tps)
        return Prediction(tps, zeros, gpu_w, zeros, node_w, np.where(node_w > 0, tps / node_w, 0.0))

    def max_throughput_tps(self) -> float:
        """Highest throughput over the grid (no budget)."""
        caps = np.repeat(self.caps_, len(self.batches_))
        batches = np.tile(self.batches_, len(self.caps_))
        return float(np.max(self.predict_candidates(caps, batches).throughput_tps))


def _read_store(path: Path | None) -> dict[tuple[float, int], Measured]:
    """On-demand measurements saved by an earlier run (rows: cap, batch, tokens/s, GPU W)."""
    table: dict[tuple[float, int], Measured] = {}
    if path is None or not path.exists():
        return table
    try:
        for row in json.loads(path.read_text()):
            table[(float(row[0]), int(row[1]))] = _paper_line(float(row[2]), float(row[3]))
    except (ValueError, IndexError, TypeError):
        table.clear()
    return table


def _write_store(path: Path | None, table: dict[tuple[float, int], Measured]) -> None:
    if path is None:
        return
    rows = [[c, b, m.throughput_tps, m.gpu_power_total_w] for (c, b), m in sorted(table.items())]
    atomic_write_text(path, json.dumps(rows))
