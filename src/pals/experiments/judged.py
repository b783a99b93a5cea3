"""Runs judged on their settled part, per-seed figures and their tables (experiments `slo`, `kv-pressure`).

A closed-loop run starts from the node's initial configuration; the node's latency figures cover a
trailing window (`SimNode.latency_window_s`), so for that long after the start a policy's TPOT still
shows the configuration it left. `judged_run` summarises only the records after `settle_s` of
control (`pals.control.summary.summarize` over them), and `judged_hindsight` judges every fixed
configuration of the grid on the same part of the same stream, so the policy and its yardstick are
measured alike. Each (policy, seed) becomes a `PolicyFigures`; `Measured` maps model -> one dict
per seed of label -> figures ("baseline", "pals", "hindsight").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pals.control.policies import PolicyOptions
from pals.control.slo import Slo
from pals.control.summary import summarize
from pals.control.types import Configuration
from pals.experiments.common import PAPER_BATCHES, PAPER_CAPS_W, Lab, RunResult, plt, save_figure
from pals.experiments.report import Report, Section
from pals.experiments.stats import Estimate, mean_ci, ratio_ci
from pals.runtime.hindsight import HindsightResult, MeetCriteria, grid_configurations, hindsight_over

LABELS = ("baseline", "pals", "hindsight")
"""The runs every seed reports: the Baseline, PALS, and the hindsight static optimum."""


@dataclass(frozen=True)
class PolicyFigures:
    """One policy's run (or the hindsight optimum's) on one seed, over its judged part."""

    tokens_per_joule: float
    """Generated tokens per node joule (the headline). Units: tokens/J."""
    throughput_tps: float
    """Generated tokens per second. Units: tokens/s."""
    tpot_p99_ms: float
    """Run-level p99 time per output token (NaN: none reported). Units: ms."""
    slo_violation_pct: float
    """Share of intervals that broke the latency SLO (NaN: no SLO in force). Units: %."""
    qos_violation_pct: float
    """Share of intervals that broke the throughput target (0 without one). Units: %."""
    preemptions_per_min: float
    """Requests preempted by a full KV cache per minute of control (the whole run). Units: 1/min."""
    config: str
    """The configuration: the fixed one, or a policy's last ('400 W / 64')."""


Measured = dict[str, list[dict[str, PolicyFigures]]]
"""Model -> one entry per seed: label ("baseline", "pals", "hindsight") -> figures."""


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def config_text(config: Configuration | dict[str, Any]) -> str:
    if isinstance(config, Configuration):
        return f"{config.power_cap_w:g} W / {config.batch_cap}"
    return "{power_cap_w:g} W / {batch_cap}".format(**config)


def judged_summary(result: RunResult, settle_s: float) -> dict[str, Any]:
    """The run summary of the records after `settle_s` of control, plus its preemptions per minute."""
    # A record's t_s counts from the start of control (after the lab's warm-up).
    summary = summarize(r for r in result.records if r["t_s"] >= settle_s - 1e-9)
    control_s = max(result.records[-1]["t_s"], 1e-9) if result.records else 1e-9
    summary["preemptions_per_min"] = 60.0 * result.preemptions / control_s
    return summary


def figures(summary: dict[str, Any], config: str) -> PolicyFigures:
    return PolicyFigures(float(summary["tokens_per_joule"]), float(summary["throughput_tps"]),
                         _nan(summary.get("tpot_p99_ms")), _nan(summary.get("slo_violation_pct")),
                         float(summary.get("qos_violation_pct") or 0.0), float(summary["preemptions_per_min"]), config)


Runner = Callable[..., RunResult]
"""Runs one policy: `runner(policy, duration_s, slo=, latency_model=, options=)` -> RunResult (default:
`Lab.run` under a saturating load)."""


def judged_run(lab: Lab, model: str, tp: int, policy: str, duration_s: float, settle_s: float, *,
               slo: Slo | None = None, latency_model=None,
               options: PolicyOptions = PolicyOptions(), runner: Runner | None = None
               ) -> tuple[dict[str, Any], PolicyFigures]:
    """One closed-loop run of `policy` (saturating, or by `runner`), judged after `settle_s`: (summary, figures)."""
    if runner is None:
        result = lab.run(model, tp, policy, None, duration_s, slo=slo, latency_model=latency_model, options=options)
    else:
        result = runner(policy, duration_s, slo=slo, latency_model=latency_model, options=options)
    summary = judged_summary(result, settle_s)
    return summary, figures(summary, config_text(result.records[-1]["decision"]["config"]))


def judged_hindsight(lab: Lab, model: str, tp: int, duration_s: float, settle_s: float, criteria: MeetCriteria,
                     slo: Slo | None = None, runner: Runner | None = None) -> tuple[HindsightResult, PolicyFigures | None]:
    """Every grid configuration as the static policy on the same stream and part; the best that meets `criteria`."""
    def run_static(config: Configuration) -> dict[str, Any]:
        return judged_run(lab, model, tp, "static", duration_s, settle_s, slo=slo,
                          options=PolicyOptions(fixed=config), runner=runner)[0]

    result = hindsight_over(grid_configurations(PAPER_CAPS_W, PAPER_BATCHES), run_static, criteria, "node",
                            label=f"hindsight {model}")
    best, summary = result.best, result.best_summary()
    if best is None or summary is None:
        return result, None
    return result, figures(summary, config_text(Configuration(best.power_cap_w, best.batch_cap)))


def hindsight_rows(model: str, seed: int, result: HindsightResult) -> list[list[Any]]:
    """The hindsight table's rows of one seed (every fixed configuration, whether it meets the criteria)."""
    return [[model, seed, r.power_cap_w, r.batch_cap, r.tokens_per_joule, r.throughput_tps,
             _nan(r.slo_violation_pct), r.qos_violation_pct,
             _nan(result.summaries[Configuration(r.power_cap_w, r.batch_cap)].get("tpot_p99_ms")),
             result.summaries[Configuration(r.power_cap_w, r.batch_cap)]["preemptions_per_min"], r.meets]
            for r in result.rows]


HINDSIGHT_COLUMNS = ["model", "seed", "cap W", "batch", "tokens/J node", "throughput tok/s", "SLO violations %",
                     "QoS violations %", "TPOT p99 ms", "preemptions /min", "meets PALS's violations"]


# -- from numbers to estimates, tables and figures --------------------------------------------------


def values(runs: Sequence[dict[str, PolicyFigures]], label: str, key: str) -> list[float]:
    """`key` of `label` over the seeds where it exists and is finite."""
    out = [getattr(r[label], key) for r in runs if label in r]
    return [v for v in out if math.isfinite(v)]


def estimate(runs: Sequence[dict[str, PolicyFigures]], label: str, key: str) -> Estimate | None:
    """Mean over seeds with its 95 % interval (None: no seed has a finite value)."""
    xs = values(runs, label, key)
    return mean_ci(xs) if xs else None


def paired_ratio(runs: Sequence[dict[str, PolicyFigures]], num: str, den: str,
                 key: str = "tokens_per_joule") -> Estimate | None:
    """`num` / `den` of `key`, paired by seed (seeds where either is missing are left out; None: none left)."""
    ratios = [getattr(r[num], key) / getattr(r[den], key) for r in runs
              if num in r and den in r and getattr(r[den], key) > 0 and getattr(r[num], key) > 0]
    return ratio_ci(ratios) if ratios else None


def text(est: Estimate | None, fmt: str = "{:.3f}", suffix: str = "") -> str:
    return "undefined (no seed)" if est is None else est.describe(fmt, suffix)


COLUMNS = ("tokens_per_joule", "tpot_p99_ms", "slo_violation_pct", "throughput_tps", "preemptions_per_min")
HEADERS = {"tokens_per_joule": "tokens/J node", "tpot_p99_ms": "TPOT p99 ms", "slo_violation_pct": "SLO violations %",
           "qos_violation_pct": "QoS violations %",
           "throughput_tps": "throughput tok/s", "preemptions_per_min": "preemptions /min"}
FORMATS = {"tokens_per_joule": "{:.4f}", "tpot_p99_ms": "{:.1f}", "slo_violation_pct": "{:.1f}", "qos_violation_pct": "{:.1f}",
           "throughput_tps": "{:.0f}", "preemptions_per_min": "{:.1f}"}


def seed_tables(report: Report, sec: Section, measured: Measured, seeds: Sequence[int],
                columns: Sequence[str] = COLUMNS, prefix: str = "") -> None:
    """Per seed and per policy, then the mean over seeds with its 95 % interval (tables named `prefix` + per_seed, means)."""
    head = [HEADERS[c] for c in columns]
    rows = []
    for model, runs in measured.items():
        for seed, run in zip(seeds, runs):
            for label in LABELS:
                fig = run.get(label)
                rows.append([model, seed, label, "none meets" if fig is None else fig.config,
                             *(float("nan") if fig is None else getattr(fig, c) for c in columns)])
    report.table(sec, prefix + "per_seed", ["model", "seed", "policy", "configuration", *head], rows,
                 "Each seed's runs (judged part); 'hindsight' is the best fixed configuration meeting PALS's violations")
    means = []
    for model, runs in measured.items():
        for label in LABELS:
            configs = ", ".join(sorted({r[label].config for r in runs if label in r})) or "none meets"
            means.append([model, label, configs, *(text(estimate(runs, label, c), FORMATS[c]) for c in columns)])
    report.table(sec, prefix + "means", ["model", "policy", "configuration(s)", *head], means,
                 "Mean over seeds [95 % interval]")


def tpj_figure(report: Report, sec: Section, measured: Measured, stem: str, title: str) -> None:
    """Bars: tokens/J of each policy per model, mean over seeds with its 95 % interval."""
    fig, ax = plt().subplots(figsize=(7, 4))
    width = 0.25
    names = list(measured)
    for i, label in enumerate(LABELS):
        ests = [estimate(measured[m], label, "tokens_per_joule") for m in names]
        means = [e.mean if e is not None else float("nan") for e in ests]
        errs = [[(e.mean - e.low) if e is not None and math.isfinite(e.low) else 0.0 for e in ests],
                [(e.high - e.mean) if e is not None and math.isfinite(e.high) else 0.0 for e in ests]]
        ax.bar([k + (i - 1) * width for k in range(len(names))], means, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(names)), names)
    ax.set_xlabel("model")
    ax.set_ylabel("tokens per node joule (tokens/J)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_figure(fig, report.figure_path(stem))
    report.image(sec, stem, title)
