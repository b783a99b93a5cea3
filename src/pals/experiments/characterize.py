"""characterize (paper Figs 1-3): tokens/J against cap and batch, compute/communication split, frontiers.

- Fig 1 and Fig 3 (batch-only, cap-only, joint frontiers): measured by `pals.experiments.characterization`,
  the same code as `pals sweep --report`: the paper's cap x batch grid per model at saturation and
  at a fixed Poisson load of twice the batch-1 capacity (the regime the feasibility study (docs/calibration.md §7) found to
  match the paper's 1.7-2.1x batch ratio). Its full report, with the mechanism behind each shape,
  is written beside this one (characterization/characterization.md).
- Fig 2 (here only): the step model's time split (compute, memory, communication, overhead) of a
  batch-64 decode step at TP 1, 2 and 4.
- Fig 3, joint + TP (here only): the saturating cap x batch grid measured again, the same way, at
  every other TP in {1, 2, 4} that fits the node; the best TP's peak over the joint peak.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from pals.experiments.characterization import (
    FIG1A_MODELS,
    LOAD_FACTOR,
    PAPER_BEST_CAP_W,
    PAPER_FRONTIER_RATIO,
    CharacterizationResult,
    CharacterizationSettings,
    characterize,
    fits_node,
    measure_sweep,
    write_report,
)
from pals.experiments.common import GPU, plt, save_figure
from pals.experiments.report import Report
from pals.model.plots import characterization_summary, plot_profile
from pals.sim.hardware import get_gpu
from pals.sim.llm import get_llm
from pals.sim.step import StepModel, StepShape

NODE_TP = 4
"""TP of the Fig 1 / Fig 3 models on the 4-GPU node (as in `pals.experiments.common.MOE_MODELS`)."""


def _settings(quick: bool) -> CharacterizationSettings:
    """The characterization grid: the paper's (full) or a smaller one with short windows (quick)."""
    if quick:
        # Longer saturating windows than `CharacterizationSettings.quick()`'s smoke test: with 5 + 10 s a 150 W point
        # still carries its warm-up transient and looks like Mixtral's best cap.
        return dataclasses.replace(CharacterizationSettings.quick(), power_caps_w=(150.0, 200.0, 250.0, 400.0),
                                   batch_caps=(1, 8, 32, 64), saturation_warmup_s=10.0, saturation_window_s=30.0)
    # The mechanism ablations are `pals sweep --report`'s; they do not enter this report.
    return CharacterizationSettings(ablations=False)


def _breakdown(model: str, tp: int, params=None) -> dict[str, float] | None:
    """Shares of a batch-64 decode step's time at 400 W; None when the model does not fit at `tp`."""
    if not fits_node(model, GPU, tp):
        return None
    step = StepModel(get_llm(model), get_gpu(GPU), tp=tp, ep=1, **({} if params is None else {"params": params}))
    cost = step.cost(StepShape(decode_seqs=64, decode_context_tokens=64 * 1100, prefill_tokens=0, prefill_context_tokens=0), 400.0)
    total = cost.time_s
    return {"compute": cost.compute_s / total, "memory": cost.memory_s / total, "comm": cost.comm_s / total,
            "overhead": cost.overhead_s / total, "time_ms": 1000 * total}


def run(out_dir: Path, quick: bool = False, seed: int = 0, physics: str | Path | None = None) -> dict[str, Any]:
    """Run the characterization; `physics` is a physics file (`pals calibrate`) for the GPU, None the preset's."""
    from pals.sim.physics import load_physics

    start = time.perf_counter()
    params = None if physics is None else load_physics(physics, GPU)
    out_dir = Path(out_dir)
    models = FIG1A_MODELS[:2] if quick else FIG1A_MODELS
    report = Report("characterize", "Characterization: tokens/J vs cap and batch, compute/comm, frontiers (paper Figs 1-3)", out_dir, quick)
    report.intro.append(__doc__.split("\n\n", 1)[1])
    settings = _settings(quick)
    result = characterize(models=models, gpu=GPU, tp=NODE_TP, out_dir=out_dir / "characterization", quick=quick,
                          seed=seed, progress=False, ratio_models=(), settings=settings, params=params,
                          physics_label=f"fitted, from {physics}" if physics is not None else "the GPU preset's")
    full_report = write_report(result, out_dir / "characterization")
    sat_caps = result.models[models[0]].saturation.caps_w
    report.setup = {"node": f"4x {result.gpu} (simulated), TP {NODE_TP}",
                    "grid": f"caps {', '.join(f'{c:g}' for c in sat_caps)} W x batches {', '.join(map(str, settings.batch_caps))}",
                    "load": f"saturating, and Poisson at {LOAD_FACTOR:g}x the batch-1 capacity",
                    "lengths": f"log-normal prompt {result.workload['prompt_tokens']:g} / output "
                               f"{result.workload['output_tokens']:g} tokens",
                    "physics": result.physics}
    rows1, summaries = _fig1_section(report, result, models, full_report.relative_to(out_dir), out_dir)
    _fig2_section(report, models, result.params)
    rows3 = _fig3_section(report, result, models, summaries, settings, seed)
    _why_section(report)
    report.metrics = {"fig1": {r[0]: {"best_cap_b64_w": r[2], "batch_ratio_saturating": r[3], "batch_ratio_fixed_load": r[4]} for r in rows1},
                      "fig3": {r[0]: {"joint_over_batch_only": r[6], "joint_over_batch_only_fixed_load": r[7],
                                     "joint_tp_over_joint": r[8]} for r in rows3}}
    return report.write(time.perf_counter() - start)


def _fig1_section(
    report: Report, result: CharacterizationResult, models: tuple[str, ...], full_report: Path, out_dir: Path
) -> tuple[list[list[Any]], dict[str, dict[str, Any]]]:
    """Fig 1: best cap and batch ratios per model, its figures and the paper comparisons.

    Returns:
        The table's rows and each model's `characterization_summary` (Fig 3 reads its peaks).
    """
    sec1 = report.section("Fig 1: tokens/J against power cap and batch")
    report.paragraph(sec1, f"The paper-vs-ours table with the mechanism behind each shape, the fixed-load curves and "
                           f"the batch ratio figure: [{full_report}]({full_report}).")
    rows1, summaries = [], {}
    for model in models:
        mr = result.models[model]
        sat, fix = mr.saturation, mr.fixed
        summary = characterization_summary(sat.as_profile(result.gpu))
        summaries[model] = summary
        plot_profile(sat.as_profile(result.gpu), out_dir / f"fig1_{model}", title=f"{model}, TP {mr.tp}, saturation")
        top = sat.batches[-1]
        rows1.append([model, mr.tp, sat.best_cap_w(top), sat.ratio(top, 1), fix.ratio(top, 1), summary["best"]["power_cap_w"],
                      summary["best"]["batch_cap"], summary["best"]["tokens_per_joule"]])
        for kind in ("tpj_vs_cap", "tpj_vs_batch"):
            report.image(sec1, f"fig1_{model}_{kind}", f"{model}: {kind.replace('_', ' ')}")
    report.table(sec1, "fig1", ["model", "TP", "best cap at batch 64 (W)", "batch 64/1 tokens/J, saturating",
                                f"batch 64/1 at fixed load {LOAD_FACTOR:g}x batch-1 capacity", "best cap", "best batch",
                                "best tokens/J"], rows1)
    for r in rows1:
        paper_cap = PAPER_BEST_CAP_W[r[0]]
        report.compare(f"{r[0]}: best cap at batch 64", f"{paper_cap:g} W" + (" (still rising)" if paper_cap == 400.0 else ""),
                       f"{r[2]:g} W", "-")
        report.compare(f"{r[0]}: tokens/J batch 64 / batch 1", "1.7-2.1x",
                       f"{r[3]:.1f}x saturating, {r[4]:.2f}x at a fixed load", "differs" if not 1.6 <= r[4] <= 2.3 else "matches at fixed load")
    return rows1, summaries


def _fig2_section(report: Report, models: tuple[str, ...], params=None) -> None:
    """Fig 2: the time split of a batch-64 decode step per model and TP, table and stacked bars."""
    sec2 = report.section("Fig 2: compute / communication split of a batch-64 decode step")
    rows2 = []
    for model in models:
        for tp in (1, 2, 4):
            split = _breakdown(model, tp, params)
            if split is None:
                rows2.append([model, tp, "does not fit", "-", "-", "-", "-"])
            else:
                rows2.append([model, tp, split["compute"], split["memory"], split["comm"], split["overhead"], split["time_ms"]])
    report.table(sec2, "fig2", ["model", "TP", "compute share", "memory share", "communication share", "overhead share", "step ms"], rows2)
    fig, ax = plt().subplots(figsize=(8, 3.5))
    bottoms = None
    fitted = [r for r in rows2 if not isinstance(r[2], str)]
    for k, part in enumerate(("compute", "memory", "communication", "overhead")):
        values = [r[2 + k] for r in fitted]
        ax.bar(range(len(fitted)), values, bottom=bottoms, label=part)
        bottoms = values if bottoms is None else [a + b for a, b in zip(bottoms, values)]
    ax.set_xticks(range(len(fitted)), [f"{r[0].split('-')[0]}\nTP{r[1]}" for r in fitted], fontsize=7)
    ax.set_ylabel("share of step time")
    ax.legend(fontsize=7)
    save_figure(fig, report.figure_path("fig2_breakdown"))
    report.image(sec2, "fig2_breakdown", "Fig 2: time split of a batch-64 decode step (context 1,100) at 400 W")


def _best_tokens_per_joule_by_tp(
    result: CharacterizationResult, model: str, joint_peak: float, settings: CharacterizationSettings, seed: int
) -> dict[int, float]:
    """TP -> peak tokens/J of the saturating grid: the measured TP's joint peak, and the other TPs
    in {1, 2, 4} that fit, measured again the same way (the joint + TP frontier)."""
    mr = result.models[model]
    grid = [(c, b) for c in mr.saturation.caps_w for b in mr.saturation.batches]
    best_tp = {mr.tp: joint_peak}
    for tp_try in (1, 2, 4):
        if tp_try != mr.tp and fits_node(model, result.gpu, tp_try):
            sweep = measure_sweep(model, tp_try, grid, result.profiles_dir, gpu=result.gpu, seed=seed,
                                  warmup_s=settings.saturation_warmup_s, window_s=settings.saturation_window_s,
                                  prompt_tokens=result.workload["prompt_tokens"],
                                  output_tokens=result.workload["output_tokens"], params=result.params)
            best_tp[tp_try] = max(p.tokens_per_joule for p in sweep.points)
    return best_tp


def _fig3_section(
    report: Report,
    result: CharacterizationResult,
    models: tuple[str, ...],
    summaries: dict[str, dict[str, Any]],
    settings: CharacterizationSettings,
    seed: int,
) -> list[list[Any]]:
    """Fig 3: frontier peaks (batch-only, cap-only, joint, joint + TP), their ratios and the checks."""
    sec3 = report.section("Fig 3: frontiers and peak-efficiency ratios")
    rows3 = []
    for model in models:
        mr = result.models[model]
        peaks = summaries[model]
        best_tp = _best_tokens_per_joule_by_tp(result, model, peaks["peak_tpj_joint"], settings, seed)
        joint_tp = max(best_tp.values())
        rows3.append([model, mr.tp, peaks["peak_tpj_batch_only"], peaks["peak_tpj_cap_only"], peaks["peak_tpj_joint"], joint_tp,
                      mr.saturation.frontier_ratio(), mr.fixed.frontier_ratio(), joint_tp / peaks["peak_tpj_joint"],
                      max(best_tp, key=best_tp.get)])
        report.image(sec3, f"fig1_{model}_pareto", f"{model}: batch-only, cap-only and joint Pareto frontiers")
        ratio = mr.saturation.frontier_ratio()
        report.compare(f"{model}: joint / batch-only peak tokens/J", f"{PAPER_FRONTIER_RATIO[model]:.2f}x",
                       f"{ratio:.3f}x", "same direction" if ratio > 1.01 else "differs")
    report.table(sec3, "fig3", ["model", "TP", "peak batch-only", "peak cap-only", "peak joint", "peak joint+TP",
                                "joint / batch-only", "joint / batch-only, fixed load", "joint+TP / joint", "best TP"], rows3)
    for r in rows3:
        report.check(f"{r[0]}: the joint frontier's peak is at least the batch-only and cap-only peaks",
                     r[4] >= max(r[2], r[3]) - 1e-9, f"joint {r[4]:.3f}, batch-only {r[2]:.3f}, cap-only {r[3]:.3f}")
    return rows3


def _why_section(report: Report) -> None:
    why = report.section("Why ours differ from the paper")
    report.why(why, (
        "At saturation the simulator's batch effect is 9-30x, not 1.7-2.1x: batch-1 decode reads all weights for one "
        "token and the per-step CPU overhead is small (docs/calibration.md §7, S3a cannot be met). The paper's band "
        "is reproduced only at a fixed moderate offered load, and there by construction: batch 1 serves its capacity "
        "while every larger batch serves the whole load, twice that, so batches 32 and 64 tie. The joint frontier's "
        "gain over batch-only is small because the tokens/J-optimal cap of a saturated node is close to the cap at "
        "which a batch-64 step stops drawing more power: MoE decode draws 160-250 W per GPU, so the caps above that "
        "change nothing, and the node's 345 W baseline moves the optimum up. Communication stays a minority of step "
        "time (at most ~30 % at TP 4 with the sourced all-reduce costs), so TP 4 does not become communication-bound "
        "as in the paper's Fig 2; the share still grows with TP, faster for the small-expert models."
    ))
