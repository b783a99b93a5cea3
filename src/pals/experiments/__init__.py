"""Paper-reproduction experiments: each writes tables, PNG plots, report.md and summary.json.

`EXPERIMENTS` maps a name to (module, one-line description); each module has
`run(out_dir, quick=False, seed=0) -> dict` (the summary it wrote). `run_experiment`
runs it with a calibrated physics file in force when given (`lab_physics.physics_scope`:
every `Lab` and the characterization take it, every report names it). Modules are
imported only when run, so `pals --help` stays fast.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from pals.errors import ConfigError

EXPERIMENTS: dict[str, tuple[str, str]] = {
    "characterize": ("pals.experiments.characterize", "tokens/J vs cap and batch, compute/comm split, frontiers (Figs 1-3)"),
    "single-node": ("pals.experiments.single_node", "Baseline/AdaptiveCap/AdaptiveBatch/PALS/Oracle over 8 models (Fig 7)"),
    "tp-headroom": ("pals.experiments.tp_headroom", "fixed TP vs best TP per power cap (Fig 8)"),
    "multi-node": ("pals.experiments.multi_node", "3 nodes under 4,800 W and a binding cluster budget, with the coordinator (Fig 9)"),
    "demand-response": ("pals.experiments.demand_response", "3 DeepSeek-MoE nodes follow a 1-hour power target (Fig 10)"),
    "target-tracking": ("pals.experiments.target_tracking", "a throughput target that changes over time (Fig 11)"),
    "cluster-scale": ("pals.experiments.cluster_scale", "the coordinator over 64 nodes on loopback HTTP: round time, conservation, QoS"),
    "fidelity": ("pals.experiments.fidelity", "every calibration point beside the simulator (throughput, power, TPOT)"),
    "slo": ("pals.experiments.slo", "a TPOT p99 SLO the Baseline breaks: PALS vs the best static configuration meeting it"),
    "kv-pressure": ("pals.experiments.kv_pressure", "a KV cache too small for batch 64: preemption, batch sweep, PALS"),
}


def run_experiment(name: str, out_dir: str | Path, quick: bool = False, seed: int = 0,
                   physics: str | Path | None = None) -> dict[str, Any]:
    """Run one experiment by name and return its summary (also written to OUT/summary.json).

    Args:
        physics: A physics file from `pals calibrate` for the experiments' GPU (the paper's); None: the preset's
            physics. Every simulated node of the experiment runs it (`pals.experiments.lab_physics`).

    Raises:
        ConfigError: an unknown experiment, or a bad physics file (or one fitted for another GPU).
    """
    from pals.experiments.lab_physics import physics_scope

    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)} (or 'all')")
    with physics_scope(physics):
        module = importlib.import_module(EXPERIMENTS[name][0])
        start = time.perf_counter()
        summary = module.run(Path(out_dir), quick=quick, seed=seed)
    summary.setdefault("wall_s", round(time.perf_counter() - start, 2))
    return summary
