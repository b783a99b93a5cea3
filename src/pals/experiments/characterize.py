"""characterize (paper Figs 1-3): tokens/J against cap and batch, compute/communication split, frontiers.

- Fig 1: from each model's offline profile (paper grid, saturating load) drawn with H3's
  `pals.model.plots` (tokens/J vs cap, vs batch, Pareto frontiers), plus the batch-64/batch-1
  ratio at a fixed moderate Poisson load (about 2x the batch-1 capacity, the regime the
  feasibility note found to match the paper's 1.7-2.1x).
- Fig 2: the step model's time split (compute, memory, communication, overhead) of a batch-64
  decode step at TP 1, 2 and 4.
- Fig 3: peak tokens/J of the batch-only (cap 400 W), cap-only (batch 64), joint (cap x batch) and
  joint + TP (cap x batch x TP in {1, 2, 4}) frontiers, and their ratios.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pals.errors import ConfigError
from pals.experiments.common import ALL_MODELS, GPU, Lab, plt, save_figure
from pals.experiments.report import Report

TRIO = ("Mixtral-8x7B", "Qwen1.5-MoE-A2.7B", "OLMoE-1B-7B")
PAPER_JOINT_OVER_SW = {"Mixtral-8x7B": 1.18, "Qwen1.5-MoE-A2.7B": 1.13, "OLMoE-1B-7B": 1.14}
PAPER_BEST_CAP = {"Mixtral-8x7B": "400 W (still rising)", "Qwen1.5-MoE-A2.7B": "200 W", "OLMoE-1B-7B": "200 W"}


def _breakdown(model: str, tp: int) -> dict[str, float] | None:
    from pals.sim.hardware import get_gpu
    from pals.sim.llm import get_llm
    from pals.sim.step import StepModel, StepShape

    try:
        step = StepModel(get_llm(model), get_gpu(GPU), tp=tp, ep=1)
        if step.kv_cache_tokens() < 1:
            return None
    except ConfigError:
        return None
    cost = step.cost(StepShape(decode_seqs=64, decode_context_tokens=64 * 1100, prefill_tokens=0, prefill_context_tokens=0), 400.0)
    total = cost.time_s
    return {"compute": cost.compute_s / total, "memory": cost.memory_s / total, "comm": cost.comm_s / total,
            "overhead": cost.overhead_s / total, "time_ms": 1000 * total}


def _peak(lab: Lab, model: str, tp: int, caps, batches) -> float:
    return max(lab.measure(model, tp, c, b).tokens_per_joule for c in caps for b in batches)


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    from pals.model.plots import characterization_summary, plot_profile

    start = time.perf_counter()
    lab = Lab(seed=seed, quick=quick, work_dir=Path(out_dir) / "profiles")
    models = TRIO[:2] if quick else TRIO
    report = Report("characterize", "Characterization: tokens/J vs cap and batch, compute/comm, frontiers (paper Figs 1-3)", out_dir, quick)
    report.intro.append(__doc__.split("\n\n", 1)[1])
    report.setup = {"node": "4x A100-SXM4-80GB (simulated)", "grid": "caps 150-400 W step 50, batches 1-64",
                    "load": "saturating (profiles), Poisson for the batch ratio"}
    sec1 = report.section("Fig 1: tokens/J against power cap and batch")
    rows1, summaries = [], {}
    for model in models:
        tp = ALL_MODELS[model]
        profile = lab.profile(model, tp)
        summary = characterization_summary(profile)
        summaries[model] = summary
        plot_profile(profile, Path(out_dir) / f"fig1_{model}")
        b1 = lab.measure(model, tp, 400.0, 1).throughput_tps
        moderate = 2.0 * b1
        e64 = lab.measure(model, tp, 400.0, 64, lab.workload(moderate, seed + 3), window_s=120).tokens_per_joule
        e1 = lab.measure(model, tp, 400.0, 1, lab.workload(moderate, seed + 3), window_s=120).tokens_per_joule
        # Best cap at batch 64 from the noise-free node (the profile's windows are short and noisy).
        caps_b64 = {c: lab.measure(model, tp, c, 64).tokens_per_joule for c in (150.0, 200.0, 250.0, 300.0, 350.0, 400.0)}
        best_cap_b64 = max(caps_b64, key=caps_b64.get)
        rows1.append([model, tp, best_cap_b64, summary["batch_gain_at_max_cap"], e64 / e1, summary["best"]["power_cap_w"],
                      summary["best"]["batch_cap"], summary["best"]["tokens_per_joule"]])
        for kind in ("tpj_vs_cap", "tpj_vs_batch"):
            report.image(sec1, f"fig1_{model}_{kind}", f"{model}: {kind.replace('_', ' ')}")
    report.table(sec1, "fig1", ["model", "TP", "best cap at batch 64 (W)", "batch 64/1 tokens/J, saturating",
                                "batch 64/1 at fixed load 2x batch-1 capacity", "best cap", "best batch", "best tokens/J"], rows1)
    for r in rows1:
        report.compare(f"{r[0]}: best cap at batch 64", PAPER_BEST_CAP[r[0]], f"{r[2]:g} W", "-")
        report.compare(f"{r[0]}: tokens/J batch 64 / batch 1", "1.7-2.1x",
                       f"{r[3]:.1f}x saturating, {r[4]:.2f}x at a fixed load", "differs" if not 1.6 <= r[4] <= 2.3 else "matches at fixed load")

    sec2 = report.section("Fig 2: compute / communication split of a batch-64 decode step")
    rows2 = []
    for model in models:
        for tp in (1, 2, 4):
            split = _breakdown(model, tp)
            if split is None:
                rows2.append([model, tp, "does not fit", "-", "-", "-", "-"])
            else:
                rows2.append([model, tp, split["compute"], split["memory"], split["comm"], split["overhead"], split["time_ms"]])
    report.table(sec2, "fig2", ["model", "TP", "compute share", "memory share", "communication share", "overhead share", "step ms"], rows2)
    fig, ax = plt().subplots(figsize=(8, 3.5))
    labels, bottoms = [], None
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

    sec3 = report.section("Fig 3: frontiers and peak-efficiency ratios")
    rows3 = []
    caps = (150.0, 250.0, 400.0) if quick else (150.0, 200.0, 250.0, 300.0, 350.0, 400.0)
    batches = (8, 32, 64) if quick else (1, 4, 8, 16, 32, 64)
    for model in models:
        tp = ALL_MODELS[model]
        s = summaries[model]
        best_tp = {}
        for tp_try in (1, 2, 4):
            if _breakdown(model, tp_try) is None:
                continue
            best_tp[tp_try] = _peak(lab, model, tp_try, caps, batches)
        joint_tp = max(best_tp.values())
        joint_fixed = best_tp.get(tp, s["peak_tpj_joint"])
        rows3.append([model, tp, s["peak_tpj_batch_only"], s["peak_tpj_cap_only"], s["peak_tpj_joint"], joint_tp,
                      s["joint_over_batch_only"], joint_tp / joint_fixed, max(best_tp, key=best_tp.get)])
        report.image(sec3, f"fig1_{model}_pareto", f"{model}: batch-only, cap-only and joint Pareto frontiers")
        report.compare(f"{model}: joint / batch-only peak tokens/J", f"{PAPER_JOINT_OVER_SW[model]:.2f}x",
                       f"{s['joint_over_batch_only']:.3f}x", "same direction" if s["joint_over_batch_only"] > 1.01 else "differs")
    report.table(sec3, "fig3", ["model", "TP", "peak batch-only", "peak cap-only", "peak joint", "peak joint+TP",
                                "joint / batch-only", "joint+TP / joint", "best TP"], rows3)
    for r in rows3:
        report.check(f"{r[0]}: the joint frontier's peak is at least the batch-only and cap-only peaks",
                     r[4] >= max(r[2], r[3]) - 1e-9, f"joint {r[4]:.3f}, batch-only {r[2]:.3f}, cap-only {r[3]:.3f}")
    why = report.section("Why ours differ from the paper")
    report.why(why, (
        "At saturation the simulator's batch effect is 9-30x, not 1.7-2.1x: batch-1 decode reads all weights for one "
        "token and the per-step CPU overhead is small (simulator-feasibility.md, S3a cannot be met). The paper's band "
        "is reproduced only at a fixed moderate offered load, where batches 32 and 64 then tie. The joint frontier's "
        "gain over batch-only is small because the tokens/J-optimal cap of a saturated node is close to the cap at "
        "which a batch-64 step stops drawing more power: MoE decode draws 160-250 W per GPU, so the caps above that "
        "change nothing, and the node's 345 W baseline moves the optimum up. Communication stays a minority of step "
        "time (at most ~30 % at TP 4 with the sourced all-reduce costs), so TP 4 does not become communication-bound "
        "as in the paper's Fig 2; the share still grows with TP, faster for the small-expert models."
    ))
    report.metrics = {"fig1": {r[0]: {"best_cap_b64_w": r[2], "batch_ratio_saturating": r[3], "batch_ratio_fixed_load": r[4]} for r in rows1},
                      "fig3": {r[0]: {"joint_over_batch_only": r[6], "joint_tp_over_joint": r[7]} for r in rows3}}
    return report.write(time.perf_counter() - start)
