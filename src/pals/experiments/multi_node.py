"""multi-node (paper Fig 9): three 4x A100 nodes under one cluster power budget.

Nodes: DeepSeek-MoE-16B, Mixtral-8x7B, OLMoE-1B-7B, one per node. QoS targets 90 %, 60 % and 75 % of
each model's unconstrained throughput (400 W, batch 64, saturating). Each node's Poisson load offers
`LOAD_OVER_TARGET` x its target. How each policy obeys the cluster budget:

- Baseline, AdaptiveBatch, AdaptiveCap and "PALS, equal split": the cluster budget is split equally
  and statically (B/3 per node); each node's policy keeps its measured node power under its share
  (H4's `BudgetGuard` clamps the per-GPU cap to the budget; the baselines otherwise keep their
  fixed knob).
- "PALS + coordinator": PALS nodes whose budgets and targets are set every 5 s by the cluster
  coordinator (`pals.cluster`) through each node's HTTP endpoint: QoS needs first, then slack by
  marginal tokens/J, never more than B in total.

Two budgets: the paper's 4,800 W, and a "binding" budget placed at the same point of our cluster's
power range (all nodes at 150 W caps ... all at 400 W, measured under the load) as 4,800 W is in
the paper's (3 x (1.05 x 4 x 150 + 345) = 2,925 W ... 6,075 W nameplate, i.e. 59.5 %).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pals.cluster.allocation import Frontier
from pals.experiments.cluster_sim import ClusterNode, run_cluster
from pals.experiments.common import ALL_MODELS, Lab, plt, save_figure
from pals.experiments.report import Report, Section

NODES = {"DeepSeek-MoE-16B": 0.90, "Mixtral-8x7B": 0.60, "OLMoE-1B-7B": 0.75}
"""Model -> QoS target as a fraction of its unconstrained throughput (paper section 5.2)."""
PAPER_BUDGET_W = 4800.0
PAPER_RANGE_POSITION = (4800.0 - 2925.0) / (6075.0 - 2925.0)
LOAD_OVER_TARGET = 1.1
VARIANTS = ("baseline", "adaptive-batch", "adaptive-cap", "pals", "pals+coordinator")

NodeInfo = dict[str, dict[str, float]]
"""Model -> its TP, unconstrained, target and offered throughput (tokens/s), as `_setup` measures them."""


def _setup(lab: Lab) -> NodeInfo:
    info = {}
    for model, fraction in NODES.items():
        tp = ALL_MODELS[model]
        unconstrained = lab.measure(model, tp, 400.0, 64).throughput_tps
        target = fraction * unconstrained
        load = min(LOAD_OVER_TARGET * target, unconstrained * 1.05)
        info[model] = {"tp": tp, "unconstrained_tps": unconstrained, "target_tps": target, "load_tps": load}
    return info


def _run_variant(lab: Lab, info, variant: str, budget_w: float, duration_s: float):
    nodes = []
    policy = "pals" if variant.startswith("pals") else variant
    coordinated = variant == "pals+coordinator"
    for index, (model, d) in enumerate(info.items()):
        node = lab.node(model, d["tp"], lab.workload(d["load_tps"], lab.seed + 7 + index), seed_offset=index)
        share = None if coordinated else budget_w / len(info)
        loop = lab.loop(node, lab.make_policy(policy, model, d["tp"], d["load_tps"]), budget_w=share,
                        target_tps=None if coordinated else d["target_tps"])
        nodes.append(ClusterNode(model, node, loop))
    sources = {}
    if coordinated:
        for model, d in info.items():
            frontier = Frontier.from_points(lab.frontier_points(model, d["tp"], d["load_tps"]))
            sources[model] = lambda status, f=frontier: f
    return run_cluster(nodes, duration_s, cluster_budget_w=budget_w,
                       targets_tps={m: d["target_tps"] for m, d in info.items()},
                       frontier_sources=sources, coordinate=coordinated)


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    lab = Lab(seed=seed, quick=quick, work_dir=Path(out_dir) / "profiles")
    duration_s = 60.0 if quick else 600.0
    info = _setup(lab)
    floor_w = sum(lab.measure(m, d["tp"], 150.0, 64, lab.workload(d["load_tps"], seed + 5)).node_power_w for m, d in info.items())
    top_w = sum(lab.measure(m, d["tp"], 400.0, 64, lab.workload(d["load_tps"], seed + 5)).node_power_w for m, d in info.items())
    binding_w = floor_w + PAPER_RANGE_POSITION * (top_w - floor_w)
    budgets = {"paper 4,800 W": PAPER_BUDGET_W, f"binding {binding_w:,.0f} W": binding_w}

    report = Report("multi-node", "Three nodes under a cluster power budget (paper Fig 9)", out_dir, quick)
    report.setup = {
        "nodes": "3 x (4x A100-SXM4-80GB), simulated, one shared virtual clock",
        "models and targets": ", ".join(f"{m} {f:.0%}" for m, f in NODES.items()),
        "load": f"Poisson, {LOAD_OVER_TARGET:g} x each node's target",
        "duration": f"{duration_s:.0f} s simulated per run (paper: 60 min)",
        "cluster power range (150 W .. 400 W caps, under load)": f"{floor_w:,.0f} .. {top_w:,.0f} W",
        "coordinator": "every 5 s over HTTP (GET /status, PUT /budget, PUT /target)",
    }
    report.intro.append(__doc__.split("\n\n", 1)[1])
    sec_nodes = report.section("Setup per node")
    report.table(sec_nodes, "nodes", ["model", "TP", "unconstrained tok/s", "target tok/s", "offered tok/s"],
                 [[m, d["tp"], d["unconstrained_tps"], d["target_tps"], d["load_tps"]] for m, d in info.items()])

    rows, results = _run_all(lab, info, budgets, duration_s)
    sec = report.section("QoS violations and aggregate tokens/J")
    report.table(sec, "results", ["budget", "policy", *[f"{m} viol %" for m in info], "aggregate tokens/J",
                                  "mean cluster W", "max cluster W", "% intervals over budget"], rows)
    _fig9(report, sec, info, budgets, results)
    _coordinator_figure(report, sec, info, budgets, results)
    metrics = _compare_and_check(report, info, budgets, results)
    _why_section(report, floor_w, top_w)
    report.metrics = metrics | {"budgets_w": budgets, "cluster_power_range_w": [floor_w, top_w]}
    return report.write(time.perf_counter() - start)


def _run_all(lab: Lab, info: NodeInfo, budgets: dict[str, float], duration_s: float) -> tuple[list[list[Any]], dict]:
    """Every variant under every budget: the results table's rows and (budget label, variant) -> cluster result."""
    rows, results = [], {}
    for label, budget_w in budgets.items():
        for variant in VARIANTS:
            res = _run_variant(lab, info, variant, budget_w, duration_s)
            results[(label, variant)] = res
            over = 100.0 * float((res.cluster_power_w > budget_w * 1.0).mean()) if len(res.cluster_power_w) else 0.0
            mean_w = float(res.cluster_power_w.mean()) if len(res.cluster_power_w) else 0.0
            viol = {m: res.summaries[m]["qos_violation_pct"] for m in info}
            rows.append([label, variant, *[viol[m] for m in info], res.aggregate_tokens_per_joule, mean_w,
                         float(res.cluster_power_w.max()) if len(res.cluster_power_w) else 0.0, over])
    return rows, results


def _fig9(report: Report, sec: Section, info: NodeInfo, budgets: dict[str, float], results: dict) -> None:
    """Fig 9 per budget: QoS violations per model and aggregate tokens/J, per variant."""
    for label in budgets:
        fig, axes = plt().subplots(1, 2, figsize=(10, 3.6))
        for k, model in enumerate(info):
            axes[0].bar([i + (k - 1) * 0.25 for i in range(len(VARIANTS))],
                        [results[(label, v)].summaries[model]["qos_violation_pct"] for v in VARIANTS], 0.25, label=model)
        axes[0].set_xticks(range(len(VARIANTS)), VARIANTS, fontsize=7, rotation=15)
        axes[0].set_ylabel("QoS violations (% of intervals)")
        axes[0].legend(fontsize=7)
        axes[1].bar(range(len(VARIANTS)), [results[(label, v)].aggregate_tokens_per_joule for v in VARIANTS])
        axes[1].set_xticks(range(len(VARIANTS)), VARIANTS, fontsize=7, rotation=15)
        axes[1].set_ylabel("aggregate tokens/J")
        fig.suptitle(f"budget: {label}", fontsize=9)
        stem = "fig9_" + label.split()[0]
        save_figure(fig, report.figure_path(stem))
        report.image(sec, stem, f"Fig 9 ({label}): QoS violations per model and aggregate tokens/J")


def _coordinator_figure(report: Report, sec: Section, info: NodeInfo, budgets: dict[str, float], results: dict) -> None:
    """The coordinator's per-node budgets over time under the binding budget, with the measured cluster power."""
    coord = results[(list(budgets)[1], "pals+coordinator")]
    if not coord.rounds:
        return
    fig, ax = plt().subplots(figsize=(8, 3.2))
    times = [r["time_s"] or 0 for r in coord.rounds]
    for model in info:
        ax.plot(times, [r["budgets_w"][model] for r in coord.rounds], label=f"{model} budget")
    ax.plot(coord.times_s - coord.times_s[0], coord.cluster_power_w, color="k", lw=0.6, label="cluster power (measured)")
    ax.axhline(budgets[list(budgets)[1]], color="r", ls="--", lw=0.8, label="cluster budget")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("W")
    ax.set_ylim(0, 1.1 * budgets[list(budgets)[1]])
    ax.legend(fontsize=6)
    save_figure(fig, report.figure_path("coordinator_budgets"))
    report.image(sec, "coordinator_budgets", "Coordinator: per-node budgets and measured cluster power (binding budget)")


def _compare_and_check(report: Report, info: NodeInfo, budgets: dict[str, float], results: dict) -> dict[str, Any]:
    """The paper's Fig 9 numbers beside ours and the budget checks, per budget; returns the metrics per budget."""
    metrics: dict[str, Any] = {}
    for label in budgets:
        base = results[(label, "baseline")]
        best = results[(label, "pals+coordinator")]
        equal = results[(label, "pals")]
        gain = best.aggregate_tokens_per_joule / base.aggregate_tokens_per_joule - 1
        base_v = [base.summaries[m]["qos_violation_pct"] for m in info]
        pals_v = [best.summaries[m]["qos_violation_pct"] for m in info]
        metrics[label] = {
            "baseline_violation_pct": dict(zip(info, base_v)),
            "pals_coordinator_violation_pct": dict(zip(info, pals_v)),
            "pals_equal_split_violation_pct": {m: equal.summaries[m]["qos_violation_pct"] for m in info},
            "aggregate_tokens_per_joule_gain_pct": 100 * gain,
            "mean_cluster_power_w": {v: float(results[(label, v)].cluster_power_w.mean()) for v in VARIANTS},
        }
        report.compare(f"baseline QoS violations ({label})", "18.7-35.2 %", f"{min(base_v):.1f}-{max(base_v):.1f} %",
                       "same direction" if max(base_v) > max(pals_v) else "differs")
        report.compare(f"PALS QoS violations ({label})", "3.2-5.3 %", f"{min(pals_v):.1f}-{max(pals_v):.1f} %",
                       "matches" if max(pals_v) <= 5.3 else "differs")
        report.compare(f"aggregate tokens/J, PALS vs baseline ({label})", "+12.1 %", f"{100 * gain:+.1f} %",
                       "same direction" if gain > 0 else "differs")
        for variant in VARIANTS:
            res = results[(label, variant)]
            budget_w = budgets[label]
            mean_err = 100.0 * float(abs(res.cluster_power_w.mean() - budget_w) / budget_w)
            over_pct = 100.0 * float(max(0.0, res.cluster_power_w.mean() / budget_w - 1))
            report.check(f"{variant} keeps mean cluster power within the {label} budget (<= 3 % over)",
                         over_pct <= 3.0, f"mean {res.cluster_power_w.mean():,.0f} W, {mean_err:.1f} % from the budget")
        ok = (best.aggregate_tokens_per_joule >= base.aggregate_tokens_per_joule * 0.98
              and sum(pals_v) <= sum(base_v) + 3.0)
        report.check(f"PALS + coordinator >= baseline on aggregate tokens/J at equal or fewer violations ({label})", ok,
                     f"{100 * gain:+.1f} % tokens/J; violations {sum(pals_v) / 3:.1f} % vs {sum(base_v) / 3:.1f} % (mean of nodes)")
    return metrics


def _why_section(report: Report, floor_w: float, top_w: float) -> None:
    why = report.section("Why ours differ from the paper")
    report.why(why, (
        f"What the baseline does under the budget decides the violations. Our simulated nodes draw {floor_w:,.0f}-{top_w:,.0f} W "
        f"together (150-400 W caps, under their loads), well below the paper's 6,075 W nameplate, because an A100 "
        "serving decode-heavy MoE traffic draws 160-250 W, not 400 W (docs/calibration.md §7). Under 4,800 W the "
        "equal split (1,600 W per node) never binds, so the baseline runs unconstrained and its violations come only "
        "from Poisson bursts at the targets, not from the budget; the paper's 18.7-35.2 % came from a budget that "
        "forced caps down on nodes that needed the power. Under the binding budget (same place in our power range "
        "as 4,800 W in the paper's), the equal split starves the node with the tightest target (DeepSeek-MoE at 90 %) "
        "while leaving slack on Mixtral (60 %); the coordinator moves that slack, which is where PALS's violation "
        "reduction comes from. The tokens/J gain comes from the node policy lowering caps where the target allows, "
        "the same mechanism as single-node."
    ))
