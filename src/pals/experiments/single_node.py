"""single-node (paper Fig 7): five policies on one 4x A100 node, against the paper and two yardsticks.

Per model: Poisson load at `LOAD_FRACTION` of the Baseline's capacity (400 W, batch 64, saturating),
throughput target `TARGET_FRACTION` of that offered load, no power budget. Every seed (`SEEDS` of
them, from the given one) is a new offline profile, request stream and telemetry noise; within a
seed every policy serves the same stream on a fresh, warm node.

Two yardsticks per seed, both judged at PALS's own QoS (`MeetCriteria.no_worse_than`: no more
intervals violating the target than PALS had):

- the hindsight static optimum: every (cap, batch) of the grid run as a fixed configuration on the
  same stream; the best tokens/J among those that meet PALS's violations (`pals.runtime.hindsight`);
- the dynamic Oracle, allowed PALS's share of violating intervals: the best plan by the ground truth
  of the stream (`pals.control.policies.oracle`), at least the hindsight optimum by construction.

Figures are means over seeds with 95 % Student-t intervals; ratios are paired by seed (geometric
mean over models within a seed, then the interval over seeds: `pals.experiments.stats`). Verdicts
against the paper come from one rule (`pals.experiments.verdict`); checks hold only when the
interval supports them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pals.control.policies import PolicyOptions
from pals.experiments.common import ALL_MODELS, MOE_MODELS, WARMUP_S, Lab, geomean, plt, save_figure
from pals.experiments.report import Report, Table
from pals.experiments.stats import Estimate, at_least, mean_ci, not_below, ratio_ci
from pals.experiments.verdict import HINDSIGHT_SHARE_MIN, ratio_verdict
from pals.runtime.hindsight import MeetCriteria

POLICIES = ("baseline", "adaptive-cap", "adaptive-batch", "pals", "oracle")
LOAD_FRACTION = 0.5
TARGET_FRACTION = 0.95
SEEDS = 5
"""Seeds per model, quick and full (the quick mode shortens runs and takes fewer models, not fewer seeds)."""
QUICK_MODELS = ("Mixtral-8x7B", "Llama-2-7B")
QUICK_DURATION_S = 60.0
FULL_DURATION_S = 300.0
PAPER = {"pals": 1.26, "adaptive-batch": 1.14, "pals/oracle": 0.95}
"""The paper's Fig 7 figures: tokens/J over the Baseline's, and PALS's share of the Oracle's."""


@dataclass
class SeedRun:
    """One seed of one model: each policy's run summary figures and the hindsight optimum."""

    tokens_per_joule: dict[str, float]
    """Policy -> tokens per node joule (the headline)."""
    qos_violation_pct: dict[str, float]
    throughput_tps: dict[str, float]
    final_config: dict[str, str] = field(default_factory=dict)
    hindsight_tpj: float = float("nan")
    """The hindsight optimum's tokens per node joule (NaN: no configuration meets PALS's violations)."""
    hindsight_config: str = "-"
    hindsight_meeting: int = 0
    """How many grid configurations meet PALS's violations."""


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    out_dir = Path(out_dir)
    models = {m: ALL_MODELS[m] for m in QUICK_MODELS} if quick else dict(ALL_MODELS)
    duration_s = QUICK_DURATION_S if quick else FULL_DURATION_S
    seeds = [seed + k for k in range(SEEDS)]
    base = Lab(seed=seed, quick=quick, work_dir=out_dir / "profiles" / f"seed{seed}")
    loads = {m: LOAD_FRACTION * base.measure(m, tp, 400.0, 64).throughput_tps for m, tp in models.items()}
    measured: dict[str, list[SeedRun]] = {m: [] for m in models}
    hindsight_rows: list[list[Any]] = []
    for s in seeds:
        lab = base if s == seed else Lab(seed=s, quick=quick, work_dir=out_dir / "profiles" / f"seed{s}")
        for model, tp in models.items():
            run_, rows = _one_seed(lab, model, tp, loads[model], duration_s)
            measured[model].append(run_)
            hindsight_rows += [[model, s, *row] for row in rows]
    setup = {
        "node": "4x A100-SXM4-80GB (simulated)",
        "load": f"Poisson at {LOAD_FRACTION:.0%} of each model's Baseline capacity",
        "target": f"{TARGET_FRACTION:.0%} of the offered load",
        "duration per run": (f"{duration_s:.0f} s simulated after a {WARMUP_S:.0f} s warm-up during which every "
                             "policy and fixed configuration is already in force (the Oracle holds its plan's first "
                             "configuration)"),
        "control interval": "0.5 s",
        "seeds": f"{len(seeds)} ({seeds[0]}-{seeds[-1]}): profile, request stream and telemetry noise",
        "objective": "tokens per node joule",
    }
    return build_report(measured, out_dir, quick, setup, hindsight_rows).write(time.perf_counter() - start)


def _one_seed(lab: Lab, model: str, tp: int, load_tps: float, duration_s: float) -> tuple[SeedRun, list[list[Any]]]:
    """Every policy, the hindsight optimum and the Oracle on one seed's stream."""
    target_tps = TARGET_FRACTION * load_tps
    # Policies and fixed configurations are in force from the warm-up on (steady states are scored); the Oracle
    # holds its plan's first configuration through the warm-up (its truth: the fixed configurations' scored intervals).
    results = {p: lab.run(model, tp, p, load_tps, duration_s, target_tps=target_tps, policy_warmup=True)
               for p in POLICIES if p != "oracle"}
    pals = results["pals"].summary
    criteria = MeetCriteria.no_worse_than(pals)
    truth = lab.delivered_truth(model, tp, load_tps, duration_s)
    hindsight = lab.hindsight(model, tp, load_tps, duration_s, criteria, target_tps=target_tps, truth=truth,
                              policy_warmup=True)
    allowance = PolicyOptions(oracle_max_qos_violation_pct=pals["qos_violation_pct"])
    results["oracle"] = lab.run(model, tp, "oracle", load_tps, duration_s, target_tps=target_tps, options=allowance,
                                truth=truth, policy_warmup=True)
    best = hindsight.best
    seed_run = SeedRun(
        tokens_per_joule={p: r.summary["tokens_per_joule"] for p, r in results.items()},
        qos_violation_pct={p: r.summary["qos_violation_pct"] for p, r in results.items()},
        throughput_tps={p: r.summary["throughput_tps"] for p, r in results.items()},
        final_config={p: "{power_cap_w:g} W / {batch_cap}".format(**r.records[-1]["decision"]["config"])
                      for p, r in results.items()},
        hindsight_tpj=hindsight.best_value,
        hindsight_config="-" if best is None else f"{best.power_cap_w:g} W / {best.batch_cap}",
        hindsight_meeting=sum(r.meets for r in hindsight.rows),
    )
    rows = [[r.power_cap_w, r.batch_cap, r.tokens_per_joule, r.tokens_per_joule_gpu, r.throughput_tps,
             r.qos_violation_pct, r.budget_overshoot_pct, r.meets] for r in hindsight.rows]
    return seed_run, rows


# -- from numbers to a report (no runs below: tests feed constructed numbers) ---------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else float("nan")


def _ratio_over_models(measured: dict[str, list[SeedRun]], num, den) -> Estimate | None:
    """Per seed, the geometric mean over models of num(run) / den(run); the interval over seeds.

    Seeds where a ratio is undefined for every model are left out; None when no seed is left.
    """
    per_seed = []
    for k in range(len(next(iter(measured.values())))):
        ratios = [_ratio(num(runs[k]), den(runs[k])) for runs in measured.values()]
        ratios = [r for r in ratios if math.isfinite(r) and r > 0]
        if ratios:
            per_seed.append(geomean(ratios))
    return ratio_ci(per_seed) if per_seed else None


def estimates(measured: dict[str, list[SeedRun]]) -> dict[str, Estimate | None]:
    """The ratios the checks and verdicts rest on (all paired by seed)."""
    tpj = lambda p: (lambda r: r.tokens_per_joule[p])  # noqa: E731
    out: dict[str, Estimate | None] = {f"{p}/baseline": _ratio_over_models(measured, tpj(p), tpj("baseline"))
                                       for p in POLICIES}
    hind = lambda r: r.hindsight_tpj  # noqa: E731
    out["pals/oracle"] = _ratio_over_models(measured, tpj("pals"), tpj("oracle"))
    out["pals/hindsight"] = _ratio_over_models(measured, tpj("pals"), hind)
    out["oracle/hindsight"] = _ratio_over_models(measured, tpj("oracle"), hind)
    for other in ("baseline", "adaptive-batch", "adaptive-cap"):
        out[f"pals/{other}"] = _ratio_over_models(measured, tpj("pals"), tpj(other))
    return out


def violation_gap(measured: dict[str, list[SeedRun]], policy: str, other: str) -> Estimate:
    """Mean over seeds of (policy - other) QoS violations, averaged over models (percentage points)."""
    gaps = [sum(runs[k].qos_violation_pct[policy] - runs[k].qos_violation_pct[other] for runs in measured.values())
            / len(measured) for k in range(len(next(iter(measured.values()))))]
    return mean_ci(gaps)


def _text(est: Estimate | None, suffix: str = "x") -> str:
    return "undefined (no seed)" if est is None else est.describe("{:.3f}", suffix)


def build_report(measured: dict[str, list[SeedRun]], out_dir: Path, quick: bool, setup: dict[str, Any],
                 hindsight_rows: list[list[Any]] | None = None) -> Report:
    """The report of `measured` (model -> one `SeedRun` per seed): tables, figure, verdicts and checks."""
    report = Report("single-node", "Single node: Baseline, AdaptiveCap, AdaptiveBatch, PALS, Oracle (paper Fig 7)",
                    out_dir, quick)
    report.setup = dict(setup)
    est = estimates(measured)
    _tables(report, measured, est, hindsight_rows or [])
    _compare(report, est)
    _check(report, measured, est)
    _why_section(report, est)
    report.metrics = {
        "ratios": {k: None if v is None else v._asdict() for k, v in est.items()},
        "normalized_tokens_per_joule": {p: None if est[f"{p}/baseline"] is None else est[f"{p}/baseline"].mean
                                        for p in POLICIES},
        "mean_qos_violation_pct": {p: mean_ci([sum(r[k].qos_violation_pct[p] for r in measured.values()) / len(measured)
                                               for k in range(len(next(iter(measured.values()))))])._asdict()
                                   for p in POLICIES},
        "hindsight": {m: [{"tokens_per_joule": r.hindsight_tpj, "config": r.hindsight_config,
                           "meeting": r.hindsight_meeting} for r in runs] for m, runs in measured.items()},
        "seeds": len(next(iter(measured.values()))),
    }
    return report


def _tables(report: Report, measured: dict[str, list[SeedRun]], est: dict[str, Estimate | None],
            hindsight_rows: list[list[Any]]) -> None:
    sec = report.section("Tokens/J per model (mean over seeds, 95 % interval)")
    rows = []
    for model, runs in measured.items():
        base = [r.tokens_per_joule["baseline"] for r in runs]
        for p in POLICIES + ("hindsight",):
            values = [r.hindsight_tpj if p == "hindsight" else r.tokens_per_joule[p] for r in runs]
            finite = [v for v in values if math.isfinite(v)]
            vs_base = ratio_ci([v / b for v, b in zip(values, base) if math.isfinite(v)]) if finite else None
            viol = "-" if p == "hindsight" else mean_ci([r.qos_violation_pct[p] for r in runs]).describe("{:.2f}")
            last = ", ".join(sorted({r.hindsight_config if p == "hindsight" else r.final_config.get(p, "-") for r in runs}))
            rows.append([model, "MoE" if model in MOE_MODELS else "dense", p,
                         mean_ci(finite).describe("{:.4f}") if finite else "none meets", _text(vs_base), viol, last])
    report.table(sec, "per_model", ["model", "type", "policy", "tokens/J node", "vs baseline", "QoS violations %",
                                    "final configuration(s)"], rows,
                 "Each policy over the seeds; 'hindsight' is the best fixed configuration at PALS's violations")
    _figure(report, sec, measured)
    if hindsight_rows:
        # Hundreds of rows: written as tables/hindsight.csv only, named in the text rather than printed.
        report.tables.append(Table("hindsight", ["model", "seed", "cap W", "batch", "tokens/J node", "tokens/J GPU",
                                                 "throughput tok/s", "QoS violations %", "budget overshoot %",
                                                 "meets PALS's violations"], hindsight_rows))
        report.paragraph(sec, "The hindsight oracle's whole table (every fixed configuration on each seed's stream, "
                              "whether it meets PALS's violations) is in tables/hindsight.csv.")
    sec2 = report.section("Yardsticks (ratios paired by seed, geometric mean over models)")
    report.table(sec2, "ratios", ["ratio", "mean [95 % interval]"],
                 [[k, _text(v)] for k, v in est.items()])


def _figure(report: Report, sec, measured: dict[str, list[SeedRun]]) -> None:
    names = list(measured)
    fig, ax = plt().subplots(figsize=(9, 4.5))
    width = 0.14
    lowest = 1.0
    for i, p in enumerate(POLICIES + ("hindsight",)):
        means, errs = [], []
        for m in names:
            runs = measured[m]
            ratios = [(r.hindsight_tpj if p == "hindsight" else r.tokens_per_joule[p]) / r.tokens_per_joule["baseline"]
                      for r in runs]
            ratios = [x for x in ratios if math.isfinite(x) and x > 0]
            e = ratio_ci(ratios) if ratios else Estimate(float("nan"), float("nan"), float("nan"))
            means.append(e.mean)
            lowest = min(lowest, e.low if math.isfinite(e.low) else e.mean)
            errs.append([e.mean - e.low if math.isfinite(e.low) else 0.0, e.high - e.mean if math.isfinite(e.high) else 0.0])
        ax.bar([k + (i - 2.5) * width for k in range(len(names))], means, width, label=p,
               yerr=list(zip(*errs)) if errs else None, capsize=2)
    ax.axhline(1.0, color="k", lw=0.8)
    # Differences of a few per cent: the axis is zoomed on them (it does not start at zero).
    if math.isfinite(lowest):
        ax.set_ylim(bottom=max(0.0, lowest - 0.05))
    ax.set_xticks(range(len(names)), [n.replace("-", "-\n", 1) for n in names], fontsize=7)
    ax.set_ylabel("tokens/J (node) / Baseline's (ratio; axis zoomed)")
    ax.set_xlabel("model")
    ax.set_title("Fig 7: tokens per node joule over Baseline's, mean over seeds with 95 % interval")
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    save_figure(fig, report.figure_path("fig7_normalized_tpj"))
    report.image(sec, "fig7_normalized_tpj", "Fig 7: tokens/J normalized to Baseline (400 W, batch 64), 95 % intervals")


def _compare(report: Report, est: dict[str, Estimate | None]) -> None:
    """The paper's Fig 7 numbers beside ours; the verdict of each from the one rule."""
    def row(quantity: str, key: str, paper_text: str, paper: float | None, upper_bound: bool = False) -> None:
        value = est[key]
        verdict = "not comparable (undefined)" if value is None else str(ratio_verdict(value, paper, upper_bound=upper_bound))
        report.compare(quantity, paper_text, _text(value), verdict)

    row("PALS tokens/J vs Baseline (geometric mean of models)", "pals/baseline", "1.26x", PAPER["pals"])
    row("batch-only (AdaptiveBatch) vs Baseline", "adaptive-batch/baseline", "1.14x", PAPER["adaptive-batch"])
    row("cap-only (AdaptiveCap) vs Baseline", "adaptive-cap/baseline", "not given (below PALS)", None)
    row("PALS as share of the Oracle's tokens/J", "pals/oracle", "0.95x (95 %)", PAPER["pals/oracle"], upper_bound=True)
    row("PALS as share of the hindsight static optimum (at PALS's violations)", "pals/hindsight", "not in the paper",
        None, upper_bound=True)


def _check(report: Report, measured: dict[str, list[SeedRun]], est: dict[str, Estimate | None]) -> None:
    """The claims, each holding only when its interval supports it."""
    ordering = est["oracle/hindsight"]
    report.check("the Oracle reaches at least the hindsight static optimum (within noise)",
                 ordering is not None and not_below(ordering, 1.0), f"Oracle / hindsight {_text(ordering)}")
    bound = est["pals/oracle"]
    report.check("PALS does not exceed its upper bound, the Oracle, beyond noise",
                 bound is not None and not bound.low > 1.0, f"PALS / Oracle {_text(bound)}")
    share = est["pals/hindsight"]
    # Issue 12's bar is the mean over seeds (with the interval reported); whether the seeds' interval
    # itself supports it is the stricter, separate check (the hindsight optimum moves with PALS's own
    # violations on each seed, so its interval is wide).
    report.check(f"PALS reaches at least {HINDSIGHT_SHARE_MIN:.2f}x the hindsight optimum at no more violations "
                 "(mean over seeds)", share is not None and share.mean >= HINDSIGHT_SHARE_MIN,
                 f"PALS / hindsight {_text(share)}")
    report.check(f"the seeds' interval of PALS / hindsight lies at or above {HINDSIGHT_SHARE_MIN:.2f}x",
                 share is not None and at_least(share, HINDSIGHT_SHARE_MIN), f"PALS / hindsight {_text(share)}")
    for other in ("baseline", "adaptive-batch", "adaptive-cap"):
        ratio, gap = est[f"pals/{other}"], violation_gap(measured, "pals", other)
        ok = ratio is not None and not_below(ratio, 1.0) and not (gap.low > 0)
        report.check(f"PALS >= {other} on tokens/J at no more QoS violations (within noise)", ok,
                     f"PALS / {other} {_text(ratio)}; violations PALS - {other} {gap.describe('{:+.2f}')} points")


def _why_section(report: Report, est: dict[str, Estimate | None]) -> None:
    why = report.section("Why ours differ from the paper")
    batch, joint = est["adaptive-batch/baseline"], est["pals/adaptive-cap"]
    report.why(why, _batch_sentence(batch) + " " + _joint_sentence(joint) + (
        " The paper's 1.14x batch-only gain needs a regime where the batch cap itself sets the operating point "
        "(docs/calibration.md §7 S3a): the `slo` and `kv-pressure` experiments build two. Every learning policy "
        "observes the warm-up, so the figures score its steady state, as in the paper's hour-long runs. At this load "
        "QoS violations are few and come in bursts, so 'no more violations than PALS' admits or excludes the most "
        "efficient fixed configurations on a handful of intervals: the seeds' intervals say how much that moves "
        "the yardsticks."
    ))


def _covers_one(est: Estimate | None) -> bool:
    return est is not None and est.low <= 1.0 <= est.high


def _batch_sentence(batch: Estimate | None) -> str:
    if batch is None or math.isnan(batch.low):
        return f"AdaptiveBatch / Baseline is {_text(batch)}, without an interval to judge it by."
    if _covers_one(batch):
        return (f"At a Poisson load below capacity the batch cap does not bind: AdaptiveBatch / Baseline is "
                f"{_text(batch)}, an interval that holds 1 (the paper: 1.14x). The running batch is set by the "
                "arrivals, so a smaller batch cap only lowers capacity.")
    word = "gains" if batch.low > 1.0 else "loses"
    return (f"The batch cap binds at this load: AdaptiveBatch {word} against the Baseline ({_text(batch)}; the "
            "paper: 1.14x).")


def _joint_sentence(joint: Estimate | None) -> str:
    if joint is None or math.isnan(joint.low):
        return f"PALS / AdaptiveCap is {_text(joint)}, without an interval to judge it by."
    if _covers_one(joint):
        return (f"PALS and AdaptiveCap land together (PALS / AdaptiveCap {_text(joint)}): what a partly loaded node "
                "can save is power, decode being memory-bound, so the gain comes from the cap.")
    word = "above" if joint.low > 1.0 else "below"
    return f"PALS lands {word} AdaptiveCap (PALS / AdaptiveCap {_text(joint)}): the batch knob moved the result."
