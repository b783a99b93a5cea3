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

The saturating grids behind the effects compared with the paper (best cap, batch ratio, frontier and
TP gains) are measured on `SEEDS` request streams (the quick mode shrinks the grid, not the seeds);
those figures are means over seeds with 95 % intervals, their verdicts come from the one rule
(`pals.experiments.verdict`), and every sentence of the "why" paragraph is chosen from the numbers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pals.core.power import PAPER_BETA_W
from pals.experiments.characterization import (
    FIG1A_MODELS,
    LOAD_FACTOR,
    PAPER_BATCH_RATIO,
    PAPER_FIG2_BOUND,
    PAPER_FRONTIER_RATIO,
    PAPER_TP_FRONTIER_GAIN,
    CharacterizationResult,
    CharacterizationSettings,
    Sweep,
    characterize,
    fits_node,
    measure_sweep,
    paper_best_cap_w,
    write_report,
)
from pals.experiments.common import GPU, plt, save_figure
from pals.experiments.report import Report
from pals.experiments.stats import Estimate, ratio_ci
from pals.experiments.verdict import ratio_verdict
from pals.model.plots import characterization_summary, plot_profile
from pals.sim.hardware import get_gpu
from pals.sim.llm import get_llm
from pals.sim.step import StepModel, StepShape

NODE_TP = 4
"""TP of the Fig 1 / Fig 3 models on the 4-GPU node (as in `pals.experiments.common.MOE_MODELS`)."""
SEEDS = 5
"""Request streams of the saturating grids (the first is the characterization's own seed)."""
TIE_FRACTION = 0.02
"""Two tokens/J figures "tie" when they differ by less than this fraction."""

SeedSweeps = dict[str, dict[int, list[Sweep]]]
"""Model -> TP -> its saturating cap x batch sweep per seed (seed order; the model's own TP first measured
by the characterization)."""


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
    """Run the characterization; `physics` is a physics file (`pals calibrate`) for the GPU, None the one in force
    (`pals experiment --physics`: `pals.experiments.lab_physics`), else the preset's."""
    from pals.experiments.lab_physics import physics_label, scoped_physics
    from pals.sim.physics import load_physics

    start = time.perf_counter()
    params = scoped_physics(GPU) if physics is None else load_physics(physics, GPU)
    label = physics_label() if physics is None else f"fitted, from {physics}"
    out_dir = Path(out_dir)
    models = FIG1A_MODELS[:2] if quick else FIG1A_MODELS
    report = Report("characterize", "Characterization: tokens/J vs cap and batch, compute/comm, frontiers (paper Figs 1-3)", out_dir, quick)
    report.intro.append(__doc__.split("\n\n", 1)[1])
    settings = _settings(quick)
    result = characterize(models=models, gpu=GPU, tp=NODE_TP, out_dir=out_dir / "characterization", quick=quick,
                          seed=seed, progress=False, ratio_models=(), settings=settings, params=params,
                          physics_label=label)
    full_report = write_report(result, out_dir / "characterization")
    seeds = [seed + k for k in range(SEEDS)]
    sweeps = _saturating_sweeps(result, models, settings, seeds)
    sat_caps = result.models[models[0]].saturation.caps_w
    report.setup = {"node": f"4x {result.gpu} (simulated), TP {NODE_TP}",
                    "grid": f"caps {', '.join(f'{c:g}' for c in sat_caps)} W x batches {', '.join(map(str, settings.batch_caps))}",
                    "load": f"saturating, and Poisson at {LOAD_FACTOR:g}x the batch-1 capacity",
                    "lengths": f"log-normal prompt {result.workload['prompt_tokens']:g} / output "
                               f"{result.workload['output_tokens']:g} tokens",
                    "seeds": f"{len(seeds)} request streams ({seeds[0]}-{seeds[-1]}) for the saturating grids, the "
                             "first for the fixed load",
                    "physics": result.physics}
    est = {m: seed_estimates(sweeps, m, result.models[m].tp) for m in models}
    summaries = _fig1_section(report, result, models, sweeps, est, full_report.relative_to(out_dir), out_dir)
    rows2 = _fig2_section(report, models, result.params)
    _fig3_section(report, result, models, summaries, sweeps, est)
    _why_section(report, result, models, sweeps, rows2, est)
    report.metrics = {"fig1": {m: {"best_cap_b64_w_per_seed": [sw.best_cap_w() for sw in sweeps[m][result.models[m].tp]],
                                   "batch_ratio_saturating": est[m]["batch ratio saturating"]._asdict(),
                                   "batch_ratio_fixed_load": _fixed_ratio(result, m)} for m in models},
                      "fig3": {m: {"joint_over_batch_only": est[m]["joint/batch-only"]._asdict(),
                                   "joint_over_batch_only_fixed_load": result.models[m].fixed.frontier_ratio(),
                                   "joint_tp_over_joint": est[m]["joint+TP/joint"]._asdict()} for m in models},
                      "seeds": len(seeds)}
    return report.write(time.perf_counter() - start)


def _saturating_sweeps(result: CharacterizationResult, models: tuple[str, ...], settings: CharacterizationSettings,
                       seeds: list[int]) -> SeedSweeps:
    """Every model's saturating cap x batch grid per seed at each TP in {1, 2, 4} that fits the node: the
    characterization's own sweep for its TP and first seed, the others measured the same way."""
    out: SeedSweeps = {}
    for model in models:
        mr = result.models[model]
        grid = [(c, b) for c in mr.saturation.caps_w for b in mr.saturation.batches]
        out[model] = {}
        for tp in (1, 2, 4):
            if tp != mr.tp and not fits_node(model, result.gpu, tp):
                continue
            out[model][tp] = [
                mr.saturation if tp == mr.tp and s == seeds[0] else
                measure_sweep(model, tp, grid, result.profiles_dir / f"seed{s}", gpu=result.gpu, seed=s,
                              warmup_s=settings.saturation_warmup_s, window_s=settings.saturation_window_s,
                              prompt_tokens=result.workload["prompt_tokens"],
                              output_tokens=result.workload["output_tokens"], params=result.params)
                for s in seeds]
    return out


def _peak(sweep: Sweep) -> float:
    return max(p.tokens_per_joule for p in sweep.points)


def seed_estimates(sweeps: SeedSweeps, model: str, tp: int) -> dict[str, Estimate]:
    """Over seeds: joint / batch-only peak, joint + TP / joint peak, and batch top / batch 1 at the largest cap."""
    own = sweeps[model][tp]
    tp_gain = [max(_peak(by_seed[k]) for by_seed in sweeps[model].values()) / _peak(own[k]) for k in range(len(own))]
    return {"joint/batch-only": ratio_ci([sw.frontier_ratio() for sw in own]),
            "joint+TP/joint": ratio_ci(tp_gain),
            "batch ratio saturating": ratio_ci([sw.ratio(sw.batches[-1], 1) for sw in own])}


def _fixed_ratio(result: CharacterizationResult, model: str) -> float:
    fix = result.models[model].fixed
    return fix.ratio(fix.batches[-1], 1)


def _seed_count(values: list) -> str:
    """"250 W on 4 of 5 seeds, 200 W on 1" style (most frequent first)."""
    counts = Counter(values).most_common()
    first = f"{counts[0][0]:g} W on {counts[0][1]} of {len(values)} seeds"
    return ", ".join([first] + [f"{v:g} W on {n}" for v, n in counts[1:]])


def _fig1_section(report: Report, result: CharacterizationResult, models: tuple[str, ...], sweeps: SeedSweeps,
                  est: dict[str, dict[str, Estimate]], full_report: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Fig 1: best cap and batch ratios per model, its figures and the paper comparisons.

    Returns:
        Each model's `characterization_summary` of the first seed (Fig 3 reads its peaks).
    """
    sec1 = report.section("Fig 1: tokens/J against power cap and batch")
    report.paragraph(sec1, f"The paper-vs-ours table with the mechanism behind each shape, the fixed-load curves and "
                           f"the batch ratio figure (first seed): [{full_report}]({full_report}).")
    rows1, summaries = [], {}
    lo, hi = PAPER_BATCH_RATIO
    for model in models:
        mr = result.models[model]
        sat = mr.saturation
        summary = characterization_summary(sat.as_profile(result.gpu))
        summaries[model] = summary
        plot_profile(sat.as_profile(result.gpu), out_dir / f"fig1_{model}", title=f"{model}, TP {mr.tp}, saturation")
        bests = [sw.best_cap_w() for sw in sweeps[model][mr.tp]]
        ratio, fixed = est[model]["batch ratio saturating"], _fixed_ratio(result, model)
        rows1.append([model, mr.tp, _seed_count(bests), ratio.describe("{:.1f}", "x"), fixed,
                      summary["best"]["power_cap_w"], summary["best"]["batch_cap"], summary["best"]["tokens_per_joule"]])
        for kind in ("tpj_vs_cap", "tpj_vs_batch"):
            report.image(sec1, f"fig1_{model}_{kind}", f"{model}: {kind.replace('_', ' ')}")
        paper_cap = paper_best_cap_w(model, sat.caps_w[-1])
        agree = sum(1 for b in bests if b == paper_cap)
        report.compare(f"{model}: best cap at batch {sat.batches[-1]}",
                       f"{paper_cap:g} W" + (" (still rising)" if paper_cap == sat.caps_w[-1] else ""), _seed_count(bests),
                       "matches" if agree == len(bests) else "differs" if agree == 0 else
                       f"matches on {agree} of {len(bests)} seeds")
        sat_in, fix_in = lo <= ratio.low and ratio.high <= hi, lo <= fixed <= hi
        report.compare(f"{model}: tokens/J batch {sat.batches[-1]} / batch 1", f"{lo:g}-{hi:g}x",
                       f"{ratio.describe('{:.1f}', 'x')} saturating, {fixed:.2f}x at a fixed load (first seed)",
                       "matches at both loads" if sat_in and fix_in else
                       "matches at the fixed load only" if fix_in else
                       "matches at saturation only" if sat_in else "differs")
    report.table(sec1, "fig1", ["model", "TP", "best cap at the largest batch (seeds)",
                                "largest batch / batch 1 tokens/J, saturating (seeds)",
                                f"largest batch / batch 1 at fixed load {LOAD_FACTOR:g}x batch-1 capacity (first seed)",
                                "best cap", "best batch", "best tokens/J"], rows1)
    return summaries


SHARES = ("compute", "memory", "communication", "overhead")
"""The parts of a decode step's time in the Fig 2 table (in its column order)."""


def _fig2_section(report: Report, models: tuple[str, ...], params=None) -> list[list[Any]]:
    """Fig 2: the time split of a batch-64 decode step per model and TP, table, stacked bars and the paper's
    "bound" per model (the largest share at the largest TP that fits). Returns the table's rows."""
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
    for k, part in enumerate(SHARES):
        values = [r[2 + k] for r in fitted]
        ax.bar(range(len(fitted)), values, bottom=bottoms, label=part)
        bottoms = values if bottoms is None else [a + b for a, b in zip(bottoms, values)]
    ax.set_xticks(range(len(fitted)), [f"{r[0].split('-')[0]}\nTP{r[1]}" for r in fitted], fontsize=7)
    ax.set_ylabel("share of step time (fraction)")
    ax.set_title("Fig 2: time split of a batch-64 decode step (context 1,100) at 400 W")
    ax.legend(fontsize=7)
    save_figure(fig, report.figure_path("fig2_breakdown"))
    report.image(sec2, "fig2_breakdown", "Fig 2: time split of a batch-64 decode step (context 1,100) at 400 W")
    for model in models:
        top = [r for r in fitted if r[0] == model][-1]
        bound = _largest_share(top)
        paper = PAPER_FIG2_BOUND.get(model)
        report.compare(f"{model}: largest share of a batch-64 decode step at TP {top[1]}",
                       f"{paper}-bound" if paper else "not given", f"{bound} ({top[2 + SHARES.index(bound)]:.0%})",
                       "not comparable" if paper is None else "matches" if bound == paper else "differs")
    return rows2


def _largest_share(row: list[Any]) -> str:
    return max(SHARES, key=lambda part: row[2 + SHARES.index(part)])


def _fig3_section(report: Report, result: CharacterizationResult, models: tuple[str, ...],
                  summaries: dict[str, dict[str, Any]], sweeps: SeedSweeps, est: dict[str, dict[str, Estimate]]) -> None:
    """Fig 3: frontier peaks (batch-only, cap-only, joint, joint + TP), their ratios over seeds and the checks."""
    sec3 = report.section("Fig 3: frontiers and peak-efficiency ratios")
    rows3 = []
    for model in models:
        mr = result.models[model]
        peaks = summaries[model]
        own = sweeps[model][mr.tp]
        best_tp = Counter(max(sweeps[model], key=lambda tp: _peak(sweeps[model][tp][k])) for k in range(len(own)))
        joint, tp_gain = est[model]["joint/batch-only"], est[model]["joint+TP/joint"]
        rows3.append([model, mr.tp, peaks["peak_tpj_batch_only"], peaks["peak_tpj_cap_only"], peaks["peak_tpj_joint"],
                      joint.describe("{:.3f}", "x"), mr.fixed.frontier_ratio(), tp_gain.describe("{:.3f}", "x"),
                      ", ".join(f"TP {tp} on {n}" for tp, n in best_tp.most_common())])
        report.image(sec3, f"fig1_{model}_pareto", f"{model}: batch-only, cap-only and joint Pareto frontiers")
        report.compare(f"{model}: joint / batch-only peak tokens/J", f"{PAPER_FRONTIER_RATIO[model]:.2f}x",
                       joint.describe("{:.3f}", "x"), str(ratio_verdict(joint, PAPER_FRONTIER_RATIO[model])))
        paper_tp = PAPER_TP_FRONTIER_GAIN.get(model)
        report.compare(f"{model}: joint + TP / joint peak tokens/J", "not given" if paper_tp is None else f"{paper_tp:.2f}x",
                       tp_gain.describe("{:.3f}", "x"), str(ratio_verdict(tp_gain, paper_tp)))
    report.table(sec3, "fig3", ["model", "TP", "peak batch-only (first seed)", "peak cap-only (first seed)",
                                "peak joint (first seed)", "joint / batch-only (seeds)",
                                "joint / batch-only, fixed load (first seed)", "joint+TP / joint (seeds)", "best TP (seeds)"],
                 rows3)
    for r in rows3:
        report.check(f"{r[0]}: the joint frontier's peak is at least the batch-only and cap-only peaks",
                     r[4] >= max(r[2], r[3]) - 1e-9, f"joint {r[4]:.3f}, batch-only {r[2]:.3f}, cap-only {r[3]:.3f}")
    report.check("re-choosing TP never lowers the joint peak (the deployment's TP is among the choices)",
                 all(e["joint+TP/joint"].mean >= 1.0 - 1e-9 for e in est.values()),
                 ", ".join(f"{m} {e['joint+TP/joint'].describe('{:.3f}', 'x')}" for m, e in est.items()))


def _why_section(report: Report, result: CharacterizationResult, models: tuple[str, ...], sweeps: SeedSweeps,
                 rows2: list[list[Any]], est: dict[str, dict[str, Estimate]]) -> None:
    """Why ours differ, every sentence chosen from the measured numbers."""
    why = report.section("Why ours differ from the paper")
    report.why(why, " ".join([_batch_words(result, models, rows2, est), _frontier_words(result, models, est),
                              _communication_words(models, rows2)]))


def _batch_words(result: CharacterizationResult, models: tuple[str, ...], rows2: list[list[Any]],
                 est: dict[str, dict[str, Estimate]]) -> str:
    """The batch ratio at both loads and what sets it."""
    lo, hi = PAPER_BATCH_RATIO
    sat_r = [est[m]["batch ratio saturating"].mean for m in models]
    top = result.models[models[0]].saturation.batches[-1]
    memory = [r[3] for r in rows2 if not isinstance(r[2], str)]
    inside = all(lo <= r <= hi for r in sat_r)
    text = (f"At saturation batch {top} / batch 1 tokens/J is {min(sat_r):.1f}-{max(sat_r):.1f}x, "
            f"{'inside' if inside else 'outside'} the paper's {lo:g}-{hi:g}x: a batch-64 decode step spends "
            f"{min(memory):.0%}-{max(memory):.0%} of its time on memory (Fig 2), and reads the weights once for "
            "every sequence of the batch. ")
    served, power, fixed, ties = [], [], [], []
    for m in models:
        fix = result.models[m].fixed
        cap = fix.caps_w[-1]
        served.append(fix.get(cap, top).throughput_tps / fix.get(cap, 1).throughput_tps)
        power.append(fix.get(cap, 1).node_power_w / fix.get(cap, top).node_power_w)
        fixed.append(_fixed_ratio(result, m))
        if 32 in fix.batches:
            ties.append(abs(fix.ratio(top, 32) - 1))
    text += (f"At the fixed load ({LOAD_FACTOR:g}x the batch-1 capacity, first seed) batch {top} serves "
             f"{_span(served, '{:.2f}')}x batch 1's tokens (the load offers {LOAD_FACTOR:g}x batch 1's capacity) at "
             f"{_span(power, '{:.2f}')}x its node power, so the ratio there ({_span(fixed, '{:.2f}')}x) is bounded by "
             "the load we chose, not set by the models"
             + ("" if not ties else f"; batches 32 and {top} " + (
                 f"tie there (within {TIE_FRACTION:.0%})" if max(ties) < TIE_FRACTION else
                 f"differ there by up to {max(ties):.1%}")) + ".")
    return text


def _span(values: list[float], fmt: str) -> str:
    """"1.52-1.69" or one number when the values agree to the format."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def _frontier_words(result: CharacterizationResult, models: tuple[str, ...], est: dict[str, dict[str, Estimate]]) -> str:
    """The joint frontier's gain over batch-only against the paper's, and the cap draw that bounds it."""
    parts = []
    for m in models:
        joint = est[m]["joint/batch-only"]
        parts.append(f"{m} {joint.describe('{:.3f}', 'x')} ({ratio_verdict(joint, PAPER_FRONTIER_RATIO[m]).label} "
                     f"against the paper's {PAPER_FRONTIER_RATIO[m]:.2f}x)")
    sats = {m: result.models[m].saturation for m in models}
    draws = [result.models[m].natural_draw_w for m in models]
    max_cap = max(sw.caps_w[-1] for sw in sats.values())
    top = sats[models[0]].batches[-1]
    text = (f"Joint over batch-only peak tokens/J: {'; '.join(parts)}. Saturated at batch {top}, the GPUs draw "
            f"{min(draws):.0f}-{max(draws):.0f} W each with the largest cap ({max_cap:g} W)")
    text += (", so caps above that draw change nothing" if max(draws) < max_cap else ", as much as the cap allows")
    best = {m: sw.best_cap_w() for m, sw in sats.items()}
    moved = [m for m, sw in sats.items() if sw.best_cap_w(gpu_only=True) < best[m]]
    text += ("; the best cap (first seed) is " + ", ".join(f"{m} {c:g} W" for m, c in best.items()) + ", and "
             + (f"without the node's {PAPER_BETA_W:g} W baseline tokens/J would peak at a lower cap for {', '.join(moved)}"
                if moved else f"the node's {PAPER_BETA_W:g} W baseline does not move it") + ".")
    return text


def _communication_words(models: tuple[str, ...], rows2: list[list[Any]]) -> str:
    """Fig 2 in words: the largest communication share, the bound per model and how the share grows with TP."""
    fitted = [r for r in rows2 if not isinstance(r[2], str)]
    most = max(fitted, key=lambda r: r[4])
    slopes = {}
    for m in models:
        rows = [r for r in fitted if r[0] == m]
        if len(rows) > 1:
            slopes[m] = (rows[-1][4] - rows[0][4]) / math.log2(rows[-1][1] / rows[0][1])
    bounds = ", ".join(f"{_largest_share([r for r in fitted if r[0] == m][-1])} for {m}" for m in models)
    text = (f"Communication takes at most {most[4]:.0%} of a batch-64 decode step ({most[0]}, TP {most[1]}); at each "
            f"model's largest TP the largest share is {bounds}.")
    if slopes:
        growing = [m for m, s in slopes.items() if s > 0]
        fastest = max(slopes, key=slopes.get)
        text += (f" The communication share grows with TP for {len(growing)} of {len(slopes)} models, fastest for "
                 f"{fastest} ({slopes[fastest]:+.0%} of the step per doubling of TP).")
    return text
