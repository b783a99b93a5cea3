"""demand-response (paper Fig 10): three DeepSeek-MoE nodes follow a one-hour cluster power target.

The cluster power target has steps and ramps between the cluster's floor (every GPU at the paper
grid's lowest cap) and its top (the highest), measured under a saturating load, so throughput is
limited by power throughout. The target is split equally across the three identical nodes and
given to each node's loop as a `BudgetSchedule` (one step every few seconds on the ramps). Two
policies:

- cap-only, batch 64: H4's Baseline (batch fixed at 64; the cap is clamped to the budget);
- PALS: joint cap x batch, asked for more throughput than any budget allows (the node's
  unconstrained throughput), so it runs best-effort: the most throughput that fits the budget.

Below the cap floor: fixed node budgets (`BELOW_FLOOR_FRACTIONS`) under what one node draws with
every GPU at its lowest settable cap and batch 64, so the cap cannot get there and the batch cap is
the only lever left; each policy runs one node at each such budget, reported separately.

Each part also has a hindsight yardstick: every fixed (cap, batch) of a grid through the same loop
and budget guard under the same schedule or budget and streams, the best tokens per node joule at no
more budget overshoot than PALS (`pals.experiments.demand_hindsight`).

Every seed (`SEEDS` of them, from the given one) is a new offline profile, request streams and
telemetry noise. Figures are means over seeds with 95 % Student-t intervals; PALS / cap-only ratios
are paired by seed (`pals.experiments.stats`); verdicts against the paper come from one rule
(`pals.experiments.verdict`), checks hold only when the interval supports them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pals.control.budget import BudgetSchedule, BudgetStep
from pals.control.policies import PolicyOptions
from pals.control.types import Configuration
from pals.experiments.cluster_sim import ClusterNode, ClusterRun, run_cluster
from pals.experiments.common import ALL_MODELS, PAPER_BATCHES, PAPER_CAPS_W, Lab, plt, save_figure
from pals.experiments.demand_hindsight import (
    QUICK_BELOW_FLOOR_CAPS_W, QUICK_SCHEDULE_BATCHES, QUICK_SCHEDULE_CAPS_W, PartSeeds, below_floor_grid,
    report_yardstick, schedule_grid,
)
from pals.experiments.report import Report
from pals.experiments.stats import Estimate, mean_ci, not_below, paired_ratio_ci
from pals.experiments.verdict import ratio_verdict
from pals.runtime.hindsight import HindsightResult, MeetCriteria, hindsight_over

MODEL = "DeepSeek-MoE-16B"
NUM_NODES = 3
# (time as a fraction of the run, level as a fraction of the floor..top range); linear between
# points that share a "ramp" flag, steps otherwise.
SHAPE = (
    (0.00, 1.00, "step"), (0.12, 0.55, "step"), (0.25, 0.55, "ramp"), (0.40, 0.05, "ramp"),
    (0.52, 0.05, "step"), (0.55, 0.80, "step"), (0.65, 0.80, "ramp"), (0.80, 0.25, "ramp"),
    (0.90, 0.25, "step"), (0.92, 1.00, "step"),
)
POLICIES = {"cap-only": "baseline", "pals": "pals"}
"""Label -> policy name (cap-only: H4's Baseline at batch 64 with the cap clamped to the budget)."""
SEEDS = 5
"""Seeds, quick and full (the quick mode shortens runs, not seeds)."""
QUICK_DURATION_S, FULL_DURATION_S = 300.0, 3600.0
QUICK_STEP_S, FULL_STEP_S = 10.0, 30.0
"""One schedule step this long on the ramps. Units: s."""
SETTLE_S = 2.0
"""Intervals this soon after a change of the target are not judged for tracking. Units: s."""
OVER_TOLERANCE = 0.02
"""An interval is "over" the target when its power exceeds it by more than this fraction."""
OVERSHOOT_MAX_PCT = 3.0
"""A policy "stays within the power target" when its mean overshoot is at most this. Units: %."""
LEVEL_TOLERANCE = 0.02
"""PALS's throughput may fall this fraction below cap-only's at a level (beyond noise) before the check fails."""
LOW_LEVEL_MAX = 0.3
""""Low power targets": levels (0 = floor, 1 = top) at or below this."""
PAPER_LOW_GAIN = 1.22
"""The paper's Fig 10 figure: PALS's throughput over cap-only's at low power targets ("up to +22 %")."""
BELOW_FLOOR_FRACTIONS = (0.95, 0.85)
"""Node budgets below the cap floor, as fractions of the node power at the lowest cap with batch 64."""
QUICK_BELOW_FLOOR_S, FULL_BELOW_FLOOR_S = 30.0, 300.0


@dataclass
class BelowFloor:
    """One policy on one node at one budget below the cap floor."""

    budget_w: float
    throughput_tps: float
    mean_power_w: float
    """Mean node power over the run. Units: W."""
    tokens_per_joule: float
    batch_cap: float
    """Median batch cap over the run."""
    power_cap_w: float
    """Median power cap over the run. Units: W."""
    budget_overshoot_pct: float = 0.0
    """Share of budget intervals over the budget (the run summary's; the hindsight criterion). Units: %."""

    @property
    def over_budget_pct(self) -> float:
        """Mean node power above the budget (negative: below). Units: %."""
        return 100.0 * (self.mean_power_w / self.budget_w - 1.0)


@dataclass
class ResponseSeed:
    """One seed: both policies on the three-node schedule, and the below-floor runs."""

    throughput_tps: dict[str, float]
    """Label -> mean cluster throughput over the run. Units: tokens/s."""
    tokens_per_joule: dict[str, float]
    """Label -> cluster tokens per node joule (exact counters)."""
    tracking_error_pct: dict[str, float]
    """Label -> mean |power - target| / target over settled intervals. Units: %."""
    overshoot_pct: dict[str, float]
    """Label -> mean max(0, power / target - 1) over settled intervals. Units: %."""
    over_share_pct: dict[str, float]
    """Label -> share of settled intervals more than `OVER_TOLERANCE` over the target. Units: %."""
    by_level: dict[str, dict[float, float]]
    """Label -> target level (one decimal) -> mean settled cluster throughput. Units: tokens/s."""
    batch_by_level: dict[str, dict[float, float]]
    """Label -> target level -> median batch cap over the nodes' settled intervals."""
    low_throughput_tps: dict[str, float]
    """Label -> mean settled cluster throughput at levels up to `LOW_LEVEL_MAX`. Units: tokens/s."""
    below_floor: dict[float, dict[str, BelowFloor]] = field(default_factory=dict)
    """Budget fraction -> label -> the run."""
    seed: int = 0
    """The seed these runs used."""
    pals_budget_overshoot_pct: float = 0.0
    """PALS's share of budget intervals over the budget, mean over the nodes (the hindsight criterion). Units: %."""
    hindsight: HindsightResult | None = None
    """Every fixed configuration on the schedule, judged at PALS's overshoot (None: not measured)."""
    below_hindsight: dict[float, HindsightResult] = field(default_factory=dict)
    """Budget fraction -> every fixed configuration at that budget, judged at PALS's overshoot there."""


@dataclass
class Floors:
    """What one node draws and delivers at the floors (ground truth, noise-free)."""

    grid_floor_w: float
    """Node power with every GPU at the grid's lowest cap, batch 64 (the schedule's floor). Units: W."""
    top_w: float
    """Node power at the grid's highest cap, batch 64 (the schedule's top). Units: W."""
    top_tps: float
    lowest_cap_w: float
    """The GPUs' lowest settable power cap. Units: W."""
    at_lowest_cap_w: dict[int, float]
    """Batch cap -> node power with every GPU at the lowest settable cap. Units: W."""
    tps_at_grid_floor: dict[int, float]
    """Batch cap -> throughput at the grid's lowest cap. Units: tokens/s."""


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


def measure_floors(lab: Lab, tp: int) -> Floors:
    """The schedule's floor and top and the below-floor references, from noise-free runs."""
    floor_cap, top_cap = PAPER_CAPS_W[0], PAPER_CAPS_W[-1]
    lowest = lab.spec(MODEL, tp).gpu_spec.power_limit_min_w
    top = lab.measure(MODEL, tp, top_cap, max(PAPER_BATCHES))
    at_floor = {b: lab.measure(MODEL, tp, floor_cap, b) for b in PAPER_BATCHES}
    return Floors(grid_floor_w=at_floor[max(PAPER_BATCHES)].node_power_w, top_w=top.node_power_w,
                  top_tps=top.throughput_tps, lowest_cap_w=float(lowest),
                  at_lowest_cap_w={b: lab.measure(MODEL, tp, lowest, b).node_power_w for b in (1, max(PAPER_BATCHES))},
                  tps_at_grid_floor={b: m.throughput_tps for b, m in at_floor.items()})


def measure(out_dir: Path, quick: bool = False, seed: int = 0) -> tuple[list[ResponseSeed], Floors, dict[str, Any], Any]:
    """Every seed's runs: (per-seed figures, floors, setup, (the first seed's cluster runs, schedule))."""
    out_dir = Path(out_dir)
    tp = ALL_MODELS[MODEL]
    duration_s = QUICK_DURATION_S if quick else FULL_DURATION_S
    below_s = QUICK_BELOW_FLOOR_S if quick else FULL_BELOW_FLOOR_S
    seeds = [seed + k for k in range(SEEDS)]
    base = Lab(seed=seed, quick=quick, work_dir=out_dir / "profiles" / f"seed{seed}")
    floors = measure_floors(base, tp)
    schedule = _node_schedule(floors.grid_floor_w, floors.top_w, duration_s, QUICK_STEP_S if quick else FULL_STEP_S)
    budgets = {f: f * floors.at_lowest_cap_w[max(PAPER_BATCHES)] for f in BELOW_FLOOR_FRACTIONS}
    measured, first = [], None
    for s in seeds:
        lab = base if s == seed else Lab(seed=s, quick=quick, work_dir=out_dir / "profiles" / f"seed{s}")
        results = {label: _run_nodes(lab, tp, policy, schedule, floors.top_tps, duration_s)
                   for label, policy in POLICIES.items()}
        first = first or results
        one = _response_seed(results, schedule, floors)
        one.seed = s
        pals = cluster_summary(results["pals"], schedule, floors)
        one.pals_budget_overshoot_pct = pals["budget_overshoot_pct"]
        one.hindsight = _schedule_hindsight(lab, tp, schedule, floors, duration_s, quick, MeetCriteria(
            max_budget_overshoot_pct=one.pals_budget_overshoot_pct).serving(pals["throughput_tps"]))
        for frac, budget_w in budgets.items():
            one.below_floor[frac] = {label: _below_floor(lab, tp, policy, budget_w, floors.top_tps, below_s)
                                     for label, policy in POLICIES.items()}
            pals_below = one.below_floor[frac]["pals"]
            one.below_hindsight[frac] = _below_hindsight(lab, tp, budget_w, floors.top_tps, below_s, quick, MeetCriteria(
                max_budget_overshoot_pct=pals_below.budget_overshoot_pct).serving(pals_below.throughput_tps))
        measured.append(one)
    setup = {
        "nodes": f"{NUM_NODES} x (4x A100-SXM4-80GB), {MODEL} TP {tp}, saturating load",
        f"node power range ({PAPER_CAPS_W[0]:g} W .. {PAPER_CAPS_W[-1]:g} W caps, batch 64)":
            f"{floors.grid_floor_w:,.0f} .. {floors.top_w:,.0f} W",
        "duration": f"{duration_s:.0f} s simulated after a 30 s warm-up",
        "below the cap floor": f"one node, {below_s:.0f} s at each of "
                               + ", ".join(f"{b:,.0f} W" for b in budgets.values()),
        "seeds": f"{len(seeds)} ({seeds[0]}-{seeds[-1]}): profile, request streams and telemetry noise",
        "hindsight grid": _grid_words(quick),
    }
    return measured, floors, setup, (first, schedule)


def _grid_words(quick: bool) -> str:
    """The setup line of the hindsight grids (quick mode's reduced ones named)."""
    def listed(values) -> str:
        return ", ".join(f"{v:g}" for v in values)

    if not quick:
        return (f"the paper's {len(schedule_grid(False))} fixed configurations on the schedule and at each budget "
                "below the floor")
    return (f"quick mode, reduced: schedule {len(schedule_grid(True))} fixed configurations (caps "
            f"{listed(QUICK_SCHEDULE_CAPS_W)} W x batches {listed(QUICK_SCHEDULE_BATCHES)}); below the floor "
            f"{len(below_floor_grid(True))} (cap {listed(QUICK_BELOW_FLOOR_CAPS_W)} W x every paper batch); "
            "the paper's full grid for both in full mode")


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    measured, floors, setup, (first, schedule) = measure(out_dir, quick, seed)
    report = build_report(measured, floors, Path(out_dir), quick, setup)
    _figure(report, first, schedule)
    return report.write(time.perf_counter() - start)


def _node_schedule(node_floor_w: float, node_top_w: float, duration_s: float, step_s: float) -> BudgetSchedule:
    """Each node's share of the cluster target (`SHAPE` between floor and top), one step every `step_s`."""
    times = np.arange(0.0, duration_s, step_s)
    node_budget = [node_floor_w + level_at(t / duration_s) * (node_top_w - node_floor_w) for t in times]
    return BudgetSchedule(tuple(BudgetStep(float(t), float(b)) for t, b in zip(times, node_budget)), "node")


def _run_nodes(lab: Lab, tp: int, policy: str, schedule: BudgetSchedule, target_tps: float, duration_s: float,
               options: PolicyOptions = PolicyOptions()) -> ClusterRun:
    """`policy` on `NUM_NODES` nodes that follow `schedule` (each node its own stream and telemetry seed)."""
    nodes = []
    for i in range(NUM_NODES):
        node = lab.node(MODEL, tp, lab.workload(None, lab.seed + 7 + i), seed_offset=i)
        loop = lab.loop(node, lab.make_policy(policy, MODEL, tp, None, options=options), target_tps=target_tps,
                        schedule=schedule)
        nodes.append(ClusterNode(f"node{i}", node, loop))
    return run_cluster(nodes, duration_s)


def cluster_summary(res: ClusterRun, schedule: BudgetSchedule, floors: Floors) -> dict[str, float]:
    """A cluster run with the run-summary keys the hindsight sweep reads (`pals.runtime.hindsight`).

    Tokens per node joule from the exact counters and throughput as `ResponseSeed` has them; GPU
    tokens/J, strict QoS violations and budget overshoot from the nodes' loop summaries (energy-
    weighted, and the mean over the nodes).
    """
    nodes = list(res.summaries.values())
    tokens = sum(n["tokens_per_joule"] * n["energy_j"] for n in nodes)
    gpu_j = sum(n["gpu_energy_j"] for n in nodes)
    return {"tokens_per_joule": res.aggregate_tokens_per_joule,
            "tokens_per_joule_gpu": tokens / gpu_j if gpu_j > 0 else 0.0,
            "throughput_tps": float(_cluster_series(res, schedule, floors)["throughput_tps"].mean()),
            "qos_violation_pct": float(np.mean([n["qos_violation_pct"] for n in nodes])),
            "budget_overshoot_pct": float(np.mean([n["budget_overshoot_pct"] for n in nodes]))}


def _schedule_hindsight(lab: Lab, tp: int, schedule: BudgetSchedule, floors: Floors, duration_s: float, quick: bool,
                        criteria: MeetCriteria) -> HindsightResult:
    """Every fixed configuration of `schedule_grid` on the three nodes, the same schedule, target and streams."""
    def run_static(config: Configuration) -> dict[str, float]:
        res = _run_nodes(lab, tp, "static", schedule, floors.top_tps, duration_s, PolicyOptions(fixed=config))
        return cluster_summary(res, schedule, floors)

    return hindsight_over(schedule_grid(quick), run_static, criteria, "node", label=f"hindsight schedule seed {lab.seed}")


def _below_floor(lab: Lab, tp: int, policy: str, budget_w: float, target_tps: float, duration_s: float) -> BelowFloor:
    res = lab.run(MODEL, tp, policy, None, duration_s, target_tps=target_tps, budget_w=budget_w)
    samples = [r["sample"] for r in res.records if r.get("sample") is not None]
    return BelowFloor(budget_w=budget_w, throughput_tps=res.summary["throughput_tps"],
                      mean_power_w=res.summary["mean_power_w"], tokens_per_joule=res.summary["tokens_per_joule"],
                      batch_cap=float(np.median([s["batch_cap"] for s in samples])),
                      power_cap_w=float(np.median([s["power_cap_w"] for s in samples])),
                      budget_overshoot_pct=float(res.summary["budget_overshoot_pct"]))


def _below_hindsight(lab: Lab, tp: int, budget_w: float, target_tps: float, duration_s: float, quick: bool,
                     criteria: MeetCriteria) -> HindsightResult:
    """Every fixed configuration of `below_floor_grid` on one node at `budget_w`, as `_below_floor` runs PALS."""
    def run_static(config: Configuration) -> dict:
        return lab.run(MODEL, tp, "static", None, duration_s, target_tps=target_tps, budget_w=budget_w,
                       options=PolicyOptions(fixed=config)).summary

    return hindsight_over(below_floor_grid(quick), run_static, criteria, "node",
                          label=f"hindsight {budget_w:.0f} W seed {lab.seed}")


def _settled(t_rel: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Which intervals lie at least `SETTLE_S` after the latest change of the target."""
    changed = np.r_[True, np.abs(np.diff(target)) > 1e-6]
    settle = np.zeros_like(changed)
    last = -1e9
    for k, flag in enumerate(changed):
        if flag:
            last = t_rel[k]
        settle[k] = t_rel[k] - last >= SETTLE_S
    return settle


def _cluster_series(res: Any, schedule: BudgetSchedule, floors: Floors) -> dict[str, np.ndarray]:
    """Per interval: relative time, cluster target and power, throughput, batch caps, level, settled."""
    t_rel = res.times_s - res.times_s[0] if len(res.times_s) else res.times_s
    target = np.array([NUM_NODES * schedule.budget_at(max(0.0, t - 1e-9)).budget_w for t in t_rel])
    n = len(res.cluster_power_w)
    tput, batch = np.zeros(n), np.zeros((len(res.records), n))
    for j, recs in enumerate(res.records.values()):
        for k, rec in enumerate(recs[1:n + 1]):
            tput[k] += rec["sample"]["throughput_tps"]
            batch[j, k] = rec["sample"]["batch_cap"]
    levels = np.round((target / NUM_NODES - floors.grid_floor_w) / (floors.top_w - floors.grid_floor_w), 1)
    return {"t_s": t_rel, "target_w": target, "power_w": res.cluster_power_w, "throughput_tps": tput,
            "batch_cap": batch, "level": levels, "settled": _settled(t_rel, target)}


def _response_seed(results: dict[str, Any], schedule: BudgetSchedule, floors: Floors) -> ResponseSeed:
    """The schedule's figures of one seed."""
    out: dict[str, dict[str, Any]] = {k: {} for k in ("thr", "tpj", "err", "over", "share", "lv", "blv", "low")}
    for label, res in results.items():
        s = _cluster_series(res, schedule, floors)
        ok = s["settled"]
        rel = s["power_w"] / s["target_w"] - 1.0
        out["thr"][label] = float(s["throughput_tps"].mean())
        out["tpj"][label] = res.aggregate_tokens_per_joule
        out["err"][label] = 100 * float(np.abs(rel[ok]).mean())
        out["over"][label] = 100 * float(np.maximum(0.0, rel[ok]).mean())
        out["share"][label] = 100 * float((rel[ok] > OVER_TOLERANCE).mean())
        out["lv"][label] = {float(lv): float(s["throughput_tps"][ok & (s["level"] == lv)].mean())
                            for lv in np.unique(s["level"][ok])}
        out["blv"][label] = {float(lv): float(np.median(s["batch_cap"][:, ok & (s["level"] == lv)]))
                             for lv in np.unique(s["level"][ok])}
        low = ok & (s["level"] <= LOW_LEVEL_MAX + 1e-9)
        out["low"][label] = float(s["throughput_tps"][low].mean()) if low.any() else float("nan")
    return ResponseSeed(throughput_tps=out["thr"], tokens_per_joule=out["tpj"], tracking_error_pct=out["err"],
                        overshoot_pct=out["over"], over_share_pct=out["share"], by_level=out["lv"],
                        batch_by_level=out["blv"], low_throughput_tps=out["low"])


# -- from numbers to a report (no runs below: tests feed constructed or recorded numbers) -----------------


def _paired(a: list[float], b: list[float]) -> Estimate | None:
    """PALS / cap-only paired by seed over the seeds where both are finite and positive (None: none)."""
    pairs = [(x, y) for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0]
    return paired_ratio_ci([x for x, _ in pairs], [y for _, y in pairs]) if pairs else None


def levels(measured: list[ResponseSeed]) -> list[float]:
    """The target levels every seed measured for both policies."""
    common = None
    for s in measured:
        here = set(s.by_level["cap-only"]) & set(s.by_level["pals"])
        common = here if common is None else common & here
    return sorted(common or ())


def estimates(measured: list[ResponseSeed]) -> dict[str, Estimate | None]:
    """PALS / cap-only ratios the checks and verdicts rest on (all paired by seed)."""
    def pair(get) -> Estimate | None:
        return _paired([get(s, "pals") for s in measured], [get(s, "cap-only") for s in measured])

    out: dict[str, Estimate | None] = {
        "throughput": pair(lambda s, p: s.throughput_tps[p]),
        "tokens/J": pair(lambda s, p: s.tokens_per_joule[p]),
        "throughput at low targets": pair(lambda s, p: s.low_throughput_tps[p]),
    }
    for lv in levels(measured):
        out[f"throughput at level {lv:.1f}"] = pair(lambda s, p, lv=lv: s.by_level[p][lv])
    for frac in BELOW_FLOOR_FRACTIONS:
        if all(frac in s.below_floor for s in measured):
            out[f"throughput below the floor at {frac:.0%}"] = pair(lambda s, p, f=frac: s.below_floor[f][p].throughput_tps)
            out[f"tokens/J below the floor at {frac:.0%}"] = pair(lambda s, p, f=frac: s.below_floor[f][p].tokens_per_joule)
    return out


def power_figures(measured: list[ResponseSeed]) -> dict[str, dict[str, Estimate]]:
    """Label -> power figure -> mean over seeds with its interval (tracking error, overshoot, below-floor excess)."""
    out: dict[str, dict[str, Estimate]] = {}
    for label in POLICIES:
        fig = {"tracking error %": mean_ci([s.tracking_error_pct[label] for s in measured]),
               "mean overshoot %": mean_ci([s.overshoot_pct[label] for s in measured]),
               f"intervals > {OVER_TOLERANCE:.0%} over %": mean_ci([s.over_share_pct[label] for s in measured])}
        for frac in BELOW_FLOOR_FRACTIONS:
            if all(frac in s.below_floor for s in measured):
                fig[f"power over the budget below the floor at {frac:.0%} %"] = mean_ci(
                    [s.below_floor[frac][label].over_budget_pct for s in measured])
        out[label] = fig
    return out


def _text(est: Estimate | None, fmt: str = "{:.3f}", suffix: str = "x") -> str:
    return "undefined (no seed)" if est is None else est.describe(fmt, suffix)


def build_report(measured: list[ResponseSeed], floors: Floors, out_dir: Path, quick: bool,
                 setup: dict[str, Any]) -> Report:
    """The report of `measured` (one `ResponseSeed` per seed): tables, verdicts and checks (figure: `run`)."""
    report = Report("demand-response", "Demand response: three DeepSeek-MoE nodes follow a power target (paper Fig 10)",
                    out_dir, quick)
    report.intro.append(__doc__.split("\n\n", 1)[1])
    report.setup = dict(setup)
    est, power = estimates(measured), power_figures(measured)
    _tables(report, measured, est, power)
    _compare(report, est, power)
    _check(report, est, power)
    parts = yardstick_parts(measured)
    yardstick = report_yardstick(report, parts, [s.seed for s in measured]) if parts else {}
    _why_section(report, measured, floors, est, power)
    report.metrics = {
        "ratios": {k: None if v is None else v._asdict() for k, v in est.items()},
        "power": {label: {k: v._asdict() for k, v in figs.items()} for label, figs in power.items()},
        "throughput_tps": {p: mean_ci([s.throughput_tps[p] for s in measured])._asdict() for p in POLICIES},
        "floors": vars(floors),
        "seeds": len(measured),
        "hindsight": yardstick,
    }
    return report


def yardstick_parts(measured: list[ResponseSeed]) -> list[PartSeeds]:
    """PALS and the hindsight sweeps of each part every seed measured (the schedule, each budget below the floor)."""
    parts = []
    if measured and all(s.hindsight is not None for s in measured):
        parts.append(PartSeeds("power-target schedule", [s.throughput_tps["pals"] for s in measured],
                               [s.tokens_per_joule["pals"] for s in measured],
                               [s.pals_budget_overshoot_pct for s in measured], [s.hindsight for s in measured]))
    for frac in BELOW_FLOOR_FRACTIONS:
        if measured and all(frac in s.below_hindsight for s in measured):
            pals = [s.below_floor[frac]["pals"] for s in measured]
            parts.append(PartSeeds(f"below the floor at {frac:.0%}", [p.throughput_tps for p in pals],
                                   [p.tokens_per_joule for p in pals], [p.budget_overshoot_pct for p in pals],
                                   [s.below_hindsight[frac] for s in measured]))
    return parts


def _tables(report: Report, measured: list[ResponseSeed], est: dict[str, Estimate | None],
            power: dict[str, dict[str, Estimate]]) -> None:
    sec = report.section("Power tracking and throughput over the schedule (mean over seeds, 95 % interval)")
    keys = [k for k in power["pals"] if "below the floor" not in k]
    rows = [[label, *(power[label][k].describe("{:.2f}") for k in keys),
             mean_ci([s.throughput_tps[label] for s in measured]).describe("{:,.0f}"),
             mean_ci([s.tokens_per_joule[label] for s in measured]).describe("{:.4f}")] for label in POLICIES]
    report.table(sec, "tracking", ["policy", *keys, "cluster throughput tok/s", "tokens/J node"], rows)
    rows = [[lv, mean_ci([s.by_level["cap-only"][lv] for s in measured]).describe("{:,.0f}"),
             mean_ci([s.by_level["pals"][lv] for s in measured]).describe("{:,.0f}"),
             f"{np.median([s.batch_by_level['pals'][lv] for s in measured]):g}",
             _text(est[f"throughput at level {lv:.1f}"])] for lv in levels(measured)]
    report.table(sec, "by_level", ["target level (0 = floor, 1 = top)", "cap-only tok/s", "PALS tok/s",
                                   "PALS median batch cap", "PALS / cap-only"], rows,
                 "Settled intervals per target level, cluster throughput")
    sec2 = report.section("Below the cap floor: one node, the batch cap the only lever left")
    rows = []
    for frac in BELOW_FLOOR_FRACTIONS:
        runs = [s.below_floor[frac] for s in measured if frac in s.below_floor]
        if not runs:
            continue
        for label in POLICIES:
            got = [r[label] for r in runs]
            rows.append([f"{frac:.0%}", f"{got[0].budget_w:,.0f}", label,
                         mean_ci([g.throughput_tps for g in got]).describe("{:,.0f}"),
                         mean_ci([g.over_budget_pct for g in got]).describe("{:+.2f}"),
                         mean_ci([g.tokens_per_joule for g in got]).describe("{:.4f}"),
                         f"{np.median([g.power_cap_w for g in got]):g}", f"{np.median([g.batch_cap for g in got]):g}"])
    report.table(sec2, "below_floor", ["budget (share of the floor)", "node budget W", "policy", "throughput tok/s",
                                       "mean power over budget %", "tokens/J node", "median cap W", "median batch cap"],
                 rows, "Fixed node budgets under the node's power at the lowest cap with batch 64")
    report.table(sec2, "ratios", ["PALS / cap-only", "mean [95 % interval]"], [[k, _text(v)] for k, v in est.items()])


def _figure(report: Report, results: dict[str, Any], schedule: BudgetSchedule) -> None:
    """Fig 10 from the first seed's runs."""
    sec = report.section("Power and throughput over time (first seed)")
    fig, axes = plt().subplots(2, 1, figsize=(9, 5), sharex=True)
    for label, res in results.items():
        t_rel = res.times_s - res.times_s[0] if len(res.times_s) else res.times_s
        tput = np.zeros(len(res.cluster_power_w))
        for recs in res.records.values():
            for k, rec in enumerate(recs[1:len(tput) + 1]):
                tput[k] += rec["sample"]["throughput_tps"]
        axes[0].plot(t_rel, res.cluster_power_w, lw=0.7, label=f"{label}: measured")
        axes[1].plot(t_rel, tput, lw=0.7, label=label)
        if label == "pals":
            target = [NUM_NODES * schedule.budget_at(max(0.0, t - 1e-9)).budget_w for t in t_rel]
            axes[0].plot(t_rel, target, color="k", ls="--", lw=0.8, label="cluster power target")
    axes[0].set_ylabel("cluster power (W)")
    axes[0].legend(fontsize=7)
    axes[1].set_ylabel("throughput (tok/s)")
    axes[1].set_xlabel("time (s)")
    axes[1].legend(fontsize=7)
    fig.suptitle("Fig 10: three nodes following a cluster power target (first seed)", fontsize=9)
    save_figure(fig, report.figure_path("fig10_demand_response"))
    report.image(sec, "fig10_demand_response", "Fig 10: cluster power against the target, and throughput")


def stays_within(power: dict[str, dict[str, Estimate]], label: str) -> bool:
    """`label` stays within the power target: the upper end of its mean overshoot's interval is within the bar."""
    e = power[label]["mean overshoot %"]
    return bool((e.high if math.isfinite(e.high) else e.mean) <= OVERSHOOT_MAX_PCT)


def best_level(est: dict[str, Estimate | None]) -> str | None:
    """The per-level key with the highest mean PALS / cap-only throughput (None: no level)."""
    keys = [k for k in est if k.startswith("throughput at level ") and est[k] is not None]
    return max(keys, key=lambda k: est[k].mean) if keys else None


def _compare(report: Report, est: dict[str, Estimate | None], power: dict[str, dict[str, Estimate]]) -> None:
    """The paper's Fig 10 claims beside ours; each verdict from the rule (or, for the qualitative one, a check)."""
    def row(quantity: str, key: str | None, paper_text: str, paper: float | None) -> None:
        value = None if key is None else est[key]
        verdict = "not comparable (undefined)" if value is None else str(ratio_verdict(value, paper))
        report.compare(quantity, paper_text, _text(value), verdict)

    row(f"PALS throughput over cap-only at low power targets (levels <= {LOW_LEVEL_MAX:g})", "throughput at low targets",
        f"up to +{100 * (PAPER_LOW_GAIN - 1):.0f} %", PAPER_LOW_GAIN)
    best = best_level(est)
    row(f"... at the level where PALS gains most ({'none' if best is None else best.removeprefix('throughput at ')}; "
        "picked after the fact)", best, f"up to +{100 * (PAPER_LOW_GAIN - 1):.0f} %", PAPER_LOW_GAIN)
    both = all(stays_within(power, label) for label in POLICIES)
    report.compare("both track the power target", "yes (qualitative)",
                   "; ".join(f"{label}: mean overshoot {power[label]['mean overshoot %'].describe('{:.2f}', ' %')}, "
                             f"abs. error {power[label]['tracking error %'].describe('{:.2f}', ' %')}" for label in POLICIES),
                   "matches (the intervals support it)" if both else "differs (an interval does not support it)")
    row("PALS aggregate throughput over cap-only over the run", "throughput", "not given", None)
    for frac in BELOW_FLOOR_FRACTIONS:
        key = f"throughput below the floor at {frac:.0%}"
        if key in est:
            row(f"PALS throughput over cap-only below the cap floor ({frac:.0%} of the floor)", key, "not given", None)


def _check(report: Report, est: dict[str, Estimate | None], power: dict[str, dict[str, Estimate]]) -> None:
    """The claims, each holding only when its interval supports it."""
    for label in POLICIES:
        e = power[label]["mean overshoot %"]
        report.check(f"{label} stays within the power target (mean overshoot <= {OVERSHOOT_MAX_PCT:g} %)",
                     stays_within(power, label), f"mean overshoot {e.describe('{:.2f}', ' %')}, "
                     f"abs. error {power[label]['tracking error %'].describe('{:.2f}', ' %')}")
    per_level = {k: v for k, v in est.items() if k.startswith("throughput at level ")}
    failing = [k for k, v in per_level.items() if v is None or not not_below(v, 1.0 - LEVEL_TOLERANCE)]
    worst = min((k for k in per_level if per_level[k] is not None), key=lambda k: per_level[k].mean, default=None)
    report.check(f"PALS throughput >= cap-only's at every power-target level (within {LEVEL_TOLERANCE:.0%} and noise)",
                 bool(per_level) and not failing,
                 "no level" if worst is None else f"lowest {worst.removeprefix('throughput at ')}: {_text(per_level[worst])}"
                 + (f"; below: {', '.join(failing)}" if failing else ""))
    for frac in BELOW_FLOOR_FRACTIONS:
        ratio = est.get(f"throughput below the floor at {frac:.0%}")
        key = f"power over the budget below the floor at {frac:.0%} %"
        if ratio is None or key not in power["pals"]:
            continue
        pals, cap = power["pals"][key], power["cap-only"][key]
        no_more = not (pals.low > cap.high)
        report.check(f"below the cap floor ({frac:.0%}) PALS delivers at least cap-only's throughput (within noise) "
                     "at no more power over the budget", not_below(ratio, 1.0) and no_more,
                     f"PALS / cap-only {_text(ratio)}; over the budget: PALS {pals.describe('{:+.2f}', ' %')}, "
                     f"cap-only {cap.describe('{:+.2f}', ' %')}")


def _batch_lever_words(floors: Floors, measured: list[ResponseSeed], est: dict[str, Estimate | None],
                       power: dict[str, dict[str, Estimate]]) -> str:
    """Below the floor: whether a smaller batch lowers the node's power at the lowest cap (the lever binds)."""
    small, large = floors.at_lowest_cap_w[1], floors.at_lowest_cap_w[max(PAPER_BATCHES)]
    fracs = [f for f in BELOW_FLOOR_FRACTIONS if f"throughput below the floor at {f:.0%}" in est]
    def over(f: float, label: str) -> str:
        return power[label][f"power over the budget below the floor at {f:.0%} %"].describe("{:+.1f}", " %")

    over_words = "; ".join(f"at {f:.0%} of the floor PALS {over(f, 'pals')} and cap-only {over(f, 'cap-only')} over "
                           f"the budget, PALS / cap-only throughput {_text(est[f'throughput below the floor at {f:.0%}'])}"
                           for f in fracs)
    if abs(large - small) <= 0.01 * large:
        return (f"Below the cap floor the batch cap does not bind either: with every GPU at the lowest cap "
                f"({floors.lowest_cap_w:g} W) a node draws {small:,.0f} W at batch 1 and {large:,.0f} W at batch "
                f"{max(PAPER_BATCHES)} (the cap pins the GPUs' power whatever the batch), so no configuration meets "
                f"those budgets and both policies overshoot: {over_words}.")
    return (f"Below the cap floor a smaller batch lowers the node's power at the lowest cap ({floors.lowest_cap_w:g} W) "
            f"from {large:,.0f} W (batch {max(PAPER_BATCHES)}) to {small:,.0f} W (batch 1), so the batch cap is the "
            f"lever left: {over_words}.")


def _why_section(report: Report, measured: list[ResponseSeed], floors: Floors, est: dict[str, Estimate | None],
                 power: dict[str, dict[str, Estimate]]) -> None:
    why = report.section("Why ours differ from the paper")
    tps = floors.tps_at_grid_floor
    best_batch = max(tps, key=tps.get)
    low_levels = [lv for lv in levels(measured) if lv <= LOW_LEVEL_MAX + 1e-9]
    batches = sorted({float(np.median([s.batch_by_level["pals"][lv] for s in measured])) for lv in low_levels})
    batch_words = (f"PALS kept the batch cap at {', '.join(f'{b:g}' for b in batches)} at the low levels"
                   if batches else "no low level was measured")
    low = est["throughput at low targets"]
    binds = best_batch != max(PAPER_BATCHES)
    knob = (f"at the lowest grid cap ({PAPER_CAPS_W[0]:g} W) batch {best_batch} gives the most throughput "
            f"({tps[best_batch]:,.0f} tok/s against {tps[max(PAPER_BATCHES)]:,.0f} at batch {max(PAPER_BATCHES)}), so "
            "a smaller batch can pay at low targets" if binds else
            f"at the lowest grid cap ({PAPER_CAPS_W[0]:g} W) batch {max(PAPER_BATCHES)} still gives the most throughput "
            f"({tps[best_batch]:,.0f} tok/s; the next, batch {sorted(tps)[-2]}, {tps[sorted(tps)[-2]]:,.0f}), so within "
            "the schedule's range the batch cap does not bind and PALS has nothing to gain over cap-only")
    report.why(why, (
        f"The paper's +{100 * (PAPER_LOW_GAIN - 1):.0f} % at low targets needs batch {max(PAPER_BATCHES)} to be "
        f"the wrong choice at a low cap. In the simulator {knob}. {batch_words}, and its throughput at the low levels "
        f"is {_text(low)} cap-only's. The schedule spans a node's {floors.grid_floor_w:,.0f}-{floors.top_w:,.0f} W. "
        f"{_batch_lever_words(floors, measured, est, power)}"
    ))
