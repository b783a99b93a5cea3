"""The characterization report's PNGs: Fig 1a cap curves, the mechanism ablations, each sweep's
profile figures, the Fig 3 frontier ratios and the Fig 1b batch ratios.

matplotlib is imported by `pals.model.plots` inside its functions, so importing this costs nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

from pals.experiments.characterization.compare import SWITCH_NAMES, paper_best_cap_w
from pals.experiments.characterization.measure import slug
from pals.experiments.characterization.results import CharacterizationResult
from pals.experiments.characterization.settings import PAPER_BATCH_RATIO, PAPER_BEST_CAP_W, PAPER_FRONTIER_RATIO
from pals.model.plots import plot_grouped_bars, plot_profile, plot_relative_curves

LOADS = ("saturation", "fixed")
"""The two loads, as `ModelResult` attribute names."""


def draw_figures(result: CharacterizationResult, fig_dir: Path) -> dict[str, Path]:
    """Draw every figure into `fig_dir`; return them by key ("fig1a", "ablation", "<model>/<load>/pareto",
    "<model>/<load>/batch", "fig3", "fig1b"), only those drawn."""
    cap_models = result.curve_models
    images: dict[str, Path] = {}
    if cap_models:
        max_cap = result.models[cap_models[0]].saturation.caps_w[-1]
        images["fig1a"] = _fig1a(result, cap_models, max_cap, fig_dir)
        if result.ablations:
            images["ablation"] = _ablation_figure(result, cap_models, max_cap, fig_dir)
        images.update(_sweep_figures(result, cap_models, fig_dir))
        images["fig3"] = _fig3(result, cap_models, fig_dir)
    images["fig1b"] = _fig1b(result, fig_dir)
    return images


def _fig1a(result: CharacterizationResult, cap_models: list[str], max_cap: float, fig_dir: Path) -> Path:
    """Tokens/J against the cap at the largest batch, one panel per load, each line relative to its best."""
    panels = {
        label: {m: getattr(result.models[m], attr).curve(getattr(result.models[m], attr).batches[-1])
                for m in cap_models}
        for label, attr in (("saturation", "saturation"), ("fixed offered load", "fixed"))
    }
    vlines = {m: paper_best_cap_w(m, max_cap) for m in cap_models if m in PAPER_BEST_CAP_W}
    return plot_relative_curves(
        panels, fig_dir / "fig1a_tpj_vs_cap.png",
        f"Fig 1a shape: tokens/J vs cap at the largest batch, TP {result.tp} (dashed: the paper's best cap)",
        vlines=vlines,
    )


def _ablation_figure(result: CharacterizationResult, cap_models: list[str], max_cap: float, fig_dir: Path) -> Path:
    """The saturating cap curve per model with each mechanism switch off in turn, and GPU-only tokens/J."""
    abl = {}
    for m in cap_models:
        lines = {"all mechanisms on": result.models[m].saturation.curve(result.models[m].saturation.batches[-1])}
        for switch, sweeps in result.ablations.items():
            if m in sweeps:
                lines[f"{SWITCH_NAMES.get(switch, switch)} off"] = sweeps[m].curve(sweeps[m].batches[-1])
        sat = result.models[m].saturation
        lines["GPU-only tokens/J"] = sat.curve(sat.batches[-1], gpu_only=True)
        abl[m] = lines
    return plot_relative_curves(
        abl, fig_dir / "fig1a_mechanisms.png",
        "Which mechanism decides the saturating cap curve (one switch off at a time)",
        vlines={m: paper_best_cap_w(m, max_cap) for m in cap_models if m in PAPER_BEST_CAP_W},
    )


def _sweep_figures(result: CharacterizationResult, cap_models: list[str], fig_dir: Path) -> dict[str, Path]:
    """Each cap-curve sweep's profile figures; keeps its Pareto and tokens/J-vs-batch PNGs."""
    images: dict[str, Path] = {}
    for m in cap_models:
        for attr in LOADS:
            sweep = getattr(result.models[m], attr)
            paths = plot_profile(sweep.as_profile(result.gpu), fig_dir / f"{slug(m)}_{attr}",
                                 title=f"{m}, TP {result.models[m].tp}, {attr}")
            images[f"{m}/{attr}/pareto"] = paths[-1]
            images[f"{m}/{attr}/batch"] = paths[1]
    return images


def _fig3(result: CharacterizationResult, cap_models: list[str], fig_dir: Path) -> Path:
    """Peak tokens/J of the joint frontier over the software-only one: the paper's and ours at both loads."""
    return plot_grouped_bars(
        cap_models,
        {
            "paper": [PAPER_FRONTIER_RATIO.get(m, math.nan) for m in cap_models],
            "ours, saturation": [result.models[m].saturation.frontier_ratio() for m in cap_models],
            "ours, fixed load": [result.models[m].fixed.frontier_ratio() for m in cap_models],
        },
        fig_dir / "fig3_frontier_ratio.png",
        "Fig 3: peak tokens/J, joint over software-only frontier",
        "peak tokens/J ratio (x)",
    )


def _fig1b(result: CharacterizationResult, fig_dir: Path) -> Path:
    """Tokens/J at the largest batch over batch 1, every model, both loads, against the paper's band."""
    models = list(result.models)
    return plot_grouped_bars(
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
