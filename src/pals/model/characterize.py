"""The characterization report: the PALS paper's Figure 1 and 3 shapes beside the simulator's.

One implementation, used by `pals sweep --report` (and callable from the experiments):

1. **Measure** on the simulated node through the profiler (`run_profile` on a `SimNode`), one
   fresh node per (cap, batch) point, under two loads:
   - *saturation*: requests always waiting (closed loop);
   - *fixed offered load*: Poisson arrivals at `LOAD_FACTOR` (2) x the model's batch-1
     capacity, where the capacity is the saturating batch-1 throughput at the largest cap
     (requests/s = tokens/s / mean output tokens). The feasibility note's suggestion; the
     rule is per model so that every model sees "twice what batch 1 can serve".
   A fresh node per point matters under an open-loop load: the backlog an overloaded batch-1
   point builds would otherwise carry over and saturate the next point. All points of one
   model and load share one workload seed (common random numbers), so two points differ
   only by the configuration.
2. **Compute** our figures: tokens/J against cap (best cap, loss at the largest cap), the
   batch-64 / batch-1 ratio, the 32 -> 64 gain and the Fig 3 frontier peak ratio (joint
   cap x batch over software-only = batch at a fixed cap), each at both loads; and, at
   saturation, the cap curve again with one mechanism switch off at a time (which
   mechanism decides the shape).
3. **Write** a Markdown report with PNGs (`write_report`): a table "paper says | ours
   (saturation) | ours (fixed load) | agrees? | mechanism that decides it", a paragraph per
   shape and the mechanism switches in force.

Node power: tokens/J here is generated tokens / node energy, with the node energy taken
from the GPUs' energy counters through the simulator's wall-power model
(P_node = 1.05 x sum P_GPU + 345 W, PALS section 3.1). The profile rows' `node_power_w` is
the mean of a 4 Hz gauge; it aliases the step-level power mix (prefill-carrying steps draw
~80 W more than decode-only ones) by about 1 %, the same size as the margins at stake
(the 200 W peak holds by ~1 %). The profile files are written unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pals.core.paper import PAPER_BATCH_CAPS, PAPER_GPU
from pals.errors import ConfigError

PAPER_MODEL_TP: dict[str, int] = {
    "GPT-2": 1,
    "Llama-2-7B": 1,
    "Mistral-7B": 1,
    "OLMoE-1B-7B": 4,
    "Qwen1.5-MoE-A2.7B": 4,
    "DeepSeek-MoE-16B": 2,
    "Phi-3.5-MoE": 2,
    "Mixtral-8x7B": 4,
}
"""The paper's eight models and the TP used for their batch ratio on a 4-GPU node
(replicas = 4 / TP; the feasibility note's choice). Models in `characterize(models=...)` use `tp`."""

FIG1A_MODELS = ("Mixtral-8x7B", "Qwen1.5-MoE-A2.7B", "OLMoE-1B-7B")
"""The models of the paper's Figure 1a and Figure 3."""

PAPER_BEST_CAP_W = {"Mixtral-8x7B": 400.0, "Qwen1.5-MoE-A2.7B": 200.0, "OLMoE-1B-7B": 200.0}
"""Fig 1a: Mixtral keeps gaining up to 400 W; Qwen-MoE and OLMoE peak at about 200 W and decline above."""
PAPER_BATCH_RATIO = (1.7, 2.1)
"""Fig 1b: batch 64 over batch 1 tokens/J, across models."""
PAPER_GAIN_32_64 = {"Mixtral-8x7B": 0.02, "Qwen1.5-MoE-A2.7B": 0.07}
"""Going from batch 32 to 64 adds 2 % (Mixtral) and 7 % (Qwen-MoE)."""
PAPER_FRONTIER_RATIO = {"Mixtral-8x7B": 1.18, "Qwen1.5-MoE-A2.7B": 1.13, "OLMoE-1B-7B": 1.14}
"""Fig 3: peak tokens/J of the joint frontier over the software-only frontier."""

LOAD_FACTOR = 2.0
"""Fixed offered load = LOAD_FACTOR x the model's batch-1 capacity (requests/s)."""
SW_ONLY_BUDGET_CAP_W = 300.0
"""The paper also describes the software-only sweep as "capped by the fixed 300 W budget"."""

DEFAULT_GPU = PAPER_GPU
DEFAULT_PROMPT_TOKENS = 1000.0
DEFAULT_OUTPUT_TOKENS = 200.0
LENGTH_CV = 0.5
"""Log-normal prompt and output lengths, the same defaults as `pals sweep`."""

ABLATIONS = ("per_step_limiter", "bandwidth_scales_with_clock", "collective_spin_power")
"""Mechanism switches turned off one at a time for the saturating cap curve (the Fig 1a mechanisms)."""


@dataclass(frozen=True)
class CharacterizationSettings:
    """Grid and timing of a characterization run (simulated seconds).

    Attributes:
        power_caps_w: Caps of every sweep (None: the paper's grid within the GPU's range).
        batch_caps: Batches of the cap-curve models (must hold 1 and the largest).
        ratio_batches: Batches measured for the other models' batch ratio.
        saturation_warmup_s / saturation_window_s: Per point at saturation.
        fixed_warmup_s: Per point at the fixed load.
        fixed_requests: A fixed-load window lasts this many mean inter-arrival times ...
        fixed_window_min_s / fixed_window_max_s: ... clipped to this range.
        ablations: Run the mechanism ablations of the saturating cap curve.
    """

    power_caps_w: tuple[float, ...] | None = None
    batch_caps: tuple[int, ...] = PAPER_BATCH_CAPS
    ratio_batches: tuple[int, ...] = (1, 32, 64)
    saturation_warmup_s: float = 30.0
    saturation_window_s: float = 60.0
    fixed_warmup_s: float = 30.0
    fixed_requests: int = 1000
    fixed_window_min_s: float = 60.0
    fixed_window_max_s: float = 1200.0
    ablations: bool = True

    def __post_init__(self) -> None:
        for name in ("saturation_warmup_s", "fixed_warmup_s"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"CharacterizationSettings.{name} must be >= 0 seconds, got {getattr(self, name)!r}")
        for name in ("saturation_window_s", "fixed_window_min_s", "fixed_window_max_s"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"CharacterizationSettings.{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if self.fixed_window_max_s < self.fixed_window_min_s:
            raise ConfigError("CharacterizationSettings.fixed_window_max_s is below fixed_window_min_s; swap them")
        if self.fixed_requests < 1:
            raise ConfigError(f"CharacterizationSettings.fixed_requests must be >= 1, got {self.fixed_requests}")
        for name in ("batch_caps", "ratio_batches"):
            batches = getattr(self, name)
            if 1 not in batches or len(batches) < 2:
                raise ConfigError(f"CharacterizationSettings.{name}={batches} must hold batch 1 and a larger batch")

    @classmethod
    def quick(cls) -> "CharacterizationSettings":
        """Two caps, three batches, short windows, no ablations (a smoke test: seconds)."""
        return cls(
            power_caps_w=(200.0, 400.0),
            batch_caps=(1, 8, 64),
            ratio_batches=(1, 8, 64),
            saturation_warmup_s=5.0,
            saturation_window_s=10.0,
            fixed_warmup_s=10.0,
            fixed_requests=100,
            fixed_window_min_s=20.0,
            fixed_window_max_s=60.0,
            ablations=False,
        )


@dataclass(frozen=True)
class Point:
    """One measured configuration. Powers in W; tokens/J per node joule (see module docstring)."""

    power_cap_w: float
    batch_cap: int
    throughput_tps: float
    gpu_power_w: float
    """Mean per GPU over the window, from the energy counters."""
    node_power_w: float
    """From the GPU energy counters through the node power model."""
    tokens_per_joule: float
    tokens_per_joule_gpu: float


@dataclass
class Sweep:
    """The points of one model under one load (and one mechanism set)."""

    model: str
    tp: int
    load: str
    """"saturation" or "fixed"."""
    rate_rps: float | None
    points: list[Point] = field(default_factory=list)
    profile_path: Path | None = None
    window_s: float = math.nan

    def get(self, cap_w: float, batch: int) -> Point | None:
        for p in self.points:
            if p.power_cap_w == cap_w and p.batch_cap == batch:
                return p
        return None

    @property
    def caps_w(self) -> list[float]:
        return sorted({p.power_cap_w for p in self.points})

    @property
    def batches(self) -> list[int]:
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

    def as_profile(self, gpu: str):
        """An in-memory `Profile` whose node power and tokens/J are this module's (for `plots.plot_profile`)."""
        from pals.model.profile import Profile

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


# ----------------------------------------------------------------------------------------- measuring


def _lengths(prompt_tokens: float, output_tokens: float):
    from pals.sim.workload import LengthDistribution

    return LengthDistribution.lognormal(prompt_tokens, LENGTH_CV), LengthDistribution.lognormal(output_tokens, LENGTH_CV)


class _Runner:
    """Measures points through the profiler, one fresh SimNode per point, appending to one profile file."""

    def __init__(self, gpu: str, seed: int, prompt_tokens: float, output_tokens: float, profiles_dir: Path, bar) -> None:
        self.gpu = gpu
        self.seed = seed
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.profiles_dir = profiles_dir
        self.bar = bar

    def workload(self, rate_rps: float | None):
        from pals.sim.workload import PoissonWorkload, SaturatingWorkload

        prompts, outputs = _lengths(self.prompt_tokens, self.output_tokens)
        if rate_rps is None:
            return SaturatingWorkload(prompts, outputs, seed=self.seed)
        return PoissonWorkload(rate_rps, prompts, outputs, seed=self.seed)

    def sweep(
        self,
        model: str,
        tp: int,
        points: Sequence[tuple[float, int]],
        rate_rps: float | None,
        warmup_s: float,
        window_s: float,
        tag: str,
        mechanisms=None,
    ) -> Sweep:
        from pals.core.workload import WorkloadDescriptor
        from pals.model.profiler import profile_on_fresh_nodes
        from pals.core.node import Actuation
        from pals.sim.node import NoiseConfig, SimNode, SimNodeSpec

        spec = SimNodeSpec(model, self.gpu, num_gpus=4, tp=tp, mechanisms=mechanisms)
        step_model = spec.step_model()
        features = WorkloadDescriptor(self.prompt_tokens, self.output_tokens, rate_rps)
        path = self.profiles_dir / f"{_slug(model)}_tp{tp}_{tag}.csv"  # measured afresh (settings may differ)
        sweep = Sweep(model, tp, "saturation" if rate_rps is None else "fixed", rate_rps, profile_path=path, window_s=window_s)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{model} {tag}")

        def make_node(index: int, cap_w: float, batch: int) -> SimNode:
            # Exact telemetry: the report compares shapes whose margins are ~1 %; sensor noise is the
            # controller's problem, not the physics'. The energy counters are exact either way.
            return SimNode(spec, self.workload(rate_rps), seed=self.seed, noise=NoiseConfig.none(),
                           initial=Actuation(cap_w, batch))

        measured = profile_on_fresh_nodes(
            make_node, points, warmup_s, window_s, path, workload=features, node_kind="sim",
            metadata_extra={"seed": self.seed, "kind": "characterization", "tag": tag},
        )
        for cap_w, batch, profile in measured:
            row = next(r for r in profile.rows if r["power_cap_w"] == cap_w and int(r["batch_cap"]) == batch)
            gpu_total_w = float(row["gpu_power_total_w"])
            node_w = step_model.node_power_w(gpu_total_w)
            tps = float(row["throughput_tps"])
            sweep.points.append(
                Point(cap_w, batch, tps, float(row["gpu_power_w"]), node_w, tps / node_w, tps / gpu_total_w)
            )
            if self.bar is not None:
                self.bar.update(1)
        return sweep


def fits_node(model: str, gpu: str, tp: int, num_gpus: int = 4) -> bool:
    """Whether the model's weights and some KV cache fit `num_gpus` x `gpu` at TP `tp`.

    Raises:
        ConfigError: an unknown model or GPU, or a TP the node cannot hold (not a memory question).
    """
    from pals.sim.node import SimNodeSpec

    try:
        spec = SimNodeSpec(model, gpu, num_gpus=num_gpus, tp=tp)
        return spec.step_model().kv_cache_tokens(spec.gpu_memory_utilization) >= 1
    except ConfigError as error:
        if "fit" not in str(error):
            raise
        return False


def _fitting_tp(model: str, gpu: str, preferred: int) -> int | None:
    """`preferred`, or the next larger TP (2, 4) at which the model's weights fit a 4-GPU node; None if none does."""
    return next((tp for tp in (1, 2, 4) if tp >= preferred and fits_node(model, gpu, tp)), None)


def measure_sweep(
    model: str,
    tp: int,
    points: Sequence[tuple[float, int]],
    profiles_dir: str | os.PathLike,
    *,
    gpu: str = DEFAULT_GPU,
    rate_rps: float | None = None,
    seed: int = 0,
    warmup_s: float = 30.0,
    window_s: float = 60.0,
    tag: str = "saturation",
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS,
    output_tokens: float = DEFAULT_OUTPUT_TOKENS,
) -> Sweep:
    """Measure (cap W, batch) points of one deployment exactly as `characterize` does (for extra sweeps).

    Args:
        model / tp / gpu: The deployment (a 4-GPU node).
        points: (power cap in W, batch cap) pairs, one fresh SimNode each.
        profiles_dir: Folder of the profile CSV (`<model>_tp<tp>_<tag>.csv`, rewritten).
        rate_rps: Poisson arrivals in requests/s; None saturates.
        seed: Workload seed (common to every point).
        warmup_s / window_s: Simulated seconds per point.
        tag: Profile file suffix and load label.
        prompt_tokens / output_tokens: Mean lengths (log-normal, cv 0.5).

    Returns:
        The sweep, tokens/J per node joule as in `characterize`.
    """
    from pals.sim.hardware import get_gpu

    directory = Path(profiles_dir)
    directory.mkdir(parents=True, exist_ok=True)
    runner = _Runner(get_gpu(gpu).name, seed, prompt_tokens, output_tokens, directory, bar=None)
    return runner.sweep(model, tp, points, rate_rps, warmup_s, window_s, tag)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


def characterize(
    models: Sequence[str] | None = None,
    gpu: str = DEFAULT_GPU,
    tp: int = 4,
    out_dir: str | os.PathLike = "characterization",
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    *,
    ratio_models: Sequence[str] | None = None,
    prompt_tokens: float = DEFAULT_PROMPT_TOKENS,
    output_tokens: float = DEFAULT_OUTPUT_TOKENS,
    settings: CharacterizationSettings | None = None,
) -> CharacterizationResult:
    """Run the sweeps the report needs on the simulated node (profiles go to `out_dir/profiles`).

    Args:
        models: Models whose full cap x batch grid is measured at `tp` (Fig 1a, Fig 3).
            Default: Mixtral-8x7B, Qwen1.5-MoE-A2.7B, OLMoE-1B-7B; quick: OLMoE-1B-7B only.
        gpu: GPU preset of the 4-GPU node.
        tp: TP degree of `models`.
        out_dir: Where the profiles (and, with `write_report`, the report) go.
        quick: Two caps, three batches, short windows, no ablations, no other models (a smoke test).
        seed: Seed of every workload (common to all points of a model and load).
        progress: tqdm bar on stderr.
        ratio_models: More models measured only at the largest cap (batch ratio, Fig 1b), each at
            its `PAPER_MODEL_TP`. Default: the rest of the paper's eight; quick: none.
        prompt_tokens / output_tokens: Mean lengths (log-normal, cv 0.5).
        settings: Grid and timing (default: `CharacterizationSettings()`, or `.quick()`).

    Returns:
        The measured sweeps and figures; pass it to `write_report`.
    """
    from pals.model.profiler import paper_grid_within
    from pals.sim.hardware import get_gpu
    from pals.sim.step import Mechanisms

    start = time.perf_counter()
    settings = settings or (CharacterizationSettings.quick() if quick else CharacterizationSettings())
    cap_models = tuple(models) if models else (("OLMoE-1B-7B",) if quick else FIG1A_MODELS)
    if ratio_models is None:
        ratio_models = () if quick else tuple(m for m in PAPER_MODEL_TP if m not in cap_models)
    ratio_models = tuple(m for m in ratio_models if m not in cap_models)
    for model in ratio_models:
        if model not in PAPER_MODEL_TP:
            raise ConfigError(f"ratio model {model!r} has no TP in PAPER_MODEL_TP; pass it in models= (measured at tp)")
    spec_gpu = get_gpu(gpu)
    caps = settings.power_caps_w or paper_grid_within(spec_gpu.power_limit_min_w, spec_gpu.power_limit_max_w, 64).power_caps_w
    caps = tuple(float(c) for c in caps)
    for cap in caps:
        if not spec_gpu.power_limit_min_w <= cap <= spec_gpu.power_limit_max_w:
            raise ConfigError(
                f"cap {cap:g} W is outside {spec_gpu.name}'s range "
                f"{spec_gpu.power_limit_min_w:g}-{spec_gpu.power_limit_max_w:g} W; pass caps within it"
            )
    max_cap = max(caps)
    out = Path(out_dir)
    profiles_dir = out / "profiles"
    profiles_dir.mkdir(parents=True, exist_ok=True)
    mean_output = _lengths(prompt_tokens, output_tokens)[1].mean

    deployments = [(m, tp, True) for m in cap_models]
    skipped: list[str] = []
    for model in ratio_models:
        ratio_tp = _fitting_tp(model, spec_gpu.name, PAPER_MODEL_TP[model])
        if ratio_tp is None:
            skipped.append(model)
        else:
            deployments.append((model, ratio_tp, False))
    n_grid = len(caps) * len(settings.batch_caps)
    total = sum(2 * (n_grid if full else len(settings.ratio_batches)) for _, _, full in deployments)
    if settings.ablations:
        total += len(ABLATIONS) * len(cap_models) * len(caps)

    from tqdm import tqdm

    bar = tqdm(total=total, disable=not progress, unit="point", desc="characterize", leave=True)
    runner = _Runner(spec_gpu.name, seed, prompt_tokens, output_tokens, profiles_dir, bar)
    results: dict[str, ModelResult] = {}
    try:
        for model, model_tp, full in deployments:
            batches = settings.batch_caps if full else settings.ratio_batches
            grid = [(c, b) for c in (caps if full else (max_cap,)) for b in batches]
            sat = runner.sweep(model, model_tp, grid, None, settings.saturation_warmup_s,
                               settings.saturation_window_s, "saturation")
            b1 = sat.get(max_cap, 1)
            capacity_rps = b1.throughput_tps / mean_output
            rate_rps = LOAD_FACTOR * capacity_rps
            window_s = min(max(settings.fixed_requests / rate_rps, settings.fixed_window_min_s), settings.fixed_window_max_s)
            fixed = runner.sweep(model, model_tp, grid, rate_rps, settings.fixed_warmup_s, window_s, "fixed")
            top = sat.get(max_cap, max(batches))
            results[model] = ModelResult(model, model_tp, sat, fixed, capacity_rps, rate_rps, top.gpu_power_w)
        ablations: dict[str, dict[str, Sweep]] = {}
        if settings.ablations:
            for switch in ABLATIONS:
                mechanisms = dataclasses.replace(Mechanisms(), **{switch: False})
                ablations[switch] = {
                    model: runner.sweep(model, tp, [(c, max(settings.batch_caps)) for c in caps], None,
                                        settings.saturation_warmup_s, settings.saturation_window_s,
                                        f"saturation_no-{switch}", mechanisms=mechanisms)
                    for model in cap_models
                }
    finally:
        bar.close()
    return CharacterizationResult(
        gpu=spec_gpu.name,
        tp=tp,
        quick=quick,
        seed=seed,
        settings=settings,
        workload={"prompt_tokens": prompt_tokens, "output_tokens": output_tokens, "length_cv": LENGTH_CV},
        mechanisms=dataclasses.asdict(Mechanisms()),
        models=results,
        cap_models=cap_models,
        ablations=ablations,
        measure_wall_s=time.perf_counter() - start,
        profiles_dir=profiles_dir,
        skipped=tuple(skipped),
    )


# ----------------------------------------------------------------------------------------- figures

MECHANISM_NOTES = {
    "per_step_limiter": "each step shape gets its own clock under the cap (off: one clock held over a window)",
    "bandwidth_scales_with_clock": "effective HBM bandwidth falls with the SM clock (assumption)",
    "collective_spin_power": "NCCL busy-polls during collectives, drawing SM power (unmeasured)",
    "kernel_launch_floor": "a layer takes at least its kernels x 4 us (small batches)",
    "cpu_overhead": "per-step CPU/scheduler time at always-on power (fitted, 0.86 ms)",
}
"""One line per `pals.sim.step.Mechanisms` switch (docs/simulator.md has the full table)."""

_SHORT = {
    "per_step_limiter": "per-step limiter",
    "bandwidth_scales_with_clock": "HBM bandwidth falling with the clock",
    "collective_spin_power": "NCCL spin power",
}


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:+.1f} %"


def _cap_shape(sweep: Sweep) -> str:
    """"peaks at 200 W; 400 W -1.2 %" or "rises to 400 W"."""
    caps = sweep.caps_w
    best, loss = sweep.best_cap_w(), sweep.loss_at_max_cap()
    if best == caps[-1]:
        return f"highest at {best:g} W (the largest cap)"
    return f"peaks at {best:g} W; {caps[-1]:g} W is {_pct(-loss)}"


def _range_pct(values: list[float]) -> str:
    lo, hi = 100 * min(values), 100 * max(values)
    return f"{lo:.1f} %" if abs(hi - lo) < 0.05 else f"{lo:.1f}-{hi:.1f} %"


def _range_w(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f} W" if len(values) > 1 else f"{values[0]:.0f} W"


def paper_best_cap_w(model: str, max_cap_w: float) -> float:
    """The paper's best cap, scaled to the GPU's largest cap (the paper's A100 tops out at 400 W)."""
    return PAPER_BEST_CAP_W[model] / 400.0 * max_cap_w


def _deciders(result: CharacterizationResult, model: str) -> list[str]:
    """Which switch, turned off, moves the saturating best cap or removes the decline above it."""
    base = result.models[model].saturation
    b0, l0 = base.best_cap_w(), base.loss_at_max_cap()
    out = []
    for switch, sweeps in result.ablations.items():
        sw = sweeps.get(model)
        if sw is None:
            continue
        b1, l1 = sw.best_cap_w(), sw.loss_at_max_cap()
        if b1 != b0 or (l0 > 0.003 and l1 < 0.25 * l0) or abs(l1 - l0) > 0.02:
            out.append(f"{_SHORT.get(switch, switch)} (off: peak {b1:g} W, max cap {_pct(-l1)})")
    gpu_best = base.best_cap_w(gpu_only=True)
    if gpu_best != b0:
        out.append(f"the 345 W node baseline (GPU-only tokens/J peaks at {gpu_best:g} W)")
    return out


def _headroom(mr: ModelResult, mean_output_tokens: float) -> float:
    """Saturating throughput at the lowest cap and largest batch over the fixed offered load."""
    sat = mr.saturation
    p = sat.get(sat.caps_w[0], sat.batches[-1])
    return p.throughput_tps / (mr.fixed_rate_rps * mean_output_tokens) if p else math.nan


def comparison_rows(result: CharacterizationResult) -> list[list[str]]:
    """The table "paper says | ours (saturation) | ours (fixed load) | agrees? | mechanism that decides it"."""
    rows: list[list[str]] = []
    mean_out = _lengths(result.workload["prompt_tokens"], result.workload["output_tokens"])[1].mean
    for model in FIG1A_MODELS:
        mr = result.models.get(model)
        paper = (
            f"Fig 1a, {model}: keeps gaining up to 400 W"
            if PAPER_BEST_CAP_W[model] == 400.0
            else f"Fig 1a, {model}: peaks at about 200 W, declines above"
        )
        if mr is None or not mr.cap_curve:
            rows.append([paper, "not measured", "not measured", "-", "-"])
            continue
        sat, fix = mr.saturation, mr.fixed
        want = paper_best_cap_w(model, sat.caps_w[-1])
        agree_sat = sat.best_cap_w() == want and (want == sat.caps_w[-1] or sat.loss_at_max_cap() > 0.002)
        agree_fix = fix.best_cap_w() == want and (want == fix.caps_w[-1] or fix.loss_at_max_cap() > 0.002)
        deciders = _deciders(result, model)
        mech = []
        if sat.best_cap_w() < sat.caps_w[-1]:
            mech.append(f"saturation: GPUs draw {mr.natural_draw_w:.0f} W uncapped at batch {sat.batches[-1]}, so high caps change little")
        if want == sat.caps_w[-1] and sat.best_cap_w() < want:
            mech.append(f"a curve still rising at {want:g} W needs GPUs that draw near {want:g} W; ours are calibrated "
                        "to Zeus's compute-bound cap table, which keeps this draw low")
        if deciders:
            mech.append("moves with " + "; ".join(deciders))
        mech.append(f"fixed load: every cap serves the load (capacity {_headroom(mr, mean_out):.1f}x it at "
                    f"{sat.caps_w[0]:g} W), so tokens/J follows power")
        rows.append([
            paper,
            _cap_shape(sat),
            _cap_shape(fix),
            f"sat: {'yes' if agree_sat else 'no'}; fixed: {'yes' if agree_fix else 'no'}",
            ". ".join(m[0].upper() + m[1:] for m in mech),
        ])

    measured = [mr for mr in result.models.values()]
    sat_r = [mr.saturation.ratio(mr.saturation.batches[-1], 1) for mr in measured]
    fix_r = [mr.fixed.ratio(mr.fixed.batches[-1], 1) for mr in measured]
    top = max(mr.saturation.batches[-1] for mr in measured)
    lo, hi = PAPER_BATCH_RATIO
    rows.append([
        f"Fig 1b: batch 64 / batch 1 tokens/J is {lo:g}-{hi:g}x for all models",
        f"{min(sat_r):.1f}-{max(sat_r):.1f}x ({len(measured)} models, batch {top})",
        f"{min(fix_r):.2f}-{max(fix_r):.2f}x",
        f"sat: {'yes' if all(lo <= r <= hi for r in sat_r) else 'no'}; "
        f"fixed: {'yes' if all(lo <= r <= hi for r in fix_r) else 'no'} (by construction, see below)",
        "saturation: batch-1 decode is weight-bandwidth bound and batch 64 reads the same weights per step; "
        "fixed load: batch 1 serves its capacity, every larger batch serves the load (2x that capacity), so the "
        f"ratio is about LOAD_FACTOR ({LOAD_FACTOR:g}) x the power ratio: our choice of load decides it",
    ])

    mix, qwen = result.models.get("Mixtral-8x7B"), result.models.get("Qwen1.5-MoE-A2.7B")
    if mix and qwen and 32 in mix.saturation.batches and 32 in qwen.saturation.batches:
        gs = (mix.saturation.ratio(64, 32) - 1, qwen.saturation.ratio(64, 32) - 1)
        gf = (mix.fixed.ratio(64, 32) - 1, qwen.fixed.ratio(64, 32) - 1)
        size = all(abs(g - p) < 0.05 for g, p in zip(gs, PAPER_GAIN_32_64.values()))
        rows.append([
            "Batch 32 -> 64 adds 2 % (Mixtral) and 7 % (Qwen-MoE)",
            f"Mixtral {_pct(gs[0])}, Qwen-MoE {_pct(gs[1])}",
            f"Mixtral {_pct(gf[0])}, Qwen-MoE {_pct(gf[1])}",
            f"sat: ordering {'yes' if gs[0] < gs[1] else 'no'}, size {'yes' if size else 'no'}; fixed: "
            f"{'tie' if max(abs(g) for g in gf) < 0.02 else 'no'}",
            "saturation: per-step weight reads are still amortised from 32 to 64; Mixtral's 2048-token mixed steps "
            "pass its expert ridge (compute-bound), so it gains less than the small-expert Qwen-MoE. Fixed load: "
            "both batches carry the load, so they tie",
        ])
    else:
        rows.append(["Batch 32 -> 64 adds 2 % (Mixtral) and 7 % (Qwen-MoE)", "not measured", "not measured", "-", "-"])

    for model in FIG1A_MODELS:
        mr = result.models.get(model)
        paper = f"Fig 3, {model}: joint frontier's peak tokens/J is {PAPER_FRONTIER_RATIO[model]:.2f}x the software-only one"
        if mr is None or not mr.cap_curve:
            rows.append([paper, "not measured", "not measured", "-", "-"])
            continue
        rs, rf = mr.saturation.frontier_ratio(), mr.fixed.frontier_ratio()
        ok = lambda r: abs(r - PAPER_FRONTIER_RATIO[model]) <= 0.03  # noqa: E731
        rows.append([
            paper,
            f"{rs:.3f}x",
            f"{rf:.3f}x",
            f"sat: {'yes' if ok(rs) else 'no'}; fixed: {'yes' if ok(rf) else 'no'}",
            "the joint and software-only peaks share their batch (the largest at saturation; at the fixed load the "
            "batches that carry the load tie), so the ratio is what the cap alone buys, 1 / (1 - the Fig 1a loss at "
            f"{mr.saturation.caps_w[-1]:g} W); caps above the GPUs' draw change nothing, which bounds it",
        ])
    return rows


# ------------------------------------------------------------------------------------------ report


def bottom_line(result: CharacterizationResult) -> list[str]:
    """Three bullets: the cap curves, the batch ratio and the frontier gain, ours against the paper's."""
    cap_models = [m for m in result.cap_models if result.models[m].cap_curve]
    out = []
    if cap_models:
        def best(attr: str) -> str:
            return ", ".join(
                f"{m} {getattr(result.models[m], attr).best_cap_w():g} W"
                + (f" (paper {paper_best_cap_w(m, getattr(result.models[m], attr).caps_w[-1]):g} W)"
                   if m in PAPER_BEST_CAP_W else "")
                for m in cap_models
            )

        out.append(
            f"- **Cap curves (Fig 1a).** Best cap at saturation: {best('saturation')}; the largest cap costs "
            f"{_range_pct([result.models[m].saturation.loss_at_max_cap() for m in cap_models])} against the best. "
            f"At the fixed load: {best('fixed')}."
        )
    models = list(result.models.values())
    out.append(
        "- **Batch 64 / batch 1 (Fig 1b, paper 1.7-2.1x).** Saturation: "
        f"{min(m.saturation.ratio(m.saturation.batches[-1], 1) for m in models):.1f}-"
        f"{max(m.saturation.ratio(m.saturation.batches[-1], 1) for m in models):.1f}x; fixed load "
        f"({LOAD_FACTOR:g}x batch-1 capacity): {min(m.fixed.ratio(m.fixed.batches[-1], 1) for m in models):.2f}-"
        f"{max(m.fixed.ratio(m.fixed.batches[-1], 1) for m in models):.2f}x, which is the load factor we chose, "
        "not a property of the models."
    )
    if cap_models:
        out.append(
            "- **Frontier gain (Fig 3, paper 1.13-1.18x).** Joint over software-only peak tokens/J: "
            + ", ".join(f"{m} {result.models[m].saturation.frontier_ratio():.3f}x" for m in cap_models)
            + " at saturation; "
            + ", ".join(f"{result.models[m].fixed.frontier_ratio():.3f}x" for m in cap_models)
            + " at the fixed load."
        )
    return out



def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
    return lines


def write_report(result: CharacterizationResult, out_dir: str | os.PathLike) -> Path:
    """Write `characterization.md` and its PNGs into `out_dir`.

    Returns:
        The Markdown file's path.
    """
    from pals.core.io import atomic_write_text
    from pals.model.plots import plot_grouped_bars, plot_profile, plot_relative_curves

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    cap_models = [m for m in result.cap_models if result.models[m].cap_curve]
    any_cap = cap_models[0] if cap_models else None
    max_cap = result.models[any_cap].saturation.caps_w[-1] if any_cap else math.nan
    mean_out = _lengths(result.workload["prompt_tokens"], result.workload["output_tokens"])[1].mean
    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    images: dict[str, Path] = {}

    if cap_models:
        panels = {
            label: {m: getattr(result.models[m], attr).curve(getattr(result.models[m], attr).batches[-1])
                    for m in cap_models}
            for label, attr in (("saturation", "saturation"), ("fixed offered load", "fixed"))
        }
        vlines = {m: paper_best_cap_w(m, max_cap) for m in cap_models if m in PAPER_BEST_CAP_W}
        images["fig1a"] = plot_relative_curves(
            panels, fig_dir / "fig1a_tpj_vs_cap.png",
            f"Fig 1a shape: tokens/J vs cap at the largest batch, TP {result.tp} (dashed: the paper's best cap)",
            vlines=vlines,
        )
        if result.ablations:
            abl = {}
            for m in cap_models:
                lines = {"all mechanisms on": result.models[m].saturation.curve(result.models[m].saturation.batches[-1])}
                for switch, sweeps in result.ablations.items():
                    if m in sweeps:
                        lines[f"{_SHORT.get(switch, switch)} off"] = sweeps[m].curve(sweeps[m].batches[-1])
                sat = result.models[m].saturation
                lines["GPU-only tokens/J"] = sat.curve(sat.batches[-1], gpu_only=True)
                abl[m] = lines
            images["ablation"] = plot_relative_curves(
                abl, fig_dir / "fig1a_mechanisms.png",
                "Which mechanism decides the saturating cap curve (one switch off at a time)",
                vlines={m: paper_best_cap_w(m, max_cap) for m in cap_models if m in PAPER_BEST_CAP_W},
            )
        for m in cap_models:
            for attr in ("saturation", "fixed"):
                sweep = getattr(result.models[m], attr)
                paths = plot_profile(sweep.as_profile(result.gpu), fig_dir / f"{_slug(m)}_{attr}",
                                     title=f"{m}, TP {result.models[m].tp}, {attr}")
                images[f"{m}/{attr}/pareto"] = paths[-1]
                images[f"{m}/{attr}/batch"] = paths[1]
        images["fig3"] = plot_grouped_bars(
            cap_models,
            {
                "paper": [PAPER_FRONTIER_RATIO.get(m, math.nan) for m in cap_models],
                "ours, saturation": [result.models[m].saturation.frontier_ratio() for m in cap_models],
                "ours, fixed load": [result.models[m].fixed.frontier_ratio() for m in cap_models],
            },
            fig_dir / "fig3_frontier_ratio.png",
            "Fig 3: peak tokens/J, joint over software-only frontier",
            "peak tokens/J ratio",
        )
    models = list(result.models)
    images["fig1b"] = plot_grouped_bars(
        models,
        {
            "saturation": [result.models[m].saturation.ratio(result.models[m].saturation.batches[-1], 1) for m in models],
            "fixed load (2x batch-1 capacity)": [result.models[m].fixed.ratio(result.models[m].fixed.batches[-1], 1)
                                                 for m in models],
        },
        fig_dir / "fig1b_batch_ratio.png",
        "Fig 1b: tokens/J at the largest batch over batch 1 (largest cap)",
        "ratio (log scale)",
        log=True,
        band=PAPER_BATCH_RATIO,
        band_label=f"paper {PAPER_BATCH_RATIO[0]:g}-{PAPER_BATCH_RATIO[1]:g}x",
    )

    s = result.settings
    lines = [
        "# Characterization: the PALS paper's Figures 1 and 3 on the simulated node",
        "",
        f"Generated by `pals.model.characterize` ({'quick run: a smoke test, not the figures' if result.quick else 'full run'}). "
        "We compare our simulated shapes to the paper's *statements* (we have no paper data points). "
        "No constant was tuned to a paper number; where we differ, the table says which mechanism decides it.",
        "",
        "## In short",
        "",
        *bottom_line(result),
        "",
        "## Setup",
        "",
        f"- Node: 4x {result.gpu} (simulated, `pals.sim`); Fig 1a / Fig 3 models at TP {result.tp}, the others at "
        "the TP of the feasibility note (replicas = 4 / TP).",
        f"- Workload: log-normal prompts {result.workload['prompt_tokens']:g} / outputs "
        f"{result.workload['output_tokens']:g} tokens (cv {result.workload['length_cv']:g}), chunked prefill 2048 "
        f"tokens, seed {result.seed} shared by every point of a model and load.",
        f"- Grid: caps {', '.join(f'{c:g}' for c in (result.models[any_cap].saturation.caps_w if any_cap else []))} W x "
        f"batches {', '.join(map(str, s.batch_caps))} for the Fig 1a models; caps {max_cap:g} W x batches "
        f"{', '.join(map(str, s.ratio_batches))} for the others.",
        "- Loads: **saturation** (requests always waiting) and a **fixed offered load**: Poisson at "
        f"{LOAD_FACTOR:g}x the model's batch-1 capacity (its saturating batch-1 throughput at the largest cap / "
        "mean output tokens), the same rate at every cap and batch.",
        f"- Measuring: `run_profile` on a fresh `SimNode` per point (a backlog would carry over otherwise), exact "
        f"telemetry; saturation warm-up {s.saturation_warmup_s:g} s + window {s.saturation_window_s:g} s; fixed load "
        f"warm-up {s.fixed_warmup_s:g} s + window of {s.fixed_requests} mean inter-arrival times, clipped to "
        f"{s.fixed_window_min_s:g}-{s.fixed_window_max_s:g} s (simulated).",
        "- tokens/J = generated tokens / node joules, node power = 1.05 x GPU power (energy counters) + 345 W "
        "(PALS section 3.1). The profiles' `node_power_w` column is a 4 Hz gauge that aliases the step-level "
        "power mix by ~1 %, as large as the margins here, so it is not used.",
        f"- Profiles: `{rel(result.profiles_dir)}/`. Wall time: measuring {result.measure_wall_s:.0f} s, "
        "report {REPORT_S} s.",
        "",
        "Mechanism switches in force (`pals.sim.step.Mechanisms`):",
        "",
    ]
    lines += _md_table(
        ["switch", "on?", "what it does"],
        [[f"`{k}`", "on" if v else "**off**", MECHANISM_NOTES.get(k, "")] for k, v in result.mechanisms.items()],
    )
    lines += ["", "## Paper vs ours", ""]
    lines += _md_table(
        ["paper says", "ours (saturation)", "ours (fixed load)", "agrees?", "mechanism that decides it"],
        comparison_rows(result),
    )

    # Fig 1a
    lines += ["", "## Fig 1a: tokens/J against the power cap", ""]
    if cap_models:
        lines += [f"![fig1a]({rel(images['fig1a'])})", ""]
        header = ["model", "load"] + [f"{c:g} W" for c in result.models[any_cap].saturation.caps_w] + ["best", "GPU W at largest cap"]
        rows = []
        for m in cap_models:
            for attr in ("saturation", "fixed"):
                sw = getattr(result.models[m], attr)
                caps, tpj = sw.curve(sw.batches[-1])
                top = sw.get(caps[-1], sw.batches[-1])
                rows.append([m, attr] + [f"{v:.3f}" for v in tpj] + [f"{sw.best_cap_w():g} W", f"{top.gpu_power_w:.0f}"])
        lines += [f"Node tokens/J at batch {result.models[any_cap].saturation.batches[-1]}:", ""]
        lines += _md_table(header, rows)
        lines += [""]
        for m in cap_models:
            mr = result.models[m]
            sat, fix = mr.saturation, mr.fixed
            want = paper_best_cap_w(m, max_cap)
            deciders = _deciders(result, m)
            text = (
                f"**{m}.** The paper's best cap is {want:g} W. At saturation ours {_cap_shape(sat)}; the GPUs draw "
                f"{mr.natural_draw_w:.0f} W each uncapped at batch {sat.batches[-1]}, and a cap above the draw of the "
                "heaviest (prefill-carrying) steps changes nothing. "
            )
            if want == sat.caps_w[-1] and sat.best_cap_w() < want:
                text += (
                    f"A curve that still rises at {want:g} W needs GPUs that draw close to {want:g} W at batch "
                    f"{sat.batches[-1]}; the step model's compute and memory times are calibrated to Zeus's compute-bound "
                    "cap table (docs/simulator.md), which puts this draw far lower, so the difference is decided by "
                    "that calibration, not by a switch. "
                )
            if deciders:
                text += "Turning mechanisms off one at a time shows what the shape rests on: " + "; ".join(deciders) + ". "
            else:
                text += "No single switch moves the peak (ablations " + ("not run" if not result.ablations else "leave it") + "). "
            text += (
                f"At the fixed load ({mr.fixed_rate_rps:.2f} requests/s) ours {_cap_shape(fix)}: batch {fix.batches[-1]} "
                f"serves the load at every cap (its saturating capacity at {sat.caps_w[0]:g} W is "
                f"{_headroom(mr, mean_out):.1f}x the load), so the tokens are the same at every cap; a higher clock "
                "does the same work at a higher voltage (step power grows faster than the clock), and the time it "
                "saves goes into smaller batches or idling, not into more tokens."
            )
            lines += [text, ""]
        lines += [
            "Per model and load, tokens/J against batch: "
            + ", ".join(f"[{m} {attr}]({rel(images[f'{m}/{attr}/batch'])})" for m in cap_models
                        for attr in ("saturation", "fixed"))
            + " (the cap-curve and frontier PNGs of each are beside them).",
            "",
        ]
        if "ablation" in images:
            lines += [f"![mechanisms]({rel(images['ablation'])})", ""]
            arows = []
            for m in cap_models:
                sat = mr_sat = result.models[m].saturation
                arows.append([m, "all on", f"{mr_sat.best_cap_w():g} W", _pct(-mr_sat.loss_at_max_cap())])
                for switch, sweeps in result.ablations.items():
                    if m in sweeps:
                        arows.append([m, f"`{switch}` off", f"{sweeps[m].best_cap_w():g} W", _pct(-sweeps[m].loss_at_max_cap())])
                arows.append([m, "GPU-only tokens/J (no node baseline)", f"{sat.best_cap_w(gpu_only=True):g} W",
                              _pct(-sat.loss_at_max_cap(gpu_only=True))])
            lines += _md_table(["model", "variant (saturation)", "best cap", f"tokens/J at {max_cap:g} W vs best"], arows)
            lines += [""]
    else:
        lines += ["Not measured in this run.", ""]

    # Fig 1b
    lines += ["## Fig 1b: batch 64 against batch 1", "", f"![fig1b]({rel(images['fig1b'])})", ""]
    brows = []
    for m, mr in result.models.items():
        sat, fix = mr.saturation, mr.fixed
        top = sat.batches[-1]
        g_s = sat.ratio(top, 32) - 1 if 32 in sat.batches else math.nan
        g_f = fix.ratio(top, 32) - 1 if 32 in fix.batches else math.nan
        brows.append([m, str(mr.tp), f"{mr.batch1_capacity_rps:.2f}", f"{mr.fixed_rate_rps:.2f}", f"{fix.window_s:.0f}",
                      f"{sat.ratio(top, 1):.2f}x", f"{fix.ratio(top, 1):.2f}x", _pct(g_s), _pct(g_f)])
    lines += _md_table(
        ["model", "TP", "batch-1 capacity (req/s)", "fixed load (req/s)", "fixed window (s)",
         "b64/b1 saturation", "b64/b1 fixed load", "32->64 saturation", "32->64 fixed load"],
        brows,
    )
    lines += [
        "",
        "At saturation the ratio is what the physics gives: batch-1 decode is bound by reading the weights, and "
        "batch 64 reads the same weights once per step for 64 sequences, so tokens/J rises many-fold; the "
        "feasibility note found that bringing it to 2x would take 2-16 ms of CPU time per sequence per step. At "
        "the fixed load batch 1 is overloaded and serves its capacity, while every larger batch serves the whole "
        f"offered load, {LOAD_FACTOR:g}x that capacity, at a similar node power; so the ratio is about "
        f"{LOAD_FACTOR:g}x by construction. It lands in the paper's band because of the load we chose, not "
        "because of the model. For the same reason batches 32 and 64 tie at the fixed load, while at saturation "
        "the paper's ordering (Mixtral gains less than Qwen-MoE from 32 to 64) holds but the gains are many "
        "times larger.",
        "",
    ]

    # Fig 3
    lines += ["## Fig 3: joint frontier against the software-only frontier", ""]
    if cap_models:
        lines += [f"![fig3]({rel(images['fig3'])})", ""]
        frows = []
        for m in cap_models:
            mr = result.models[m]
            r300 = [getattr(mr, a).frontier_ratio(SW_ONLY_BUDGET_CAP_W) if SW_ONLY_BUDGET_CAP_W in getattr(mr, a).caps_w
                    else math.nan for a in ("saturation", "fixed")]
            frows.append([m, f"{PAPER_FRONTIER_RATIO.get(m, math.nan):.2f}x",
                          f"{mr.saturation.frontier_ratio():.3f}x", f"{mr.fixed.frontier_ratio():.3f}x",
                          f"{r300[0]:.3f}x", f"{r300[1]:.3f}x"])
        lines += _md_table(
            ["model", "paper", f"ours sat (SW-only at {max_cap:g} W)", f"ours fixed (SW-only at {max_cap:g} W)",
             f"ours sat (SW-only at {SW_ONLY_BUDGET_CAP_W:g} W)", f"ours fixed (SW-only at {SW_ONLY_BUDGET_CAP_W:g} W)"],
            frows,
        )
        lines += [
            "",
            "The paper describes the software-only sweep both as \"without applying power caps\" (our "
            f"{max_cap:g} W column) and as \"capped by the fixed 300 W budget\" (our 300 W column). Either way the "
            "joint frontier's most efficient point and the software-only one share their batch (the largest at "
            "saturation; at the fixed load every batch that carries the load ties), so the gain is what the cap "
            "alone buys, the Fig 1a loss at the software-only cap: "
            f"{_range_pct([result.models[m].saturation.loss_at_max_cap() for m in cap_models])} at saturation and "
            f"{_range_pct([result.models[m].fixed.loss_at_max_cap() for m in cap_models])} at the fixed load. The "
            "paper's 13-18 % would need batch 64 at the software-only cap to spend 13-18 % more node energy per "
            "token than at the best cap. Ours cannot: at saturation the GPUs draw "
            f"{_range_w([result.models[m].natural_draw_w for m in cap_models])} uncapped, so caps above that change "
            "little, and the 345 W node baseline makes the throughput lost at low caps expensive. Frontiers per model:",
            "",
        ]
        for m in cap_models:
            lines += [f"![{m} saturation]({rel(images[f'{m}/saturation/pareto'])}) "
                      f"![{m} fixed]({rel(images[f'{m}/fixed/pareto'])})", ""]
    else:
        lines += ["Not measured in this run.", ""]

    lines += [
        "## Not covered here",
        "",
        "- TP as the third knob (the paper's +15 % for Mixtral at the frontier tip) and multi-node EP: "
        "`pals experiment` covers those.",
        "- The paper's own data points: we compare against its statements only.",
        *([f"- Left out (do not fit 4x {result.gpu} at any TP): {', '.join(result.skipped)}."] if result.skipped else []),
        "- One seed and one workload; the saturating margins around the best cap are ~1 % and rest on the "
        "assumptions marked in docs/simulator.md (the ablation table shows which).",
        "",
    ]
    path = out / "characterization.md"
    text = "\n".join(lines).replace("{REPORT_S}", f"{time.perf_counter() - start:.0f}")
    atomic_write_text(path, text)
    return path
