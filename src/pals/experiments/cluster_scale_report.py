"""The cluster-scale report: round time, budget conservation, restarts and QoS per node, with checks
computed from the numbers, tables, PNG figures and summary.json (`pals.experiments.report`)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pals.core.window import TrailingWindow
from pals.experiments.common import plt, save_figure
from pals.experiments.report import Report, Section

if TYPE_CHECKING:
    from pals.experiments.cluster_scale import ClusterScaleRun

QOS_WINDOW_S = 5.0
"""Trailing window of the strict QoS test (`pals.control.qos.DEFAULT_QOS_WINDOW_S`). Units: s."""
POWER_TOLERANCE = 0.03
"""Mean measured cluster power may sit this far above the budget (telemetry noise, as in multi-node)."""
TIMED_CHECK_PREFIX = "round time"
"""Checks whose claim starts with this are timings: tests do not assert them (no timed unit tests)."""
QOS_MET_LIMIT_PCT = 10.0
"""Strict violations allowed where the coordinator's split met every target: Poisson bursts (load 1.1 x
target) and the agents' own settling still cost a few intervals. Units: % of intervals."""
_EPS_W = 0.01


@dataclass
class Phase:
    """A stretch of rounds under one cluster budget."""

    label: str
    first_round: int
    end_round: int
    budget_w: float
    start_s: float
    end_s: float
    """Virtual time span of its control intervals (absolute node time). Units: s."""


@dataclass
class NodeQos:
    name: str
    model: str
    target_tps: float
    intervals: int
    strict_pct: float
    """Intervals whose trailing-5 s throughput was below the target while requests waited (no tolerance). Units: %."""
    loop_pct: float
    """The agent's own QoS figure (5 % tolerance, its target in force). Units: %."""
    by_phase_pct: list[float]
    met_split: tuple[int, int]
    """(strict violations, intervals) after rounds whose split met every target."""
    short_split: tuple[int, int]
    """(strict violations, intervals) after rounds whose split fell short of some target."""
    mean_tps: float
    mean_power_w: float
    mean_budget_w: float
    boots: int


def phases(run: "ClusterScaleRun") -> list[Phase]:
    scale = run.scale
    out = []
    bounds = [first for first, _ in scale.budget_phases] + [scale.rounds]
    for k, (first, fraction) in enumerate(scale.budget_phases):
        end = bounds[k + 1]
        out.append(Phase(f"{fraction:.0%} of unconstrained", first, end, fraction * run.unconstrained_w,
                         run.start_s + first * scale.round_s, run.start_s + end * scale.round_s))
    return out


def node_qos(run: "ClusterScaleRun", spans: list[Phase]) -> list[NodeQos]:
    """Strict QoS per node from its agents' records (each agent's window starts empty)."""
    return [_one_node_qos(run, plan, spans) for plan in run.plans]


def _round_before(run: "ClusterScaleRun", time_s: float) -> int:
    """Index of the coordinator round whose split was in force during the interval ending at `time_s`."""
    index = int((time_s - run.start_s - 1e-9) // run.scale.round_s)
    return max(0, min(len(run.rounds) - 1, index))


def _one_node_qos(run: "ClusterScaleRun", plan, spans: list[Phase]) -> NodeQos:
    records = [r for r in run.records[plan.name] if r.sample is not None and r.time_s > run.start_s + 1e-9]
    strict, counted = [0] * len(spans), [0] * len(spans)
    split = {True: [0, 0], False: [0, 0]}  # met every target? -> [violations, intervals]
    loop_violations = 0
    window: TrailingWindow[float] = TrailingWindow(QOS_WINDOW_S)
    last_t = None
    for rec in records:
        if last_t is not None and rec.time_s - last_t > rec.interval_s * 1.5:
            window.clear()  # a new agent: its window starts empty
        last_t = rec.time_s
        window.add(rec.interval_s, rec.sample.throughput_tps * rec.interval_s)
        violated = window.rate() < plan.target_tps and rec.sample.requests_waiting > 0
        k = next((i for i, p in enumerate(spans) if p.start_s < rec.time_s <= p.end_s + 1e-9), len(spans) - 1)
        strict[k] += violated
        counted[k] += 1
        met = run.rounds[_round_before(run, rec.time_s)].qos_fraction >= 1.0 - 1e-9
        split[met][0] += violated
        split[met][1] += 1
        loop_violations += rec.qos_violation
    n = len(records)
    budgets = [r.budget.budget_w for r in records if r.budget is not None]
    boots = next(f.boots for f in run.fleet.nodes if f.name == plan.name)
    return NodeQos(
        plan.name, plan.model, plan.target_tps, n,
        strict_pct=100.0 * sum(strict) / n if n else float("nan"),
        loop_pct=100.0 * loop_violations / n if n else float("nan"),
        by_phase_pct=[100.0 * v / c if c else float("nan") for v, c in zip(strict, counted)],
        met_split=tuple(split[True]), short_split=tuple(split[False]),
        mean_tps=sum(r.sample.throughput_tps for r in records) / n if n else float("nan"),
        mean_power_w=sum(r.sample.node_power_w for r in records) / n if n else float("nan"),
        mean_budget_w=sum(budgets) / len(budgets) if budgets else float("nan"),
        boots=boots,
    )


def pooled_pct(pairs: list[tuple[int, int]]) -> float:
    """Violations over intervals, summed over nodes. Units: %."""
    intervals = sum(c for _, c in pairs)
    return 100.0 * sum(v for v, _ in pairs) / intervals if intervals else float("nan")


def restart_outcomes(run: "ClusterScaleRun") -> list[dict[str, Any]]:
    """Per restarted node: was its budget and target rewritten in the first round it answered again?"""
    rows = []
    for event in run.restarts:
        report = run.reports[event.back_round] if event.back_round < len(run.reports) else None
        for name in event.names:
            node = None if report is None else report.nodes[name]
            down_rounds = [run.reports[r].nodes[name] for r in range(event.round_index, event.back_round)
                           if r < len(run.reports)]
            rows.append({
                "round": event.round_index, "node": name, "down rounds": event.down_rounds,
                "seen down": sum(1 for d in down_rounds if not d.up),
                "reserved while down W": min((d.budget_in_force_w for d in down_rounds), default=float("nan")),
                "back round": event.back_round,
                "drift seen": None if node is None else node.drift,
                "budget rewritten": node is not None and node.reconciled,
                "target rewritten": node is not None and node.target_written_tps is not None,
            })
    return rows


def write_report(run: "ClusterScaleRun", out_dir: Path, quick: bool, wall_s: float) -> dict[str, Any]:
    from pals.experiments.cluster_scale import ROUND_TIME_TARGET_S

    spans = phases(run)
    qos = node_qos(run, spans)
    restarts = restart_outcomes(run)
    durations = [r.duration_s for r in run.rounds]
    round_time = {"p50_s": median(durations), "p99_s": percentile(durations, 99), "max_s": max(durations),
                  "rounds": len(durations)}
    report = Report("cluster-scale", f"The coordinator over {len(run.plans)} nodes on loopback HTTP", out_dir, quick)
    from pals.experiments import cluster_scale

    report.intro.append(cluster_scale.__doc__.split("\n\n", 1)[1])
    report.setup = {
        "nodes": f"{len(run.plans)} simulated 4-GPU nodes, each with its agent (`pals` policy) and HTTP endpoint",
        "models": ", ".join(f"{m} (TP {tp})" for m, tp in cluster_scale.MODELS.items()),
        "targets": "50-90 % of each model's unconstrained throughput; Poisson load 1.1 x target",
        "rounds": f"{len(run.rounds)}, every {run.scale.round_s:g} s of node time",
        "measured unconstrained cluster power": f"{run.unconstrained_w:,.0f} W",
        "coordinator metrics series (one scrape)": run.metrics_series,
    }
    _round_section(report, run, round_time, ROUND_TIME_TARGET_S)
    conservation = _conservation_section(report, run, spans)
    _restart_section(report, restarts)
    _qos_section(report, run, qos, spans)
    _checks(report, run, round_time, conservation, restarts, qos, spans, ROUND_TIME_TARGET_S)
    report.metrics = {
        "nodes": len(run.plans),
        "round_time": round_time,
        "conservation": conservation,
        "unconstrained_cluster_power_w": run.unconstrained_w,
        "phases": [{"label": p.label, "budget_w": p.budget_w, "rounds": [p.first_round, p.end_round],
                    "mean_cluster_power_w": run.fleet.mean_power_w(p.start_s, p.end_s)} for p in spans],
        "restarts": restarts,
        "qos_pooled_strict_pct": {"split_met_every_target": pooled_pct([q.met_split for q in qos]),
                                  "split_fell_short": pooled_pct([q.short_split for q in qos])},
        "qos": {q.name: {"model": q.model, "target_tps": q.target_tps, "strict_violation_pct": q.strict_pct,
                         "loop_violation_pct": q.loop_pct, "by_phase_strict_pct": q.by_phase_pct} for q in qos},
    }
    return report.write(wall_s)


def _round_section(report: Report, run: "ClusterScaleRun", round_time: dict, target_s: float) -> None:
    sec = report.section("Round time")
    report.paragraph(sec, (
        f"Wall time of each coordinator round over {len(run.plans)} nodes: {len(run.plans)} GET /status and "
        "GET /frontier, the split, and the PUT /budget and PUT /target writes (decreases first), 16 nodes at "
        "a time, with every node's endpoint answering in the same process on this machine."))
    down = [r.duration_s for r in run.rounds if r.nodes_down]
    changed = [r.duration_s for r in run.rounds[1:] if r.cluster_budget_w != run.rounds[r.round_index - 1].cluster_budget_w]
    rows = [["all rounds", len(run.rounds), 1000 * round_time["p50_s"], 1000 * round_time["p99_s"],
             1000 * round_time["max_s"]]]
    for label, values in (("rounds with nodes down", down), ("rounds applying a budget change", changed)):
        if values:
            rows.append([label, len(values), 1000 * median(values), 1000 * percentile(values, 99), 1000 * max(values)])
    report.table(sec, "round_time", ["rounds", "count", "p50 ms", "p99 ms", "max ms"], rows)
    fig, ax = plt().subplots(figsize=(8, 3.0))
    ax.plot([r.round_index for r in run.rounds], [1000 * r.duration_s for r in run.rounds], "o-", ms=3, lw=0.8,
            label="round time")
    ax.axhline(1000 * target_s, color="r", ls="--", lw=0.8, label=f"target {target_s:g} s")
    for r in run.rounds:
        if r.nodes_down:
            ax.axvspan(r.round_index - 0.5, r.round_index + 0.5, color="0.85", lw=0)
    ax.set_xlabel("round (index)")
    ax.set_ylabel("round time (ms)")
    ax.set_ylim(0, max(1100 * target_s, 1100 * round_time["max_s"]))
    ax.set_title(f"Coordinator round time over {len(run.plans)} nodes (ms; grey: nodes down)", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, report.figure_path("round_time"))
    report.image(sec, "round_time", "Round time per round (ms), with the 1 s target")


def _conservation_section(report: Report, run: "ClusterScaleRun", spans: list[Phase]) -> dict[str, Any]:
    sec = report.section("Budget conservation")
    witness = run.witness
    report.paragraph(sec, (
        f"The witness checked the sum of the budgets the nodes held {witness.checks:,} times (every budget "
        f"write that landed, every agent boot, every round end): {len(witness.excesses)} time(s) above the "
        f"cluster budget; smallest headroom {witness.min_headroom_w:,.1f} W. During the round that applies a "
        "budget change the limit is the larger of the old and new budgets; from its end, the new one."))
    rows = []
    for p in spans:
        rounds = run.rounds[p.first_round:p.end_round]
        power = run.fleet.mean_power_w(p.start_s, p.end_s)
        rows.append([p.label, p.budget_w, max(r.held_max_w for r in rounds), max(r.held_end_w for r in rounds),
                     min(r.held_end_w for r in rounds), max(r.coordinator_in_force_w for r in rounds), power,
                     sum(1 for e in witness.excesses if p.first_round <= e.round_index < p.end_round)])
    report.table(sec, "conservation", ["budget", "cluster budget W", "max held (any write) W", "max held (round end) W",
                                       "min held (round end) W", "max counted by coordinator W",
                                       "mean measured cluster power W", "excesses"], rows)
    report.table(sec, "rounds", ["round", "t s", "cluster budget W", "round ms", "coordinator counted W",
                                 "nodes held (end) W", "nodes held (max) W", "planned W", "down", "reserved W",
                                 "QoS fraction", "rewritten", "frontier fallbacks"],
                 [[r.round_index, r.t_s, r.cluster_budget_w, 1000 * r.duration_s, r.coordinator_in_force_w,
                   r.held_end_w, r.held_max_w, r.planned_w, r.nodes_down, r.reserved_down_w, r.qos_fraction,
                   len(r.reconciled), r.frontier_fallbacks] for r in run.rounds],
                 caption="Every round")
    _conservation_figure(report, sec, run)
    undercount = [r.round_index for r in run.rounds if r.coordinator_in_force_w < r.held_end_w - _EPS_W]
    unreserved = [r.round_index for r in run.rounds if r.reserved_down_w < r.down_held_w - _EPS_W]
    return {"checks": witness.checks, "excesses": len(witness.excesses),
            "max_excess_w": max((e.total_w - e.limit_w for e in witness.excesses), default=0.0),
            "min_headroom_w": witness.min_headroom_w,
            "excess_moments": [e.__dict__ for e in witness.excesses[:20]],
            "rounds_coordinator_counted_less_than_held": undercount,
            "rounds_down_budgets_not_reserved": unreserved}


def _conservation_figure(report: Report, sec: Section, run: "ClusterScaleRun") -> None:
    fig, ax = plt().subplots(figsize=(8, 3.4))
    t = [r.t_s for r in run.rounds]
    ax.step(t, [r.cluster_budget_w / 1000 for r in run.rounds], where="post", color="r", lw=1.2, label="cluster budget")
    ax.plot(t, [r.held_max_w / 1000 for r in run.rounds], "^", ms=3, color="C1", label="budgets held (max during round)")
    ax.plot(t, [r.held_end_w / 1000 for r in run.rounds], "o", ms=3, color="C0", label="budgets held (round end)")
    times = [x - run.start_s for x in run.fleet.times_s]
    ax.plot(times, [p / 1000 for p in run.fleet.power_w], color="k", lw=0.4, label="measured cluster power")
    for event in run.restarts:
        if event.down_rounds:
            ax.axvspan(event.round_index * run.scale.round_s, event.back_round * run.scale.round_s, color="0.88", lw=0)
    ax.set_xlim(0, run.scale.rounds * run.scale.round_s)
    ax.set_xlabel("node time since the first round (s)")
    ax.set_ylabel("power (kW)")
    ax.set_title("Cluster budget vs the budgets the nodes held and the power they drew (kW; grey: agents down)",
                 fontsize=8)
    ax.legend(fontsize=6, loc="lower left")
    save_figure(fig, report.figure_path("conservation"))
    report.image(sec, "conservation", "Cluster budget, budgets held and measured power (kW)")


def _restart_section(report: Report, restarts: list[dict[str, Any]]) -> None:
    sec = report.section("Agent restarts")
    report.paragraph(sec, (
        "Each restarted agent boots with its node's floor budget and no target. While it is down the "
        "coordinator counts its last budget (the node keeps its caps); in the first round it answers "
        "again the coordinator must see the drift and rewrite both."))
    columns = list(restarts[0]) if restarts else ["round", "node"]
    report.table(sec, "restarts", columns, [list(r.values()) for r in restarts])


def _qos_section(report: Report, run: "ClusterScaleRun", qos: list[NodeQos], spans: list[Phase]) -> None:
    sec = report.section("QoS per node")
    report.paragraph(sec, (
        "Strict QoS: an interval violates when the node's throughput over the trailing 5 s is below its target "
        "while requests wait (no tolerance). The agent's own figure (5 % tolerance, the target it held) is beside it. "
        "Where the budget cannot fund every target, the coordinator water-fills the same fraction of each node's "
        "target (its QoS fraction, below 1: max-min fairness, no node starved), so by the strict test nearly every "
        "node falls short there; where its split funds every target, the nodes should meet theirs. The checks "
        "compare the two regimes (each interval belongs to the round whose split was in force)."))
    rows = []
    for p_index, p in enumerate(spans):
        values = sorted(q.by_phase_pct[p_index] for q in qos if not math.isnan(q.by_phase_pct[p_index]))
        rounds = run.rounds[p.first_round:p.end_round]
        met = sum(1 for r in rounds if r.qos_fraction >= 1.0 - 1e-9)
        rows.append([p.label, p.budget_w, f"{met} of {len(rounds)}", median([r.qos_fraction for r in rounds]),
                     values[len(values) // 2], values[int(0.9 * (len(values) - 1))], values[-1],
                     sum(1 for v in values if v > 20)])
    report.table(sec, "qos_phases", ["budget", "cluster budget W", "rounds meeting every target",
                                     "median QoS fraction (coordinator)",
                                     "median node viol %", "p90 node viol %", "max node viol %", "nodes > 20 %"], rows)
    report.table(sec, "qos_nodes", ["node", "model", "target tok/s", "intervals", "strict viol %", "agent viol %",
                                    *[f"strict viol % ({p.label})" for p in spans], "mean tok/s", "mean node W",
                                    "mean budget W", "agents"],
                 [[q.name, q.model, q.target_tps, q.intervals, q.strict_pct, q.loop_pct, *q.by_phase_pct, q.mean_tps,
                   q.mean_power_w, q.mean_budget_w, q.boots] for q in qos], caption="Every node")
    fig, ax = plt().subplots(figsize=(8, 3.2))
    for p_index, p in enumerate(spans):
        ax.plot(range(len(qos)), [q.by_phase_pct[p_index] for q in qos], "o", ms=3, label=p.label)
    ax.set_xlabel("node (index)")
    ax.set_ylabel("strict QoS violations (% of intervals)")
    ax.set_title("Strict QoS violations per node and budget phase (% of intervals)", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, report.figure_path("qos"))
    report.image(sec, "qos", "Strict QoS violations per node (% of intervals), per budget phase")


def _checks(report: Report, run: "ClusterScaleRun", round_time: dict, conservation: dict,
            restarts: list[dict[str, Any]], qos: list[NodeQos], spans: list[Phase], target_s: float) -> None:
    n = len(run.plans)
    report.check(f"{TIMED_CHECK_PREFIX} p99 over {n} nodes below {target_s:g} s (2 cores; a timing, not asserted by tests)",
                 round_time["p99_s"] < target_s,
                 f"p50 {1000 * round_time['p50_s']:.0f} ms, p99 {1000 * round_time['p99_s']:.0f} ms, "
                 f"max {1000 * round_time['max_s']:.0f} ms over {round_time['rounds']} rounds")
    report.check("the budgets the nodes held never summed above the cluster budget (every write, boot and round end)",
                 conservation["excesses"] == 0,
                 f"{conservation['excesses']} excess(es) in {conservation['checks']:,} checks; max excess "
                 f"{conservation['max_excess_w']:.1f} W; min headroom {conservation['min_headroom_w']:.1f} W")
    report.check("the coordinator never counted less than the nodes held",
                 not conservation["rounds_coordinator_counted_less_than_held"],
                 f"rounds where it did: {conservation['rounds_coordinator_counted_less_than_held'] or 'none'}")
    report.check("a down node's last budget stayed reserved until it answered again",
                 not conservation["rounds_down_budgets_not_reserved"] and any(r.nodes_down for r in run.rounds),
                 f"{sum(1 for r in run.rounds if r.nodes_down)} rounds with nodes down; rounds not reserved: "
                 f"{conservation['rounds_down_budgets_not_reserved'] or 'none'}")
    rewritten = [r for r in restarts if r["budget rewritten"] and r["target rewritten"]]
    report.check("every restarted agent got its budget and target back in the first round it answered",
                 bool(restarts) and len(rewritten) == len(restarts),
                 f"{len(rewritten)} of {len(restarts)} restarted agents")
    worst = max(spans, key=lambda p: run.fleet.mean_power_w(p.start_s, p.end_s) / p.budget_w)
    worst_ratio = run.fleet.mean_power_w(worst.start_s, worst.end_s) / worst.budget_w
    report.check(f"mean measured cluster power within {POWER_TOLERANCE:.0%} of the budget in every phase",
                 worst_ratio <= 1 + POWER_TOLERANCE,
                 f"highest: {100 * worst_ratio:.1f} % of the budget ({worst.label})")
    met = pooled_pct([q.met_split for q in qos])
    short = pooled_pct([q.short_split for q in qos])
    met_intervals = sum(c for _, c in (q.met_split for q in qos))
    report.check(f"where the coordinator's split met every target, nodes met theirs (strict violations <= "
                 f"{QOS_MET_LIMIT_PCT:g} % of intervals, pooled over nodes)",
                 met_intervals > 0 and met <= QOS_MET_LIMIT_PCT,
                 f"{met:.1f} % of {met_intervals:,} node-intervals after rounds that met every target")
    report.check("a tighter budget costs QoS: more violations where the split fell short of some target",
                 not math.isnan(short) and short > met,
                 f"{short:.1f} % where it fell short vs {met:.1f} % where it met every target")
    report.check("the budget binds: every phase's budget is below the measured unconstrained cluster power",
                 all(p.budget_w < run.unconstrained_w for p in spans),
                 f"budgets {', '.join(f'{p.budget_w:,.0f}' for p in spans)} W vs {run.unconstrained_w:,.0f} W")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (of 100 rounds or fewer, the p99 is the largest)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct * len(ordered) / 100)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
