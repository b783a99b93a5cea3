"""slo (issue 12): a TPOT p99 SLO the Baseline breaks, where both knobs bind.

Per model (`QUICK_MODELS`, and `FULL_MODELS` in full mode) on one simulated 4x A100 node under a
saturating load (requests always waiting, the experiments' request lengths): the Baseline (400 W,
batch 64) runs full batches whose p99 time per output token is above the model's objective in
`SLO_TPOT_MS`. PALS gets the SLO and a latency model fitted on its own offline profile's latency
columns (`pals.model.latency.LatencyPredictor`), so it drops candidates predicted to break it and
maximises tokens per node joule among the rest. The yardstick is the hindsight static optimum: every
(cap, batch) of the grid held fixed on the same stream, the best tokens/J among those with no more
SLO (and throughput-target) violations than PALS had (`MeetCriteria.no_worse_than`).

A second scenario, where adapting pays (`STEP_PHASES`): Mixtral-8x7B under a Poisson load that steps
between a peak and a lull (`pals.experiments.varying_load`), with a throughput target that follows
the offered load (`TARGET_SHARE` of each phase's rate) and the same SLO. A fixed configuration must
be sized for the peak; PALS can lower its cap in the lulls. There PALS runs with its partial-batch
model (`ModelGuidedConfig.partial_batch` = `STEP_PARTIAL_BATCH`: below capacity the engine keeps
stepping with the batch the demand fills, at that batch's power and per-token time) and its online
latency residual applied (`learn_latency`); both are off by default. Its yardstick is the best
fixed configuration with no more SLO violations than PALS and no more QoS violations than PALS or
`STEP_QOS_ALLOWANCE_PCT`, whichever is larger.

Every run is judged after `SETTLE_S` of control (`pals.experiments.judged`): the node's latency
window still shows the starting configuration before that. A run *meets* the SLO when its
run-level p99 TPOT is at most the objective and at most `SLO_MET_MAX_VIOLATION_PCT` of its
intervals broke it; it *breaks* it when either is above beyond noise. `SEEDS` seeds (profile,
stream, telemetry noise); means with 95 % Student-t intervals, ratios paired by seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pals.control.policies import PolicyOptions
from pals.control.policies.config import ModelGuidedConfig
from pals.control.slo import Slo
from pals.experiments.common import WARMUP_S, Lab, plt, save_figure
from pals.experiments.judged import (
    HINDSIGHT_COLUMNS, LABELS, Measured, estimate, hindsight_rows, judged_hindsight, judged_run, paired_ratio,
    seed_tables, text, tpj_figure,
)
from pals.experiments.report import Report, Section, Table
from pals.experiments.stats import Estimate
from pals.experiments.varying_load import TARGET_SHARE, RatePhase, StepPoissonWorkload, run_following
from pals.experiments.verdict import HINDSIGHT_SHARE_MIN, ratio_verdict
from pals.model.latency import LatencyPredictor
from pals.runtime.hindsight import MeetCriteria

QUICK_MODELS: dict[str, int] = {"Mixtral-8x7B": 4}
"""Model -> TP degree in quick mode (4x A100, one replica)."""
FULL_MODELS: dict[str, int] = {"Mixtral-8x7B": 4, "Mistral-7B": 1}
"""Full mode adds a dense model (TP 1: four replicas)."""
SLO_TPOT_MS: dict[str, float] = {"Mixtral-8x7B": 28.0, "Mistral-7B": 40.0}
"""Each model's TPOT p99 objective: below what the Baseline's full batches give, above what smaller
batches give at high caps (the grid's TPOT is in tables/hindsight.csv). Units: ms."""
SLO_MET_MAX_VIOLATION_PCT = 10.0
"""A run meets the SLO only if at most this share of its intervals broke it. Units: %."""
SEEDS = 5
QUICK_DURATION_S = 120.0
FULL_DURATION_S = 300.0
SETTLE_S = 30.0
"""Control time left out of every judged figure: the simulated node's latency window (`SimNode`'s
`latency_window_s`), so the judged TPOT is the policy's own. Units: s."""
PAPER_PALS_OVER_BASELINE = 1.26
"""The paper's Fig 7 PALS tokens/J over the Baseline's (no SLO there)."""
STEP_MODEL, STEP_TP = "Mixtral-8x7B", 4
"""The step-load scenario's deployment."""
STEP_PHASES: tuple[tuple[float, float], ...] = ((20.0, 2000.0), (100.0, 400.0))
"""The step load's repeating pattern, (duration s, offered output tokens/s): short peaks near the Baseline's
capacity, long lulls. In a peak the Baseline's batches grow past 50 sequences and its TPOT p99 breaks the
objective; no configuration that keeps the SLO serves the peak (batch 32 at 300-400 W runs out of capacity, the
queue drains in the lull), so every SLO-keeping policy misses the peak's target alike. In the lull a batch of 16
at 250 W keeps up within the SLO, where a fixed configuration must hold the cap the peak needs."""
STEP_LABEL = f"{STEP_MODEL}, step load"
"""The step-load scenario's name in tables, checks and metrics."""
QUICK_STEP_DURATION_S = 240.0
FULL_STEP_DURATION_S = 480.0
STEP_QOS_ALLOWANCE_PCT = 5.0
"""A fixed configuration meets the step load's target with QoS violations up to this share (or PALS's, if
more): every configuration misses each rise of the target for the seconds its queue takes to clear. Units: %."""
STEP_PARTIAL_BATCH = 0.0
"""`ModelGuidedConfig.partial_batch` of PALS in the step-load scenario (the default: the SLO tested at the
batch cap). On an earlier pattern (60 s at 1,200 tok/s, 60 s at 400), at 1 (tested at the batch the demand
fills) PALS beat the best fixed configuration, 1.024x [1.008, 1.040] in quick mode, but its own TPOT p99 sat on
the objective (27.4 ms [26.3, 28.5] against 28 ms): each rise of the load fills the batch before the selection
re-runs."""


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    out_dir = Path(out_dir)
    models = QUICK_MODELS if quick else FULL_MODELS
    duration_s = QUICK_DURATION_S if quick else FULL_DURATION_S
    seeds = [seed + k for k in range(SEEDS)]
    step_s = QUICK_STEP_DURATION_S if quick else FULL_STEP_DURATION_S
    measured: Measured = {m: [] for m in models}
    step: Measured = {STEP_LABEL: []}
    step_caps: list[tuple[float, float]] = []
    rows: list[list[Any]] = []
    step_rows: list[list[Any]] = []
    for s in seeds:
        # Profiles always with the full-length windows: a quick profile's latency columns still hold the
        # cold start (the node's latency window outlasts its warm-up), and overstate TPOT.
        lab = Lab(seed=s, quick=False, work_dir=out_dir / "profiles" / f"seed{s}")
        for model, tp in models.items():
            per_seed, table = one_seed(lab, model, tp, duration_s)
            measured[model].append(per_seed)
            rows += table
        per_seed, table, caps = step_seed(lab, step_s)
        step[STEP_LABEL].append(per_seed)
        step_rows += table
        step_caps.append(caps)
    setup = {
        "node": "4x A100-SXM4-80GB (simulated)",
        "load": f"saturating (requests always waiting), {lab.lengths.label()} prompt / output tokens",
        "SLO": "; ".join(f"{m}: TPOT p99 <= {SLO_TPOT_MS[m]:g} ms" for m in models),
        "duration per run": f"{duration_s:.0f} s simulated after a {WARMUP_S:.0f} s warm-up, judged after {SETTLE_S:.0f} s",
        "seeds": f"{len(seeds)} ({seeds[0]}-{seeds[-1]}): profile, request stream and telemetry noise",
        "objective": "tokens per node joule",
        "step load": (f"{STEP_MODEL}: Poisson, " + ", then ".join(f"{r:.0f} tok/s for {d:.0f} s" for d, r in STEP_PHASES)
                      + f", repeating; target {TARGET_SHARE:.0%} of the offered rate; {step_s:.0f} s per run; PALS with "
                      f"partial_batch = {STEP_PARTIAL_BATCH:g} and the latency residual applied"),
    }
    report = build_report(measured, seeds, out_dir, quick, setup, rows)
    step_section(report, step, seeds, step_rows, step_caps)
    return report.write(time.perf_counter() - start)


def one_seed(lab: Lab, model: str, tp: int, duration_s: float):
    """Baseline, PALS (with the SLO and its latency model) and the hindsight optimum on one seed's stream."""
    slo = Slo(tpot_ms=SLO_TPOT_MS[model])
    latency = LatencyPredictor().fit(lab.profile(model, tp, None))
    out = {}
    _, out["baseline"] = judged_run(lab, model, tp, "baseline", duration_s, SETTLE_S, slo=slo)
    pals_summary, out["pals"] = judged_run(lab, model, tp, "pals", duration_s, SETTLE_S, slo=slo,
                                           latency_model=latency)
    result, best = judged_hindsight(lab, model, tp, duration_s, SETTLE_S, MeetCriteria.no_worse_than(pals_summary),
                                    slo=slo)
    if best is not None:
        out["hindsight"] = best
    return out, hindsight_rows(model, lab.seed, result)


def _tune_pals(policy: Any) -> None:
    """PALS of the step-load scenario: the partial-batch model and the latency residual applied."""
    policy.config = replace(policy.config, partial_batch=STEP_PARTIAL_BATCH)
    policy.learn_latency = True


def step_seed(lab: Lab, duration_s: float):
    """Baseline, PALS and the hindsight optimum on one seed's step load: (figures, hindsight rows,
    PALS's mean cap in the lulls and in the peaks over the judged part)."""
    slo = Slo(tpot_ms=SLO_TPOT_MS[STEP_MODEL])
    latency = LatencyPredictor().fit(lab.profile(STEP_MODEL, STEP_TP, None))
    prompt, output = lab.lengths.distributions()
    phases = [RatePhase(d, r) for d, r in STEP_PHASES]
    last: list[Any] = []

    def runner(policy: str, duration_s: float, *, slo=None, latency_model=None, options=PolicyOptions()):
        workload = StepPoissonWorkload(phases, prompt, output, seed=lab.seed + 7)
        last[:] = [run_following(lab, STEP_MODEL, STEP_TP, policy, workload, duration_s, slo=slo,
                                 latency_model=latency_model, options=options,
                                 tune=_tune_pals if policy == "pals" else None), workload]
        return last[0]

    out = {}
    _, out["baseline"] = judged_run(lab, STEP_MODEL, STEP_TP, "baseline", duration_s, SETTLE_S, slo=slo, runner=runner)
    pals_summary, out["pals"] = judged_run(lab, STEP_MODEL, STEP_TP, "pals", duration_s, SETTLE_S, slo=slo,
                                           latency_model=latency, runner=runner)
    caps = _phase_caps(*last)
    criteria = MeetCriteria(max_qos_violation_pct=max(float(pals_summary["qos_violation_pct"]), STEP_QOS_ALLOWANCE_PCT),
                            max_slo_violation_pct=float(pals_summary["slo_violation_pct"]))
    result, best = judged_hindsight(lab, STEP_MODEL, STEP_TP, duration_s, SETTLE_S, criteria, slo=slo, runner=runner)
    if best is not None:
        out["hindsight"] = best
    return out, hindsight_rows(STEP_LABEL, lab.seed, result), caps


def _phase_caps(result, workload: StepPoissonWorkload) -> tuple[float, float]:
    """(mean cap in the lulls, mean cap in the peaks) of a run's judged part, by the phase in force. Units: W."""
    lull, peak = min(r for _, r in STEP_PHASES), max(r for _, r in STEP_PHASES)
    by_rate: dict[float, list[float]] = {lull: [], peak: []}
    for rec in result.records:
        if rec["t_s"] >= SETTLE_S and rec.get("sample") is not None:
            rate = workload.offered_tps_at(WARMUP_S + rec["t_s"])
            if rate in by_rate:
                by_rate[rate].append(float(rec["sample"]["power_cap_w"]))
    mean = {k: (sum(v) / len(v) if v else math.nan) for k, v in by_rate.items()}
    return mean[lull], mean[peak]


# -- from numbers to a report (no runs below: tests feed constructed numbers) ---------------------------


def slo_state(runs, label: str, slo_ms: float) -> str:
    """'meets', 'breaks' or 'undecided' for `label`'s runs against `slo_ms` (module docstring), from the intervals."""
    tpot, viol = estimate(runs, label, "tpot_p99_ms"), estimate(runs, label, "slo_violation_pct")
    if tpot is None or viol is None:
        return "undecided"

    def upper(e: Estimate) -> float:
        return e.high if math.isfinite(e.high) else e.mean

    def lower(e: Estimate) -> float:
        return e.low if math.isfinite(e.low) else e.mean

    if upper(tpot) <= slo_ms and upper(viol) <= SLO_MET_MAX_VIOLATION_PCT:
        return "meets"
    if lower(tpot) > slo_ms or lower(viol) > SLO_MET_MAX_VIOLATION_PCT:
        return "breaks"
    return "undecided"


def ratio_word(est: Estimate | None) -> str:
    """'higher', 'lower' or 'within noise of' from a ratio's interval."""
    if est is None:
        return "not comparable to"
    if est.low > 1.0:
        return "higher than"
    if est.high < 1.0:
        return "lower than"
    return "within noise of"


def build_report(measured: Measured, seeds: list[int], out_dir: Path, quick: bool, setup: dict[str, Any],
                 hindsight_table: list[list[Any]] | None = None) -> Report:
    """The report of `measured` (model -> per seed: label -> figures): tables, figures, comparisons and checks."""
    report = Report("slo", "Latency SLO: PALS against the Baseline and the best static configuration meeting it",
                    out_dir, quick)
    report.setup = dict(setup)
    sec = report.section("Runs per seed and means (judged part)")
    seed_tables(report, sec, measured, seeds, ("tokens_per_joule", "tpot_p99_ms", "slo_violation_pct",
                                               "throughput_tps"))
    if hindsight_table:
        report.tables.append(Table("hindsight", HINDSIGHT_COLUMNS, hindsight_table))
        report.paragraph(sec, "Every fixed configuration on each seed's stream, with whether it meets PALS's "
                              "violations, is in tables/hindsight.csv.")
    fig_sec = report.section("Figures")
    tpj_figure(report, fig_sec, measured, "slo_tokens_per_joule",
               "Tokens per node joule under the TPOT SLO, mean over seeds with 95 % interval")
    _latency_figure(report, fig_sec, measured)
    metrics: dict[str, Any] = {"seeds": len(seeds), "slo_tpot_ms": {m: SLO_TPOT_MS.get(m) for m in measured}}
    for model, runs in measured.items():
        slo_ms = SLO_TPOT_MS[model]
        states = {label: slo_state(runs, label, slo_ms) for label in ("baseline", "pals")}
        ratios = {"pals/baseline": paired_ratio(runs, "pals", "baseline"),
                  "pals/hindsight": paired_ratio(runs, "pals", "hindsight"),
                  "hindsight/baseline": paired_ratio(runs, "hindsight", "baseline")}
        metrics[model] = {
            "slo_state": states,
            "ratios": {k: None if v is None else v._asdict() for k, v in ratios.items()},
            "hindsight_seeds": sum("hindsight" in r for r in runs),
            **{label: {key: (None if (e := estimate(runs, label, key)) is None else e._asdict())
                       for key in ("tokens_per_joule", "tpot_p99_ms", "slo_violation_pct", "throughput_tps")}
               for label in LABELS},
        }
        _checks(report, model, runs, slo_ms, states, ratios)
        _compare_and_explain(report, model, runs, slo_ms, states, ratios)
    report.metrics = metrics
    return report


def _checks(report: Report, model: str, runs, slo_ms: float, states: dict[str, str],
            ratios: dict[str, Estimate | None]) -> None:
    def latency(label: str) -> str:
        return (f"{label}: TPOT p99 {text(estimate(runs, label, 'tpot_p99_ms'), '{:.1f}', ' ms')}, "
                f"SLO violations {text(estimate(runs, label, 'slo_violation_pct'), '{:.1f}', ' %')}")

    report.check(f"{model}, stationary saturating load: PALS meets the SLO (TPOT p99 <= {slo_ms:g} ms) the baseline breaks",
                 states["pals"] == "meets" and states["baseline"] == "breaks",
                 f"baseline {states['baseline']}, PALS {states['pals']}; {latency('baseline')}; {latency('pals')}")
    share = ratios["pals/hindsight"]
    best = ", ".join(sorted({r["hindsight"].config for r in runs if "hindsight" in r})) or "none"
    # A stationary load's optimum is one fixed configuration, so the most any policy can do is tie it: the bar
    # is issue 12's share of the optimum, and beating a fixed configuration is the step load's check.
    report.check(f"{model}, stationary saturating load: PALS reaches at least {HINDSIGHT_SHARE_MIN:.2f}x the best "
                 "static configuration that also meets the SLO (mean over seeds; a tie is the most a stationary "
                 "load allows)",
                 share is not None and share.mean >= HINDSIGHT_SHARE_MIN,
                 f"PALS / hindsight optimum {text(share, suffix='x')} ({ratio_word(share)} it; optimum: {best}; "
                 f"PALS ended at {', '.join(sorted({r['pals'].config for r in runs}))})")


def _compare_and_explain(report: Report, model: str, runs, slo_ms: float, states: dict[str, str],
                         ratios: dict[str, Estimate | None]) -> None:
    gain = ratios["pals/baseline"]
    report.compare(f"{model}: PALS tokens/J vs Baseline (paper: no SLO)", f"{PAPER_PALS_OVER_BASELINE}x",
                   text(gain, suffix="x"), "not comparable (undefined)" if gain is None
                   else str(ratio_verdict(gain, PAPER_PALS_OVER_BASELINE)))
    share = ratios["pals/hindsight"]
    report.compare(f"{model}: PALS / best static configuration meeting the SLO", "not in the paper",
                   text(share, suffix="x"), "not comparable (not in the paper)")
    why = report.section(f"What decides it: {model}")
    tpot = {label: estimate(runs, label, "tpot_p99_ms") for label in LABELS}
    limit_ms = slo_ms * (1.0 - ModelGuidedConfig().slo_margin)
    free = ratios["hindsight/baseline"]
    closer = (tpot["hindsight"] is not None and tpot["pals"] is not None
              and tpot["hindsight"].mean > tpot["pals"].mean)
    report.why(why, (
        f"The Baseline's full batches of 64 run at a TPOT p99 of {text(tpot['baseline'], '{:.1f}', ' ms')} against "
        f"the {slo_ms:g} ms objective, so it {states['baseline']} the SLO; PALS keeps its predicted p99 under "
        f"{limit_ms:.1f} ms (the objective less its SLO margin), runs at {text(tpot['pals'], '{:.1f}', ' ms')} and "
        f"{states['pals']} it. Meeting the SLO costs tokens/J here: the best fixed configuration that does is at "
        f"{text(free, suffix='x')} the Baseline's tokens/J ({ratio_word(free)} it), so PALS's tokens/J over the Baseline's "
        f"({text(gain, suffix='x')}) is not the paper's unconstrained 1.26x. Against that configuration (TPOT p99 "
        f"{text(tpot['hindsight'], '{:.1f}', ' ms')}) PALS is at {text(share, suffix='x')}, {ratio_word(share)} it"
        + (": the optimum runs closer to the objective than PALS's predicted margin lets PALS go." if closer else ".")
    ))


def step_section(report: Report, step: Measured, seeds: list[int], hindsight_table: list[list[Any]] | None,
                 caps: list[tuple[float, float]]) -> None:
    """The step-load scenario's tables, figure, checks, comparison and explanation (metrics under STEP_LABEL)."""
    runs = step[STEP_LABEL]
    sec = report.section("Step load: runs per seed and means (judged part)")
    seed_tables(report, sec, step, seeds, ("tokens_per_joule", "tpot_p99_ms", "slo_violation_pct", "qos_violation_pct",
                                           "throughput_tps"), prefix="step_")
    if hindsight_table:
        report.tables.append(Table("hindsight_step", HINDSIGHT_COLUMNS, hindsight_table))
        report.paragraph(sec, "Every fixed configuration on each seed's step load is in tables/hindsight_step.csv.")
    tpj_figure(report, sec, step, "slo_step_tokens_per_joule",
               "Step load: tokens per node joule under the TPOT SLO, mean over seeds with 95 % interval")
    slo_ms = SLO_TPOT_MS[STEP_MODEL]
    states = {label: slo_state(runs, label, slo_ms) for label in ("baseline", "pals")}
    share = paired_ratio(runs, "pals", "hindsight")
    qos = estimate(runs, "pals", "qos_violation_pct")
    lull_w = [c[0] for c in caps if math.isfinite(c[0])]
    peak_w = [c[1] for c in caps if math.isfinite(c[1])]
    best = ", ".join(sorted({r["hindsight"].config for r in runs if "hindsight" in r})) or "none"
    report.check(f"{STEP_LABEL}: PALS meets the SLO (TPOT p99 <= {slo_ms:g} ms) the baseline breaks",
                 states["pals"] == "meets" and states["baseline"] == "breaks",
                 f"baseline {states['baseline']}: TPOT p99 {text(estimate(runs, 'baseline', 'tpot_p99_ms'), '{:.1f}', ' ms')}; "
                 f"PALS {states['pals']}: TPOT p99 {text(estimate(runs, 'pals', 'tpot_p99_ms'), '{:.1f}', ' ms')}, "
                 f"SLO violations {text(estimate(runs, 'pals', 'slo_violation_pct'), '{:.1f}', ' %')}, "
                 f"QoS violations {text(qos, '{:.1f}', ' %')}")
    report.check(f"{STEP_LABEL}: PALS's tokens/J above the best static configuration meeting the SLO and the target",
                 share is not None and share.low > 1.0,
                 f"PALS / hindsight optimum {text(share, suffix='x')} ({ratio_word(share)} it; optimum: {best})")
    report.compare(f"{STEP_LABEL}: PALS / best static configuration meeting the SLO and the target", "not in the paper",
                   text(share, suffix="x"), "not comparable (not in the paper)")
    lull_tps, peak_tps = min(r for _, r in STEP_PHASES), max(r for _, r in STEP_PHASES)
    lull_mean = sum(lull_w) / len(lull_w) if lull_w else math.nan
    peak_mean = sum(peak_w) / len(peak_w) if peak_w else math.nan
    opt_caps = sorted({r["hindsight"].config.split(" W")[0] for r in runs if "hindsight" in r})
    report.why(report.section(f"What decides it: {STEP_LABEL}"), (
        f"A fixed configuration holds one cap and batch through peaks of {peak_tps:.0f} tok/s and lulls of "
        f"{lull_tps:.0f} tok/s; the best one with no more SLO violations than PALS and QoS violations within "
        f"max(PALS's, {STEP_QOS_ALLOWANCE_PCT:g} %) is {best}. PALS's cap averaged {lull_mean:.0f} W in the lulls and "
        f"{peak_mean:.0f} W in the peaks (judged part, mean over seeds; the optimum's: {', '.join(opt_caps) or 'none'} W), "
        f"{'lower' if lull_mean < peak_mean else 'not lower'} in the lulls, "
        f"{'higher' if opt_caps and peak_mean > max(float(c) for c in opt_caps) else 'not higher'} than the optimum's "
        f"in the peaks. It {states['pals']} the SLO (the Baseline, TPOT p99 "
        f"{text(estimate(runs, 'baseline', 'tpot_p99_ms'), '{:.1f}', ' ms')}, {states['baseline']} it) and its "
        f"tokens/J are {text(share, suffix='x')} the optimum's, {ratio_word(share)} it."))
    report.metrics[STEP_LABEL] = {
        "slo_state": states, "pals/hindsight": None if share is None else share._asdict(),
        "hindsight_seeds": sum("hindsight" in r for r in runs), "pals_cap_lull_w": lull_w, "pals_cap_peak_w": peak_w,
        **{label: {key: (None if (e := estimate(runs, label, key)) is None else e._asdict())
                   for key in ("tokens_per_joule", "tpot_p99_ms", "slo_violation_pct", "qos_violation_pct")}
           for label in LABELS},
    }


def _latency_figure(report: Report, sec: Section, measured: Measured) -> None:
    """Per seed: TPOT p99 against tokens/J of each policy, the SLO as a line."""
    fig, axes = plt().subplots(1, len(measured), figsize=(5.5 * len(measured), 4), squeeze=False)
    for ax, (model, runs) in zip(axes[0], measured.items()):
        for label, marker in zip(LABELS, ("o", "s", "^")):
            pts = [(r[label].tokens_per_joule, r[label].tpot_p99_ms) for r in runs if label in r]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
        ax.axhline(SLO_TPOT_MS.get(model, float("nan")), color="k", ls="--", lw=0.8, label="SLO")
        ax.set_xlabel("tokens per node joule (tokens/J)")
        ax.set_ylabel("run-level TPOT p99 (ms)")
        ax.set_title(f"{model}: latency vs efficiency per seed")
        ax.legend(fontsize=8)
    save_figure(fig, report.figure_path("slo_latency_vs_tpj"))
    report.image(sec, "slo_latency_vs_tpj", "TPOT p99 against tokens/J, one point per seed and policy; dashed: the SLO")
