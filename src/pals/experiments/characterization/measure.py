"""Measuring the characterization on the simulated node, through the profiler.

One fresh `SimNode` per (cap, batch) point (`run_profile` through `profile_on_fresh_nodes`),
under two loads:

- *saturation*: requests always waiting (closed loop);
- *fixed offered load*: Poisson arrivals at `LOAD_FACTOR` (2) x the model's batch-1 capacity,
  where the capacity is the saturating batch-1 throughput at the largest cap (requests/s =
  tokens/s / mean output tokens). The suggestion of the feasibility study (docs/calibration.md §7); the rule is per model so
  that every model sees "twice what batch 1 can serve".

A fresh node per point matters under an open-loop load: the backlog an overloaded batch-1 point
builds would otherwise carry over and saturate the next point. All points of one model and load
share one workload seed (common random numbers), so two points differ only by the configuration.
At saturation the cap curve is measured again with one mechanism switch off at a time
(`ABLATIONS`: which mechanism decides the shape).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from pals.core.node import Actuation
from pals.core.workload import WorkloadDescriptor
from pals.errors import ConfigError
from pals.experiments.characterization.results import CharacterizationResult, ModelResult, Point, Sweep
from pals.experiments.characterization.settings import (
    ABLATIONS,
    DEFAULT_GPU,
    DEFAULT_OUTPUT_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    FIG1A_MODELS,
    LENGTH_CV,
    LOAD_FACTOR,
    PAPER_MODEL_TP,
    CharacterizationSettings,
)
from pals.model.profiler import paper_grid_within, profile_on_fresh_nodes
from pals.sim.hardware import get_gpu
from pals.sim.node import NoiseConfig, SimNode, SimNodeSpec
from pals.sim.physics import PhysicsParams
from pals.sim.step import Mechanisms
from pals.runtime.deployment import fits_node
from pals.runtime.load import LoadSpec, LognormalLengths, make_workload
from pals.sim.workload import LengthDistribution


def length_distributions(prompt_tokens: float, output_tokens: float) -> tuple[LengthDistribution, LengthDistribution]:
    """Log-normal prompt and output lengths with these means (cv `LENGTH_CV`, as `pals sweep`)."""
    return LognormalLengths(prompt_tokens, output_tokens, LENGTH_CV).distributions()


def slug(name: str) -> str:
    """A model name as a file-name stem ("Qwen1.5-MoE-A2.7B" -> "qwen1-5-moe-a2-7b")."""
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


class _Runner:
    """Measures points through the profiler, one fresh SimNode per point, appending to one profile file.

    Workloads come from the runtime's one load description (`pals.runtime.load`): log-normal
    lengths with cv `LENGTH_CV`, saturating or Poisson. Nodes are built here rather than through the
    runtime's builder because each carries a mechanism ablation and exact telemetry.
    """

    def __init__(self, gpu: str, seed: int, prompt_tokens: float, output_tokens: float, profiles_dir: Path, bar,
                 params: PhysicsParams | None = None) -> None:
        self.gpu = gpu
        self.params = params
        self.seed = seed
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.profiles_dir = profiles_dir
        self.bar = bar

    def workload(self, rate_rps: float | None):
        lengths = LognormalLengths(self.prompt_tokens, self.output_tokens, LENGTH_CV)
        if rate_rps is None:
            return make_workload(LoadSpec(saturate=True, lengths=lengths, seed=self.seed))
        return make_workload(LoadSpec(rate_rps=rate_rps, lengths=lengths, seed=self.seed))

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
        # max_num_seqs: the paper's 64, or the grid's largest batch (the saturating load keeps that many waiting)
        batch_cap_max = max([64, *(batch for _, batch in points)])
        spec = SimNodeSpec(model, self.gpu, num_gpus=4, tp=tp, mechanisms=mechanisms, params=self.params,
                           batch_cap_max=batch_cap_max)
        step_model = spec.step_model()
        features = WorkloadDescriptor(self.prompt_tokens, self.output_tokens, rate_rps)
        path = self.profiles_dir / f"{slug(model)}_tp{tp}_{tag}.csv"  # measured afresh (settings may differ)
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
    params: PhysicsParams | None = None,
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
        params: Step physics (`pals.sim.physics.load_physics`); None: the GPU preset's.

    Returns:
        The sweep, tokens/J per node joule as in `characterize`.
    """
    directory = Path(profiles_dir)
    directory.mkdir(parents=True, exist_ok=True)
    runner = _Runner(get_gpu(gpu).name, seed, prompt_tokens, output_tokens, directory, bar=None, params=params)
    return runner.sweep(model, tp, points, rate_rps, warmup_s, window_s, tag)


def _chosen_models(
    models: Sequence[str] | None, ratio_models: Sequence[str] | None, quick: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(cap-curve models, ratio-only models) after the defaults; ratio models need a `PAPER_MODEL_TP`."""
    cap_models = tuple(models) if models else (("OLMoE-1B-7B",) if quick else FIG1A_MODELS)
    if ratio_models is None:
        ratio_models = () if quick else tuple(m for m in PAPER_MODEL_TP if m not in cap_models)
    ratio_models = tuple(m for m in ratio_models if m not in cap_models)
    for model in ratio_models:
        if model not in PAPER_MODEL_TP:
            raise ConfigError(f"ratio model {model!r} has no TP in PAPER_MODEL_TP; pass it in models= (measured at tp)")
    return cap_models, ratio_models


def _caps_within(settings: CharacterizationSettings, spec_gpu) -> tuple[float, ...]:
    """The settings' caps (default: the paper's grid within the GPU's range), each checked against that range."""
    caps = settings.power_caps_w or paper_grid_within(spec_gpu.power_limit_min_w, spec_gpu.power_limit_max_w, 64).power_caps_w
    caps = tuple(float(c) for c in caps)
    for cap in caps:
        if not spec_gpu.power_limit_min_w <= cap <= spec_gpu.power_limit_max_w:
            raise ConfigError(
                f"cap {cap:g} W is outside {spec_gpu.name}'s range "
                f"{spec_gpu.power_limit_min_w:g}-{spec_gpu.power_limit_max_w:g} W; pass caps within it"
            )
    return caps


def _deployments(
    cap_models: tuple[str, ...], ratio_models: tuple[str, ...], tp: int, gpu: str
) -> tuple[list[tuple[str, int, bool]], list[str]]:
    """(model, TP, full grid?) per measured model, and the ratio models that fit at no TP."""
    deployments = [(m, tp, True) for m in cap_models]
    skipped: list[str] = []
    for model in ratio_models:
        ratio_tp = _fitting_tp(model, gpu, PAPER_MODEL_TP[model])
        if ratio_tp is None:
            skipped.append(model)
        else:
            deployments.append((model, ratio_tp, False))
    return deployments, skipped


def _point_count(
    settings: CharacterizationSettings, deployments: list[tuple[str, int, bool]], n_caps: int, n_cap_models: int
) -> int:
    """How many points the run measures (the progress bar's total)."""
    n_grid = n_caps * len(settings.batch_caps)
    total = sum(2 * (n_grid if full else len(settings.ratio_batches)) for _, _, full in deployments)
    if settings.ablations:
        total += len(ABLATIONS) * n_cap_models * n_caps
    return total


def _measure_model(
    runner: _Runner,
    deployment: tuple[str, int, bool],
    caps: tuple[float, ...],
    settings: CharacterizationSettings,
    mean_output_tokens: float,
) -> ModelResult:
    """One model at saturation, then at `LOAD_FACTOR` x its batch-1 capacity (measured at saturation)."""
    model, model_tp, full = deployment
    max_cap = max(caps)
    batches = settings.batch_caps if full else settings.ratio_batches
    grid = [(c, b) for c in (caps if full else (max_cap,)) for b in batches]
    sat = runner.sweep(model, model_tp, grid, None, settings.saturation_warmup_s,
                       settings.saturation_window_s, "saturation")
    b1 = sat.get(max_cap, 1)
    capacity_rps = b1.throughput_tps / mean_output_tokens
    rate_rps = LOAD_FACTOR * capacity_rps
    window_s = min(max(settings.fixed_requests / rate_rps, settings.fixed_window_min_s), settings.fixed_window_max_s)
    fixed = runner.sweep(model, model_tp, grid, rate_rps, settings.fixed_warmup_s, window_s, "fixed")
    top = sat.get(max_cap, max(batches))
    return ModelResult(model, model_tp, sat, fixed, capacity_rps, rate_rps, top.gpu_power_w)


def _measure_ablations(
    runner: _Runner, cap_models: tuple[str, ...], tp: int, caps: tuple[float, ...], settings: CharacterizationSettings
) -> dict[str, dict[str, Sweep]]:
    """switch -> model -> the saturating cap curve at the largest batch with that switch off."""
    ablations: dict[str, dict[str, Sweep]] = {}
    for switch in ABLATIONS:
        mechanisms = dataclasses.replace(Mechanisms(), **{switch: False})
        ablations[switch] = {
            model: runner.sweep(model, tp, [(c, max(settings.batch_caps)) for c in caps], None,
                                settings.saturation_warmup_s, settings.saturation_window_s,
                                f"saturation_no-{switch}", mechanisms=mechanisms)
            for model in cap_models
        }
    return ablations


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
    params: PhysicsParams | None = None,
    physics_label: str = "the GPU preset's",
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
        params: Step physics for every node (`pals.sim.physics.load_physics`); None: the GPU preset's.
        physics_label: Where `params` came from, for the report (e.g. the physics file's path).

    Returns:
        The measured sweeps and figures; pass it to `write_report`.
    """
    start = time.perf_counter()
    settings = settings or (CharacterizationSettings.quick() if quick else CharacterizationSettings())
    cap_models, ratio_models = _chosen_models(models, ratio_models, quick)
    spec_gpu = get_gpu(gpu)
    caps = _caps_within(settings, spec_gpu)
    profiles_dir = Path(out_dir) / "profiles"
    profiles_dir.mkdir(parents=True, exist_ok=True)
    mean_output = length_distributions(prompt_tokens, output_tokens)[1].mean
    deployments, skipped = _deployments(cap_models, ratio_models, tp, spec_gpu.name)
    total = _point_count(settings, deployments, len(caps), len(cap_models))

    bar = tqdm(total=total, disable=not progress, unit="point", desc="characterize", leave=True)
    runner = _Runner(spec_gpu.name, seed, prompt_tokens, output_tokens, profiles_dir, bar, params=params)
    results: dict[str, ModelResult] = {}
    try:
        for deployment in deployments:
            results[deployment[0]] = _measure_model(runner, deployment, caps, settings, mean_output)
        ablations = _measure_ablations(runner, cap_models, tp, caps, settings) if settings.ablations else {}
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
        params=params,
        physics=physics_label if params is not None else "the GPU preset's",
    )
