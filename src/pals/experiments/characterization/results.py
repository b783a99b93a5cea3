"""The measured records of a characterization: points, sweeps, per-model results, the whole run.

Tokens/J is per node joule: generated tokens / node energy, with the node energy taken from the
GPUs' energy counters through the simulator's wall-power model (P_node = 1.05 x sum P_GPU + 345 W,
PALS section 3.1). The profile rows' `node_power_w` is the mean of a sampled gauge; it aliases the
step-level power mix (prefill-carrying steps draw more than decode-only ones), so it is not used here
(the report states how far it lies from the energy counters, against the best cap's margin).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pals.experiments.characterization.settings import CharacterizationSettings
from pals.model.profile import Profile


@dataclass(frozen=True)
class Point:
    """One measured configuration. Powers in W; tokens/J per node joule (see module docstring)."""

    power_cap_w: float
    """Per-GPU power cap."""
    batch_cap: int
    """Most running sequences per replica."""
    throughput_tps: float
    """Generated tokens/s over the window."""
    gpu_power_w: float
    """Mean per GPU over the window, from the energy counters."""
    node_power_w: float
    """From the GPU energy counters through the node power model."""
    tokens_per_joule: float
    """Generated tokens per node joule."""
    tokens_per_joule_gpu: float
    """Generated tokens per GPU joule (all GPUs, no node baseline)."""


@dataclass
class Sweep:
    """The points of one model under one load (and one mechanism set)."""

    model: str
    tp: int
    load: str
    """"saturation" or "fixed"."""
    rate_rps: float | None
    """Poisson arrivals in requests/s; None at saturation."""
    points: list[Point] = field(default_factory=list)
    profile_path: Path | None = None
    """The profile CSV the points were measured into."""
    window_s: float = math.nan
    """Measurement window per point (simulated seconds)."""

    def get(self, cap_w: float, batch: int) -> Point | None:
        """The point at (cap, batch), None if not measured."""
        for p in self.points:
            if p.power_cap_w == cap_w and p.batch_cap == batch:
                return p
        return None

    @property
    def caps_w(self) -> list[float]:
        """The measured caps, ascending."""
        return sorted({p.power_cap_w for p in self.points})

    @property
    def batches(self) -> list[int]:
        """The measured batches, ascending."""
        return sorted({p.batch_cap for p in self.points})

    def curve(self, batch: int, gpu_only: bool = False) -> tuple[list[float], list[float]]:
        """Tokens/J against cap at one batch (caps ascending)."""
        pts = sorted((p for p in self.points if p.batch_cap == batch), key=lambda p: p.power_cap_w)
        return [p.power_cap_w for p in pts], [p.tokens_per_joule_gpu if gpu_only else p.tokens_per_joule for p in pts]

    def best_cap_w(self, batch: int | None = None, gpu_only: bool = False) -> float:
        """The cap with the highest tokens/J at `batch` (default: the largest batch)."""
        caps, tpj = self.curve(self.batches[-1] if batch is None else batch, gpu_only)
        return caps[int(np.argmax(tpj))] if caps else math.nan

    def loss_at_max_cap(self, batch: int | None = None, gpu_only: bool = False) -> float:
        """1 - tokens/J at the largest cap / tokens/J at the best cap (0 when the largest cap is best)."""
        caps, tpj = self.curve(self.batches[-1] if batch is None else batch, gpu_only)
        return 1.0 - tpj[-1] / max(tpj) if caps else math.nan

    def ratio(self, batch_hi: int, batch_lo: int, cap_w: float | None = None) -> float:
        """Tokens/J at batch_hi over batch_lo, at `cap_w` (default: the largest cap)."""
        cap_w = self.caps_w[-1] if cap_w is None else cap_w
        hi, lo = self.get(cap_w, batch_hi), self.get(cap_w, batch_lo)
        return hi.tokens_per_joule / lo.tokens_per_joule if hi and lo else math.nan

    def frontier_ratio(self, sw_cap_w: float | None = None) -> float:
        """Peak tokens/J of the joint (cap x batch) frontier over the software-only one (batch at `sw_cap_w`).

        The peak of a Pareto frontier of (throughput, tokens/J) is its most efficient point, i.e.
        the best tokens/J among its configurations.
        """
        sw_cap_w = self.caps_w[-1] if sw_cap_w is None else sw_cap_w
        sw = [p.tokens_per_joule for p in self.points if p.power_cap_w == sw_cap_w]
        if not sw:
            return math.nan
        return max(p.tokens_per_joule for p in self.points) / max(sw)

    def as_profile(self, gpu: str) -> Profile:
        """An in-memory `Profile` whose node power and tokens/J are this module's (for `plots.plot_profile`)."""
        rows = [
            {
                "model": self.model,
                "gpu": gpu,
                "num_gpus": 4,
                "tp": self.tp,
                "ep": 1,
                "power_cap_w": p.power_cap_w,
                "batch_cap": p.batch_cap,
                "throughput_tps": p.throughput_tps,
                "gpu_power_w": p.gpu_power_w,
                "gpu_power_total_w": 4 * p.gpu_power_w,
                "node_power_w": p.node_power_w,
                "tokens_per_joule": p.tokens_per_joule,
                "tokens_per_joule_gpu": p.tokens_per_joule_gpu,
                "window_s": self.window_s,
            }
            for p in self.points
        ]
        metadata = {"model": self.model, "gpu": gpu, "num_gpus": 4, "tp": self.tp, "ep": 1}
        return Profile(metadata, rows)


@dataclass
class ModelResult:
    """One model under both loads."""

    model: str
    tp: int
    saturation: Sweep
    fixed: Sweep
    batch1_capacity_rps: float
    """Saturating batch-1 throughput at the largest cap / mean output tokens. Units: requests/s."""
    fixed_rate_rps: float
    """The fixed offered load: LOAD_FACTOR x batch1_capacity_rps. Units: requests/s."""
    natural_draw_w: float
    """Mean GPU power at the largest cap and batch, saturating (what the GPU draws uncapped). Units: W."""

    @property
    def cap_curve(self) -> bool:
        """True when the full cap x batch grid was measured (a Fig 1a / Fig 3 model)."""
        return len(self.saturation.caps_w) > 1


@dataclass
class CharacterizationResult:
    """Everything the report needs; `write_report` turns it into Markdown and PNGs."""

    gpu: str
    tp: int
    quick: bool
    seed: int
    settings: CharacterizationSettings
    workload: dict[str, Any]
    mechanisms: dict[str, bool]
    models: dict[str, ModelResult]
    cap_models: tuple[str, ...]
    ablations: dict[str, dict[str, Sweep]]
    """switch turned off -> model -> saturating sweep at the largest batch."""
    measure_wall_s: float
    profiles_dir: Path
    skipped: tuple[str, ...] = ()
    """Paper models that do not fit the node's memory at any TP (left out of the batch ratio)."""
    params: Any = None
    """The step physics every node ran (`PhysicsParams`); None: the GPU preset's."""
    physics: str = "the GPU preset's"
    """Where the physics came from (a physics file's path, for the report)."""

    @property
    def curve_models(self) -> list[str]:
        """The cap models whose full cap x batch grid was measured (those of Fig 1a and Fig 3)."""
        return [m for m in self.cap_models if self.models[m].cap_curve]
