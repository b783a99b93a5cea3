"""Paper-reproduction experiments: each writes tables, PNG plots, report.md and summary.json.

`EXPERIMENTS` maps a name to (module, one-line description); each module has
`run(out_dir, quick=False, seed=0) -> dict` (the summary it wrote), and those that
run their nodes on a calibrated physics file also take `physics=PATH`. Modules are
imported only when run, so `pals --help` stays fast.
"""

from __future__ import annotations

import importlib
import inspect
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


def takes_physics(name: str) -> bool:
    """Whether experiment `name` runs its nodes on a physics file (`run(..., physics=PATH)`)."""
    module = importlib.import_module(EXPERIMENTS[name][0])
    return "physics" in inspect.signature(module.run).parameters


def run_experiment(name: str, out_dir: str | Path, quick: bool = False, seed: int = 0,
                   physics: str | Path | None = None) -> dict[str, Any]:
    """Run one experiment by name and return its summary (also written to OUT/summary.json).

    Args:
        physics: A physics file from `pals calibrate` for the experiments' GPU; None: the preset's physics.

    Raises:
        ConfigError: an unknown experiment, or `physics` for an experiment that does not take it yet.
    """
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of: {', '.join(EXPERIMENTS)} (or 'all')")
    if physics is not None and not takes_physics(name):
        raise ConfigError(f"experiment {name!r} does not take --physics yet (its nodes are built with the preset's "
                          f"physics); run {', '.join(n for n in EXPERIMENTS if takes_physics(n))} with it, or drop --physics")
    module = importlib.import_module(EXPERIMENTS[name][0])
    start = time.perf_counter()
    kwargs = {} if physics is None else {"physics": physics}
    summary = module.run(Path(out_dir), quick=quick, seed=seed, **kwargs)
    summary.setdefault("wall_s", round(time.perf_counter() - start, 2))
    return summary
