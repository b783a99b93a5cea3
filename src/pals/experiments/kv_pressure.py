"""kv-pressure (issue 12): a KV cache too small for batch 64, where a smaller batch cap saves energy.

`MODEL` at TP 1 (four replicas) on a simulated 4x A100 node serves long requests (`KV_LENGTHS`)
under a saturating load. Each replica's KV cache holds about `kv_capacity_seqs` whole requests
(its KV tokens over the mean prompt plus output), fewer than the Baseline's batch 64: the engine
admits a request when its prompt fits, its decode then grows the cache until it overflows, and
the newest running request is preempted and later recomputed (`pals.sim.engine`). The recompute is
work that produces no new token, so a batch cap the cache holds avoids it and saves energy.

1. The mechanism: a sweep of the batch cap at the Baseline's cap (`SWEEP_CAP_W`) on the noise-free
   node, `SEEDS` request streams: tokens/J and preemptions per minute per batch cap.
2. Baseline vs PALS vs the hindsight static optimum (the best fixed grid configuration with no
   more violations than PALS; no throughput target, so every one qualifies) on `SEEDS` seeds, as
   in `pals.experiments.slo` (`pals.experiments.judged`). PALS's predictor comes from its offline
   profile; whether that profile sees preemption decides whether PALS finds the smaller batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pals.core.node import Actuation
from pals.experiments.common import PAPER_BATCHES, WARMUP_S, Lab, plt, save_figure
from pals.experiments.judged import (
    HINDSIGHT_COLUMNS, LABELS, Measured, estimate, hindsight_rows, judged_hindsight, judged_run, paired_ratio,
    seed_tables, text, tpj_figure,
)
from pals.experiments.report import Report, Table
from pals.experiments.slo import ratio_word
from pals.experiments.stats import Estimate, mean_ci, paired_ratio_ci, ratio_ci
from pals.experiments.verdict import HINDSIGHT_SHARE_MIN, ratio_verdict
from pals.model.profiler import STEADY_LIFETIMES
from pals.runtime.hindsight import MeetCriteria
from pals.runtime.load import UniformLengths
from pals.sim.node import NoiseConfig, SimNode

MODEL = "Llama-2-7B"
TP = 1
KV_LENGTHS = UniformLengths(prompt_tokens=(2000, 2800), output_tokens=(800, 1200))
"""Long requests: a Llama-2-7B replica's KV cache on one A100 holds fewer of them than batch 64 (the report
states how many: `kv_capacity_seqs`)."""
SWEEP_CAP_W = 400.0
"""The power cap of the mechanism sweep (the Baseline's). Units: W."""
SWEEP_BATCHES = (8, 16, 24, 32, 40, 48, 56, 64)
SWEEP_WARMUP_S = 60.0
"""Simulated seconds before a sweep point is measured: long enough for decodes to grow into the cache."""
SEEDS = 5
QUICK_DURATION_S = 120.0
FULL_DURATION_S = 300.0
SETTLE_S = 0.0
"""Control time left out of the judged figures (none: no latency objective here)."""


@dataclass(frozen=True)
class SweepPoint:
    """One batch cap at `SWEEP_CAP_W` on one stream (noise-free node, exact counters)."""

    batch_cap: int
    seed: int
    tokens_per_joule: float
    """Generated tokens per node joule. Units: tokens/J."""
    throughput_tps: float
    """Generated tokens per second. Units: tokens/s."""
    preemptions_per_min: float
    """Requests preempted by a full KV cache per minute. Units: 1/min."""


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    out_dir = Path(out_dir)
    duration_s = QUICK_DURATION_S if quick else FULL_DURATION_S
    seeds = [seed + k for k in range(SEEDS)]
    # Profiles always with the full-length windows: decodes need tens of seconds to fill the cache.
    labs = [Lab(seed=s, quick=False, work_dir=out_dir / "profiles" / f"seed{s}", lengths=KV_LENGTHS) for s in seeds]
    capacity = kv_capacity_seqs(labs[0])
    sweep = [point for lab in labs for point in sweep_points(lab, duration_s)]
    measured: Measured = {MODEL: []}
    rows: list[list[Any]] = []
    for lab in labs:
        per_seed, table = one_seed(lab, duration_s)
        measured[MODEL].append(per_seed)
        rows += table
    profile = [profile_ratio(lab, held_grid_batch(capacity)) for lab in labs]
    setup = {
        "node": f"4x A100-SXM4-80GB (simulated), {MODEL} TP {TP} (four replicas)",
        "load": f"saturating, uniform prompts {KV_LENGTHS.prompt_tokens[0]}-{KV_LENGTHS.prompt_tokens[1]} and outputs "
                f"{KV_LENGTHS.output_tokens[0]}-{KV_LENGTHS.output_tokens[1]} tokens",
        "KV capacity": f"{capacity:.1f} whole requests per replica (KV tokens / mean prompt + output)",
        "duration per run": f"{duration_s:.0f} s simulated after a {WARMUP_S:.0f} s warm-up",
        "sweep": f"batch caps {', '.join(map(str, SWEEP_BATCHES))} at {SWEEP_CAP_W:g} W, {SWEEP_WARMUP_S:.0f} s warm-up, "
                 f"{duration_s:.0f} s measured, noise-free",
        "seeds": f"{len(seeds)} ({seeds[0]}-{seeds[-1]}): profile, request stream and telemetry noise",
        "objective": "tokens per node joule (no throughput target)",
        "PALS's profile": f"paper grid, one fresh node per point, each measured after {STEADY_LIFETIMES:g} mean request "
                          f"lifetime(s) over a window at least as long (pals.model.profiler)",
    }
    return build_report(measured, seeds, sweep, capacity, out_dir, quick, setup, rows,
                        profile).write(time.perf_counter() - start)


def kv_capacity_seqs(lab: Lab) -> float:
    """Whole requests of mean length (prompt + output) one replica's KV cache holds."""
    node = SimNode(lab.spec(MODEL, TP), lab.workload(None, lab.seed), seed=lab.seed, noise=NoiseConfig.none())
    prompt, output = KV_LENGTHS.distributions()
    return node.engines[0].kv_cache_tokens / (prompt.mean + output.mean)


def held_grid_batch(capacity: float) -> int:
    """The largest batch cap of the grid PALS chooses from that the KV cache holds (the smallest if none does)."""
    held = [b for b in PAPER_BATCHES if b <= capacity]
    return max(held) if held else min(PAPER_BATCHES)


def profile_ratio(lab: Lab, batch: int) -> float:
    """What PALS's offline profile says at `SWEEP_CAP_W`: tokens/J of `batch` over the largest batch's."""
    rows = [r for r in lab.profile(MODEL, TP, None).rows if float(r["power_cap_w"]) == SWEEP_CAP_W]
    by_batch = {int(r["batch_cap"]): float(r["tokens_per_joule"]) for r in rows}
    largest = max(by_batch)
    return by_batch[batch] / by_batch[largest] if batch in by_batch and by_batch[largest] > 0 else float("nan")


def sweep_points(lab: Lab, window_s: float) -> list[SweepPoint]:
    """Every sweep batch cap at `SWEEP_CAP_W` on this lab's saturating stream (noise-free)."""
    out = []
    for batch in SWEEP_BATCHES:
        node = SimNode(lab.spec(MODEL, TP), lab.workload(None, lab.seed), seed=lab.seed, noise=NoiseConfig.none(),
                       initial=Actuation(SWEEP_CAP_W, batch))
        node.clock.wait_until(SWEEP_WARMUP_S)
        tokens0, joules0 = node.generated_tokens_total(), node.node_energy_j_total()
        preempted0 = sum(e.preemptions_total for e in node.engines)
        node.clock.wait_until(SWEEP_WARMUP_S + window_s)
        tokens, joules = node.generated_tokens_total() - tokens0, node.node_energy_j_total() - joules0
        preempted = sum(e.preemptions_total for e in node.engines) - preempted0
        out.append(SweepPoint(batch, lab.seed, tokens / joules, tokens / window_s, 60.0 * preempted / window_s))
    return out


def one_seed(lab: Lab, duration_s: float):
    """Baseline, PALS and the hindsight optimum on one seed's stream."""
    out = {}
    _, out["baseline"] = judged_run(lab, MODEL, TP, "baseline", duration_s, SETTLE_S)
    pals_summary, out["pals"] = judged_run(lab, MODEL, TP, "pals", duration_s, SETTLE_S)
    result, best = judged_hindsight(lab, MODEL, TP, duration_s, SETTLE_S, MeetCriteria.no_worse_than(pals_summary))
    if best is not None:
        out["hindsight"] = best
    return out, hindsight_rows(MODEL, lab.seed, result)


# -- from numbers to a report (no runs below: tests feed constructed numbers) ---------------------------


def sweep_estimates(sweep: list[SweepPoint]) -> dict[int, dict[str, Estimate]]:
    """Batch cap -> mean over seeds [95 % interval] of tokens/J, throughput and preemptions per minute."""
    out = {}
    for batch in sorted({p.batch_cap for p in sweep}):
        pts = [p for p in sweep if p.batch_cap == batch]
        out[batch] = {key: mean_ci([getattr(p, key) for p in pts])
                      for key in ("tokens_per_joule", "throughput_tps", "preemptions_per_min")}
    return out


def held_batch(sweep: list[SweepPoint], capacity: float) -> int | None:
    """The largest sweep batch cap the KV cache holds (at most `capacity` requests)."""
    held = [b for b in {p.batch_cap for p in sweep} if b <= capacity]
    return max(held) if held else None


def mechanism(sweep: list[SweepPoint], capacity: float) -> dict[str, Any]:
    """The sweep's verdicts: preemptions across the capacity, and the held batch against the largest."""
    est = sweep_estimates(sweep)
    below = [est[b]["preemptions_per_min"].mean for b in est if b <= capacity]
    above = [est[b]["preemptions_per_min"].mean for b in est if b > capacity]
    held, largest = held_batch(sweep, capacity), max(est)
    ratio = None
    if held is not None:
        by_seed = {p.seed: {} for p in sweep}
        for p in sweep:
            by_seed[p.seed][p.batch_cap] = p.tokens_per_joule
        pairs = [(v[held], v[largest]) for v in by_seed.values() if held in v and largest in v]
        ratio = paired_ratio_ci([a for a, _ in pairs], [b for _, b in pairs]) if pairs else None
    return {"estimates": est, "held_batch": held, "largest_batch": largest, "held_over_largest": ratio,
            "max_preemptions_below_per_min": max(below) if below else None,
            "min_preemptions_above_per_min": min(above) if above else None,
            "preemptions_rise": bool(below and above and min(above) > max(below)
                                     and est[largest]["preemptions_per_min"].mean >= min(above))}


def build_report(measured: Measured, seeds: list[int], sweep: list[SweepPoint], capacity: float, out_dir: Path,
                 quick: bool, setup: dict[str, Any], hindsight_table: list[list[Any]] | None = None,
                 profile_ratios: list[float] | None = None) -> Report:
    """The report of the sweep and the runs: tables, figures, comparisons and checks.

    `profile_ratios`: per seed, what PALS's offline profile says of the held batch against the largest
    at `SWEEP_CAP_W` (`profile_ratio`); None or NaN where unknown.
    """
    report = Report("kv-pressure", "KV-cache pressure: a smaller batch cap avoids preemption and saves energy",
                    out_dir, quick)
    report.setup = dict(setup)
    mech = mechanism(sweep, capacity)
    _sweep_section(report, mech, capacity)
    runs = measured[MODEL]
    sec = report.section("Baseline, PALS and the hindsight optimum (per seed and means)")
    seed_tables(report, sec, measured, seeds, ("tokens_per_joule", "throughput_tps", "preemptions_per_min"))
    if hindsight_table:
        report.tables.append(Table("hindsight", HINDSIGHT_COLUMNS, hindsight_table))
        report.paragraph(sec, "Every fixed configuration on each seed's stream is in tables/hindsight.csv.")
    tpj_figure(report, sec, measured, "kv_tokens_per_joule",
               "Tokens per node joule under KV-cache pressure, mean over seeds with 95 % interval")
    ratios = {"pals/baseline": paired_ratio(runs, "pals", "baseline"),
              "pals/hindsight": paired_ratio(runs, "pals", "hindsight"),
              "hindsight/baseline": paired_ratio(runs, "hindsight", "baseline")}
    pals_batches = [int(r["pals"].config.split("/")[-1]) for r in runs]
    _checks(report, mech, capacity, runs, ratios, pals_batches)
    finite = [r for r in (profile_ratios or []) if math.isfinite(r) and r > 0]
    profile = ratio_ci(finite) if finite else None
    _compare_and_explain(report, mech, runs, ratios, pals_batches, profile, finite)
    report.metrics = {
        "seeds": len(seeds), "kv_capacity_seqs": capacity,
        "sweep": {str(b): {k: v._asdict() for k, v in e.items()} for b, e in mech["estimates"].items()},
        "held_batch": mech["held_batch"], "preemptions_rise": mech["preemptions_rise"],
        "held_over_largest": None if mech["held_over_largest"] is None else mech["held_over_largest"]._asdict(),
        "ratios": {k: None if v is None else v._asdict() for k, v in ratios.items()},
        "pals_final_batches": pals_batches,
        "profile_held_over_largest": None if profile is None else profile._asdict(),
        "profile_held_over_largest_per_seed": list(profile_ratios or []),
        **{label: {key: (None if (e := estimate(runs, label, key)) is None else e._asdict())
                   for key in ("tokens_per_joule", "throughput_tps", "preemptions_per_min")} for label in LABELS},
    }
    return report


def _sweep_section(report: Report, mech: dict[str, Any], capacity: float) -> None:
    sec = report.section(f"The mechanism: batch cap sweep at {SWEEP_CAP_W:g} W")
    est = mech["estimates"]
    report.table(sec, "sweep", ["batch cap", "tokens/J node", "throughput tok/s", "preemptions /min"],
                 [[b, e["tokens_per_joule"].describe("{:.4f}"), e["throughput_tps"].describe("{:.0f}"),
                   e["preemptions_per_min"].describe("{:.1f}")] for b, e in est.items()],
                 f"Mean over seeds [95 % interval]; the KV cache holds {capacity:.1f} whole requests per replica")
    fig, (ax1, ax2) = plt().subplots(1, 2, figsize=(10, 4))
    batches = list(est)
    for ax, key, label in ((ax1, "tokens_per_joule", "tokens per node joule (tokens/J)"),
                           (ax2, "preemptions_per_min", "preemptions per minute (1/min)")):
        means = [est[b][key].mean for b in batches]
        errs = [[est[b][key].mean - est[b][key].low for b in batches], [est[b][key].high - est[b][key].mean for b in batches]]
        ax.errorbar(batches, means, yerr=errs, marker="o", capsize=3)
        ax.axvline(capacity, color="k", ls="--", lw=0.8, label=f"KV capacity ({capacity:.1f} requests)")
        ax.set_xlabel("batch cap (sequences)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    ax1.set_title(f"Tokens/J vs batch cap at {SWEEP_CAP_W:g} W")
    ax2.set_title(f"Preemptions vs batch cap at {SWEEP_CAP_W:g} W")
    save_figure(fig, report.figure_path("kv_sweep"))
    report.image(sec, "kv_sweep", f"Batch cap sweep at {SWEEP_CAP_W:g} W: tokens/J and preemptions per minute, "
                                  "mean over seeds with 95 % interval; dashed: the KV capacity")


def _checks(report: Report, mech: dict[str, Any], capacity: float, runs, ratios: dict[str, Estimate | None],
            pals_batches: list[int]) -> None:
    report.check("preemptions rise with the batch cap above the KV capacity", mech["preemptions_rise"],
                 f"at most {_rate(mech['max_preemptions_below_per_min'])} at batch caps <= {capacity:.1f}, at least "
                 f"{_rate(mech['min_preemptions_above_per_min'])} above")
    held, held_ratio = mech["held_batch"], mech["held_over_largest"]
    report.check(f"at {SWEEP_CAP_W:g} W the batch cap the cache holds saves energy over batch {mech['largest_batch']}",
                 held_ratio is not None and held_ratio.low > 1.0,
                 f"tokens/J batch {held} / batch {mech['largest_batch']} {text(held_ratio, suffix='x')}")
    gain = ratios["pals/baseline"]
    report.check("PALS above the Baseline on tokens/J", gain is not None and gain.low > 1.0,
                 f"PALS / Baseline {text(gain, suffix='x')}")
    smaller = sum(b < 64 for b in pals_batches)
    report.check("PALS finds a batch cap below the Baseline's", smaller == len(pals_batches),
                 f"PALS's final batch caps {pals_batches}: {smaller} of {len(pals_batches)} seeds below 64; "
                 f"preemptions/min PALS {text(estimate(runs, 'pals', 'preemptions_per_min'), '{:.1f}')}, Baseline "
                 f"{text(estimate(runs, 'baseline', 'preemptions_per_min'), '{:.1f}')}")
    share = ratios["pals/hindsight"]
    report.check(f"PALS reaches at least {HINDSIGHT_SHARE_MIN:.2f}x the hindsight optimum",
                 share is not None and share.low >= HINDSIGHT_SHARE_MIN, f"PALS / hindsight {text(share, suffix='x')}")


def _rate(per_min: float | None) -> str:
    return "none swept" if per_min is None else f"{per_min:.1f}/min"


def _compare_and_explain(report: Report, mech: dict[str, Any], runs, ratios: dict[str, Estimate | None],
                         pals_batches: list[int], profile: Estimate | None, profile_ratios: list[float]) -> None:
    gain = ratios["pals/baseline"]
    report.compare("PALS tokens/J vs Baseline (paper: Fig 7, no KV pressure)", "1.26x", text(gain, suffix="x"),
                   "not comparable (undefined)" if gain is None else str(ratio_verdict(gain, 1.26)))
    held_ratio = mech["held_over_largest"]
    report.compare(f"batch {mech['held_batch']} over batch {mech['largest_batch']} at {SWEEP_CAP_W:g} W",
                   "not in the paper", text(held_ratio, suffix="x"), "not comparable (not in the paper)")
    why = report.section("What decides it")
    hind = ", ".join(sorted({r["hindsight"].config for r in runs if "hindsight" in r})) or "none"
    smaller = sum(b < 64 for b in pals_batches)
    total = ratios["hindsight/baseline"]
    batch_share = _share_of_gain(held_ratio, total)
    if math.isnan(batch_share):
        carried = "no split of a gain between the knobs is defined"
    else:
        knob = "batch" if batch_share > 0.5 else "power"
        carried = (f"the {knob} cap carries most of the optimum's gain over the Baseline ({batch_share:.0%} of it in "
                   f"log terms comes from the batch at a fixed cap)")
    report.why(why, (
        f"Above the KV capacity every extra sequence is admitted on its prompt and later preempted as its decode grows: "
        f"at {SWEEP_CAP_W:g} W batch {mech['held_batch']} gives {text(held_ratio, suffix='x')} the tokens/J of batch "
        f"{mech['largest_batch']} ({ratio_word(held_ratio)} it), while the optimum over both knobs ({hind}) gives "
        f"{text(total, suffix='x')} the Baseline's: {carried}. PALS ended below batch 64 on {smaller} of {len(pals_batches)} seeds and reached "
        f"{text(ratios['pals/hindsight'], suffix='x')} of the optimum ({ratio_word(ratios['pals/hindsight'])} it). "
        f"Its predictor learns each configuration's tokens/J from the offline profile, whose points start on a fresh "
        f"node and are measured once {STEADY_LIFETIMES:g} mean request lifetime(s) have passed: there batch "
        f"{mech['held_batch']} rates {text(profile, suffix='x')} batch {mech['largest_batch']}'s tokens/J at "
        f"{SWEEP_CAP_W:g} W, {ratio_word(profile)} it, where the warm sweep measures {text(held_ratio, suffix='x')}"
        + _profile_reason(profile, held_ratio, profile_ratios, mech)
    ))


def _profile_reason(profile: Estimate | None, held_ratio: Estimate | None, per_seed: list[float],
                    mech: dict[str, Any]) -> str:
    """How the profile's view of the held batch compares with the warm sweep's (computed from both)."""
    if profile is None or held_ratio is None:
        return "."
    if profile.high < held_ratio.low:
        return ": the profile rates the held batch below what the sweep measures, so PALS does not see the recompute."
    if not profile.low <= held_ratio.mean <= profile.high:
        return ": the profile differs from the sweep."
    below = sum(r < 1.0 for r in per_seed)
    ranks = (f"every seed's profile ranks batch {mech['held_batch']} above batch {mech['largest_batch']}" if below == 0
             else f"the per-seed profiles rank batch {mech['largest_batch']} above batch {mech['held_batch']} on "
                  f"{below} of {len(per_seed)} seeds")
    gain, half = held_ratio.mean - 1.0, (profile.high - profile.low) / 2.0
    noise = (f": the sweep's gain ({gain:.1%}) is smaller than the profile's half interval ({half:.1%})" if gain < half
             else "")
    return f": the profile agrees with the sweep, and {ranks}{noise}."


def _share_of_gain(part: Estimate | None, total: Estimate | None) -> float:
    """log(part) / log(total) of two ratios' means (NaN when undefined or when the total is no gain)."""
    if part is None or total is None or not total.mean > 1.0 or not part.mean > 0:
        return float("nan")
    return math.log(part.mean) / math.log(total.mean)
