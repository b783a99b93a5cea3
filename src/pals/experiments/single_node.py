"""single-node (paper Fig 7): five policies on one 4x A100 node, eight models, normalized tokens/J.

Per model: Poisson load at `LOAD_FRACTION` of the Baseline's capacity (400 W, batch 64, saturating),
throughput target `TARGET_FRACTION` of that offered load. Each policy runs on a fresh, warm node
with the same request sequence; model-guided policies use a predictor fitted on a profile taken
under that load (as the paper profiles under its Poisson workload); the Oracle uses the
simulator's ground truth on the same grid. No power budget.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pals.experiments.common import ALL_MODELS, MOE_MODELS, Lab, geomean, plt, save_figure
from pals.experiments.report import Report, Section

POLICIES = ("baseline", "adaptive-cap", "adaptive-batch", "pals", "oracle")
LOAD_FRACTION = 0.5
TARGET_FRACTION = 0.95
QUICK_MODELS = ("Mixtral-8x7B", "Llama-2-7B")
NOISE_PCT = 2.0
"""Run-to-run noise on tokens/J we allow in the 'at least as good' checks (measured: see report)."""


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    lab = Lab(seed=seed, quick=quick, work_dir=Path(out_dir) / "profiles")
    models = {m: ALL_MODELS[m] for m in QUICK_MODELS} if quick else dict(ALL_MODELS)
    duration_s = 90.0 if quick else 300.0
    report = Report("single-node", "Single node: Baseline, AdaptiveCap, AdaptiveBatch, PALS, Oracle (paper Fig 7)", out_dir, quick)
    report.setup = {
        "node": "4x A100-SXM4-80GB (simulated)",
        "load": f"Poisson at {LOAD_FRACTION:.0%} of each model's Baseline capacity",
        "target": f"{TARGET_FRACTION:.0%} of the offered load",
        "duration per run": f"{duration_s:.0f} s simulated after a 30 s warm-up",
        "control interval": "0.5 s",
        "seed": seed,
    }
    rows, norm, violations = _run_policies(lab, models, duration_s)
    first = next(iter(models))
    noise_pct = _rerun_noise_pct(lab, first, models[first], duration_s, norm["pals"][first])
    tolerance_pct = max(NOISE_PCT, noise_pct)

    mean = {p: geomean(list(norm[p].values())) for p in POLICIES}
    mean_viol = {p: sum(violations[p].values()) / len(violations[p]) for p in POLICIES}
    pals_vs_oracle = mean["pals"] / mean["oracle"]
    headroom = (mean["pals"] - 1) / (mean["oracle"] - 1) if mean["oracle"] > 1 else float("nan")

    averages = _result_sections(report, list(models), rows, norm, mean, mean_viol)
    report.paragraph(averages, f"Run-to-run noise (PALS/Baseline ratio on {first}, second request sequence): "
                               f"{noise_pct:.1f} %; 'at least as good' checks allow {tolerance_pct:.1f} %.")
    _compare_and_check(report, mean, mean_viol, pals_vs_oracle, headroom, tolerance_pct)
    _why_section(report, mean)
    report.metrics = {
        "normalized_tokens_per_joule": mean,
        "mean_qos_violation_pct": mean_viol,
        "pals_share_of_oracle": pals_vs_oracle,
        "pals_share_of_oracle_headroom": headroom,
        "run_to_run_noise_pct": noise_pct,
        "per_model": {p: norm[p] for p in POLICIES},
    }
    return report.write(time.perf_counter() - start)


def _run_policies(
    lab: Lab, models: dict[str, int], duration_s: float
) -> tuple[list[list[Any]], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Every policy on every model at the same load and target.

    Returns:
        The per-model table rows, tokens/J over the Baseline's and QoS violations (%), both policy -> model -> value.
    """
    rows, norm = [], {p: {} for p in POLICIES}
    violations = {p: {} for p in POLICIES}
    for model, tp in models.items():
        capacity = lab.measure(model, tp, 400.0, 64)
        load_tps = LOAD_FRACTION * capacity.throughput_tps
        target_tps = TARGET_FRACTION * load_tps
        results = {p: lab.run(model, tp, p, load_tps, duration_s, target_tps=target_tps) for p in POLICIES}
        base = results["baseline"].summary["tokens_per_joule"]
        for p, r in results.items():
            s = r.summary
            norm[p][model] = s["tokens_per_joule"] / base
            violations[p][model] = s["qos_violation_pct"]
            last = r.records[-1]["decision"]["config"]
            rows.append([model, "MoE" if model in MOE_MODELS else "dense", p, s["tokens_per_joule"], norm[p][model],
                         s["throughput_tps"], s["qos_violation_pct"], s["mean_power_w"], s["config_changes"],
                         f"{last['power_cap_w']:g} W / {last['batch_cap']}"])
    return rows, norm, violations


def _rerun_noise_pct(lab: Lab, model: str, tp: int, duration_s: float, pals_norm: float) -> float:
    """Run-to-run noise: PALS and Baseline on `model` again with another request sequence; how far
    the PALS/Baseline tokens/J ratio moves (%)."""
    cap0 = lab.measure(model, tp, 400.0, 64).throughput_tps * LOAD_FRACTION
    rerun = {p: lab.run(model, tp, p, cap0, duration_s, target_tps=TARGET_FRACTION * cap0, seed_offset=1000)
             for p in ("baseline", "pals")}
    return abs(rerun["pals"].summary["tokens_per_joule"] / rerun["baseline"].summary["tokens_per_joule"]
               - pals_norm) * 100.0


def _result_sections(
    report: Report,
    names: list[str],
    rows: list[list[Any]],
    norm: dict[str, dict[str, float]],
    mean: dict[str, float],
    mean_viol: dict[str, float],
) -> Section:
    """The per-model table and Fig 7, then the averages table; returns the averages' section."""
    sec = report.section("Normalized tokens/J per model")
    report.table(sec, "per_model", ["model", "type", "policy", "tokens/J", "vs baseline", "throughput tok/s",
                                    "QoS violations %", "mean node W", "config changes", "final cap / batch"], rows,
                 "One closed-loop run per model and policy")
    fig, ax = plt().subplots(figsize=(9, 4))
    width = 0.16
    for i, p in enumerate(POLICIES):
        ax.bar([k + (i - 2) * width for k in range(len(names))], [norm[p][m] for m in names], width, label=p)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(names)), [n.replace("-", "-\n", 1) for n in names], fontsize=7)
    ax.set_ylabel("tokens/J / Baseline")
    ax.legend(fontsize=7, ncol=5)
    save_figure(fig, report.figure_path("fig7_normalized_tpj"))
    report.image(sec, "fig7_normalized_tpj", "Fig 7: tokens/J normalized to Baseline (400 W, batch 64)")
    sec2 = report.section("Averages")
    report.table(sec2, "averages", ["policy", "geomean tokens/J vs baseline", "mean QoS violations %"],
                 [[p, mean[p], mean_viol[p]] for p in POLICIES])
    return sec2


def _compare_and_check(
    report: Report,
    mean: dict[str, float],
    mean_viol: dict[str, float],
    pals_vs_oracle: float,
    headroom: float,
    tolerance_pct: float,
) -> None:
    """The paper's Fig 7 numbers beside ours, and the claims PALS must show."""
    report.compare("PALS tokens/J vs Baseline (mean of models)", "1.26x", f"{mean['pals']:.2f}x",
                   "same direction" if mean["pals"] > 1.02 else "differs")
    report.compare("batch-only (AdaptiveBatch) vs Baseline", "1.14x", f"{mean['adaptive-batch']:.2f}x",
                   "same direction" if mean["adaptive-batch"] > 1.02 else "differs")
    report.compare("cap-only (AdaptiveCap) vs Baseline", "not given (below PALS)", f"{mean['adaptive-cap']:.2f}x", "-")
    report.compare("PALS as share of Oracle tokens/J", "95 % (efficiency) / 95 % of headroom",
                   f"{pals_vs_oracle:.1%} (headroom {headroom:.0%})", "matches" if pals_vs_oracle >= 0.95 else "differs")
    tol = 1 - tolerance_pct / 100
    for other in ("baseline", "adaptive-batch", "adaptive-cap"):
        ok = mean["pals"] >= mean[other] * tol and mean_viol["pals"] <= mean_viol[other] + tolerance_pct
        report.check(f"PALS >= {other} on tokens/J at equal or fewer QoS violations (within {tolerance_pct:.1f} %)", ok,
                     f"{mean['pals']:.3f}x vs {mean[other]:.3f}x; violations {mean_viol['pals']:.1f} % vs {mean_viol[other]:.1f} %")
    report.check("PALS reaches at least 95 % of the Oracle's tokens/J", pals_vs_oracle >= 0.95, f"{pals_vs_oracle:.1%}")


def _why_section(report: Report, mean: dict[str, float]) -> None:
    why = report.section("Why ours differ from the paper")
    report.why(why, (
        "The load regime decides it. At a Poisson load below capacity the batch cap does not bind: the running batch is "
        "set by the arrivals, so a smaller batch cap only lowers capacity and AdaptiveBatch has almost nothing to gain "
        f"({mean['adaptive-batch']:.2f}x against the paper's 1.14x). What a partly loaded node can save is power: decode "
        "is memory-bound, so a lower cap loses little throughput while the node's power falls, which is why "
        "AdaptiveCap and PALS land together and the gain comes from the cap. The paper's 1.14x batch-only gain needs "
        "a regime where the batch cap itself sets the operating point (saturation with amortised per-step overheads, "
        "which the simulator's physics gives as 9-30x between batch 1 and 64, not 1.7-2.1x: docs/calibration.md §7 "
        "S3a). PALS's gap to the Oracle comes from predictor error near capacity: the profile's throughput at the "
        "lowest caps is measured over a finite Poisson window, and a candidate whose predicted throughput falls short "
        "of the target is not chosen, where the Oracle sees the exact value."
    ))
