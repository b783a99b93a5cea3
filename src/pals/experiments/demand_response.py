"""demand-response (paper Fig 10): three DeepSeek-MoE nodes follow a one-hour cluster power target.

The cluster power target has steps and ramps between the cluster's floor (every GPU at 150 W) and
its top (400 W), measured under a saturating load, so throughput is limited by power throughout.
The target is split equally across the three identical nodes and given to each node's loop as a
`BudgetSchedule` (30 s steps on the ramps). Two policies:

- cap-only, batch 64: H4's Baseline (batch fixed at 64; the cap is clamped to the budget);
- PALS: joint cap x batch, asked for more throughput than any budget allows (the node's
  unconstrained throughput), so it runs best-effort: the most throughput that fits the budget.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from pals.control.budget import BudgetSchedule, BudgetStep
from pals.experiments.cluster_sim import ClusterNode, run_cluster
from pals.experiments.common import ALL_MODELS, Lab, plt, save_figure
from pals.experiments.report import Report

MODEL = "DeepSeek-MoE-16B"
NUM_NODES = 3
# (time as a fraction of the run, level as a fraction of the floor..top range); linear between
# points that share a "ramp" flag, steps otherwise.
SHAPE = (
    (0.00, 1.00, "step"), (0.12, 0.55, "step"), (0.25, 0.55, "ramp"), (0.40, 0.05, "ramp"),
    (0.52, 0.05, "step"), (0.55, 0.80, "step"), (0.65, 0.80, "ramp"), (0.80, 0.25, "ramp"),
    (0.90, 0.25, "step"), (0.92, 1.00, "step"),
)


def level_at(fraction: float) -> float:
    """Target level (0 = floor, 1 = top) at `fraction` of the run."""
    level = SHAPE[0][1]
    for (t0, l0, _), (t1, l1, kind) in zip(SHAPE, SHAPE[1:]):
        if fraction >= t1:
            level = l1
        elif fraction >= t0:
            level = l0 + (l1 - l0) * (fraction - t0) / (t1 - t0) if kind == "ramp" else l0
            break
    return level


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    lab = Lab(seed=seed, quick=quick, work_dir=Path(out_dir) / "profiles")
    tp = ALL_MODELS[MODEL]
    duration_s = 300.0 if quick else 3600.0
    step_s = 10.0 if quick else 30.0
    floor = lab.measure(MODEL, tp, 150.0, 64)
    top = lab.measure(MODEL, tp, 400.0, 64)
    node_floor_w, node_top_w = floor.node_power_w, top.node_power_w
    schedule = _node_schedule(node_floor_w, node_top_w, duration_s, step_s)
    results = _run_policies(lab, tp, schedule, top.throughput_tps, duration_s, seed)

    report = Report("demand-response", "Demand response: three DeepSeek-MoE nodes follow a power target (paper Fig 10)", out_dir, quick)
    report.intro.append(__doc__.split("\n\n", 1)[1])
    report.setup = {
        "nodes": f"{NUM_NODES} x (4x A100-SXM4-80GB), {MODEL} TP {tp}, saturating load",
        "node power range (150 W .. 400 W caps)": f"{node_floor_w:,.0f} .. {node_top_w:,.0f} W",
        "duration": f"{duration_s:.0f} s simulated",
    }
    rows, per_level = _tracking_section(report, results, schedule, node_floor_w, node_top_w)
    gains = _level_section(report, per_level, node_floor_w, node_top_w)
    _compare_and_check(report, rows, gains)
    _why_section(report, floor.gpu_power_total_w / 4, top.gpu_power_total_w / 4)
    report.metrics = {"tracking": {r[0]: {"mean_error_pct": r[1], "mean_overshoot_pct": r[2]} for r in rows},
                      "throughput_by_level": per_level, "pals_gain_by_level": gains}
    return report.write(time.perf_counter() - start)


def _node_schedule(node_floor_w: float, node_top_w: float, duration_s: float, step_s: float) -> BudgetSchedule:
    """Each node's share of the cluster target (`SHAPE` between floor and top), one step every `step_s`."""
    times = np.arange(0.0, duration_s, step_s)
    node_budget = [node_floor_w + level_at(t / duration_s) * (node_top_w - node_floor_w) for t in times]
    return BudgetSchedule(tuple(BudgetStep(float(t), float(b)) for t, b in zip(times, node_budget)), "node")


def _run_policies(lab: Lab, tp: int, schedule: BudgetSchedule, target_tps: float, duration_s: float, seed: int) -> dict:
    """Cap-only (batch 64) and PALS, each on `NUM_NODES` nodes that follow `schedule`: label -> cluster result."""
    results = {}
    for label, policy in (("cap-only, batch 64", "baseline"), ("PALS", "pals")):
        nodes = []
        for i in range(NUM_NODES):
            node = lab.node(MODEL, tp, lab.workload(None, seed + 7 + i), seed_offset=i)
            loop = lab.loop(node, lab.make_policy(policy, MODEL, tp, None), target_tps=target_tps,
                            schedule=schedule)
            nodes.append(ClusterNode(f"node{i}", node, loop))
        results[label] = run_cluster(nodes, duration_s)
    return results


def _settled(t_rel: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Which intervals lie at least 2 s after the latest change of the target."""
    changed = np.r_[True, np.abs(np.diff(target)) > 1e-6]
    settle = np.zeros_like(changed)
    last = -1e9
    for k, flag in enumerate(changed):
        if flag:
            last = t_rel[k]
        settle[k] = t_rel[k] - last >= 2.0
    return settle


def _tracking_section(
    report: Report, results: dict, schedule: BudgetSchedule, node_floor_w: float, node_top_w: float
) -> tuple[list[list[Any]], dict[str, dict[float, float]]]:
    """Fig 10 and the tracking table: power against the target and throughput, per policy.

    Returns:
        The table's rows and policy -> target level -> mean settled throughput (tokens/s).
    """
    sec = report.section("Power tracking and throughput over time")
    fig, axes = plt().subplots(2, 1, figsize=(9, 5), sharex=True)
    rows, per_level = [], {}
    for label, res in results.items():
        # Per-interval cluster target aligned with the measured series.
        t_rel = res.times_s - res.times_s[0] if len(res.times_s) else res.times_s
        target = np.array([NUM_NODES * schedule.budget_at(max(0.0, t - 1e-9)).budget_w for t in t_rel])
        settle = _settled(t_rel, target)
        power = res.cluster_power_w
        err = np.abs(power - target) / target
        over = np.maximum(0.0, power / target - 1)
        tput = np.zeros(len(power))
        for recs in res.records.values():
            for k, rec in enumerate(recs[1:len(power) + 1]):
                tput[k] += rec["sample"]["throughput_tps"]
        rows.append([label, 100 * float(err[settle].mean()), 100 * float(over[settle].mean()),
                     100 * float((over[settle] > 0.02).mean()), float(tput.mean()), res.aggregate_tokens_per_joule])
        axes[0].plot(t_rel, power, lw=0.7, label=f"{label}: measured")
        axes[1].plot(t_rel, tput, lw=0.7, label=label)
        levels = np.round((target / NUM_NODES - node_floor_w) / (node_top_w - node_floor_w), 1)
        per_level[label] = {float(lv): float(tput[settle & (levels == lv)].mean()) for lv in np.unique(levels[settle])}
        if label == "PALS":
            axes[0].plot(t_rel, target, color="k", ls="--", lw=0.8, label="cluster power target")
    axes[0].set_ylabel("cluster power (W)")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("throughput (tok/s)")
    axes[1].set_xlabel("time (s)")
    axes[1].legend(fontsize=7)
    save_figure(fig, report.figure_path("fig10_demand_response"))
    report.table(sec, "tracking", ["policy", "mean tracking error %", "mean overshoot %", "% intervals > 2 % over",
                                   "mean throughput tok/s", "tokens/J"], rows)
    report.image(sec, "fig10_demand_response", "Fig 10: cluster power against the target, and throughput")
    return rows, per_level


def _level_section(
    report: Report, per_level: dict[str, dict[float, float]], node_floor_w: float, node_top_w: float
) -> dict[float, float]:
    """Throughput per target level, both policies; returns level -> PALS's gain over cap-only (fraction)."""
    base_lv, pals_lv = per_level["cap-only, batch 64"], per_level["PALS"]
    common = sorted(set(base_lv) & set(pals_lv))
    gains = {lv: pals_lv[lv] / base_lv[lv] - 1 for lv in common if base_lv[lv] > 0}
    sec2 = report.section("Throughput by power-target level")
    report.table(sec2, "by_level", ["target level (0 = floor, 1 = top)", "node budget W", "cap-only tok/s", "PALS tok/s", "PALS gain %"],
                 [[lv, node_floor_w + lv * (node_top_w - node_floor_w), base_lv[lv], pals_lv[lv], 100 * gains[lv]] for lv in common])
    return gains


def _compare_and_check(report: Report, rows: list[list[Any]], gains: dict[float, float]) -> None:
    """The paper's Fig 10 claims beside ours, and the tracking checks."""
    max_gain = max(gains.values()) if gains else float("nan")
    low = [lv for lv in gains if lv <= 0.3]
    low_gain = max((gains[lv] for lv in low), default=float("nan"))
    report.compare("PALS throughput over cap-only at low power targets", "up to +22 %", f"up to {100 * low_gain:+.1f} % (any level: {100 * max_gain:+.1f} %)",
                   "same direction" if low_gain > 0.02 else "differs")
    report.compare("both track the power target", "yes", ", ".join(f"{r[0]}: {r[1]:.1f} % mean error" for r in rows), "matches" if all(r[2] <= 3 for r in rows) else "differs")
    for r in rows:
        report.check(f"{r[0]} stays within the power target (mean overshoot <= 3 %)", r[2] <= 3.0,
                     f"mean overshoot {r[2]:.2f} %, mean |error| {r[1]:.1f} %")
    worst = min(gains.values()) if gains else float("nan")
    report.check("PALS throughput >= cap-only's at every power target (within 2 %)", worst >= -0.02,
                 f"worst level {100 * worst:+.1f} %")


def _why_section(report: Report, floor_gpu_w: float, top_gpu_w: float) -> None:
    why = report.section("Why ours differ from the paper")
    report.why(why, (
        "Where batch 64 stops being the best choice at a low cap decides the gain. In the simulator, DeepSeek-MoE at "
        f"batch 64 draws {floor_gpu_w:.0f} W per GPU at the 150 W cap and {top_gpu_w:.0f} W "
        "uncapped, so the whole demand-response range is narrow, and a saturated batch-64 step keeps the highest "
        "tokens per step even when the clock is lowered: decode is memory-bound, so a lower clock costs little "
        "throughput, and a smaller batch gives up more tokens per step than it saves in power. PALS gains where the "
        "budget is below what batch 64 draws at the lowest cap (the cap alone cannot get there and the baseline is "
        "throttled), and the tracking error is mostly undershoot: both policies run below the target when even "
        "their chosen configuration draws less. The paper's +22 % needs batch 64 to be power-inefficient at low caps, "
        "which the simulator's physics gives only near the floor."
    ))
