"""fidelity: every calibration point beside the simulator's value, per source and per GPU.

The points are the calibration data shipped in `pals/data/measurements` (Splitwise's A100/H100 profiles, a vLLM
serving measurement on an A100, Zeus's power-limit tables, a sentence of the Splitwise paper; sources.json and
docs/calibration.md §14 describe each). Each point is simulated with its GPU preset's physics and, for engine
overheads, the values fitted for the serving stack that was measured (sources.json `engine_params`): a 2023 vLLM
without CUDA graphs spends 14-18 ms per step outside the kernels, today's a few. Continuous-batching points run
on a `SimNode` (the quick mode uses the steady-state estimate); static batches use the static-batch estimate.

The held-out validation set of the project (the ML.ENERGY leaderboard) is not used here; the last section only
checks the simulator against the band issue 10 quotes for it (H100 at 700 W serving chat lengths draws 55-99 % of
TDP), with our own runs.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pals.calibration.points import CalibrationPoint, shipped_dir, shipped_points
from pals.calibration.simulate import Simulated, StepModels, estimate, run_node
from pals.calibration.summary import shipped_sources
from pals.core.paper import PAPER_GPU as GPU
from pals.experiments.common import plt, save_figure
from pals.experiments.lab_physics import physics_label, scoped_physics
from pals.experiments.report import Report
from pals.sim.hardware import GpuSpec, get_gpu

TOLERANCE = 0.15
"""Issue 10's bar: every source within 15 % on throughput and GPU power."""
QUANTITIES = (("throughput_tps", "throughput"), ("gpu_power_w", "GPU power"), ("tpot_p50_s", "TPOT"))
BAND_MODELS = ("Llama-3.1-8B", "Qwen3-30B-A3B")
BAND_LENGTHS = ((500, 400), (1000, 900))
BAND_BATCHES = (8, 32, 64, 128, 256)


def _simulate(point: CalibrationPoint, gpu: GpuSpec, engines: dict[str, dict[str, float]], quick: bool,
              seed: int) -> tuple[Simulated, str]:
    # `pals experiment fidelity --physics FILE`: the file's physics for its GPU's points, the presets' for the rest.
    params = replace(scoped_physics(gpu.name) or gpu.physics, **engines.get(point.engine_key, {}))
    if point.batching == "continuous" and not quick:
        return run_node(point, gpu, params, warmup_s=20.0, window_s=60.0, seed=seed), "SimNode"
    return estimate(point, StepModels(gpu, params)), "estimate"


def _err(sim: float, measured: float) -> float:
    return sim / measured - 1.0 if math.isfinite(sim) and math.isfinite(measured) and measured > 0 else math.nan


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:+.1f} %"


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    start = time.perf_counter()
    report = Report("fidelity", "Fidelity: calibration points beside the simulator", out_dir, quick)
    report.intro.append(__doc__.split("\n\n", 1)[1])
    meta = shipped_sources()
    results = []  # (point, simulated, how)
    for point in shipped_points():
        gpu = get_gpu(point.gpu)
        engines = meta.get("engine_params", {}).get(gpu.name, {})
        sim, how = _simulate(point, gpu, engines, quick, seed)
        results.append((point, sim, how))
    absolute = [(p, s, h) for p, s, h in results if not math.isfinite(p.relative_throughput)]
    relative = [(p, s, h) for p, s, h in results if math.isfinite(p.relative_throughput)]
    summary = _summary_section(report, absolute, relative)
    _points_section(report, absolute)
    _relative_section(report, relative)
    _scatter(report, absolute)
    band = _band_section(report, quick, seed)
    _sources_section(report, meta)
    report.setup = {"points": len(results), "tolerance": f"{100 * TOLERANCE:.0f} %",
                    "continuous points": "estimate" if quick else "SimNode, 20 s warm-up + 60 s window",
                    "physics": f"{physics_label()} (its GPU's points; every other point and the H100 check: "
                               "their GPU presets')" if scoped_physics(GPU) is not None else "the GPU presets'"}
    report.metrics = {"by_source": summary, "h100_band_pct_of_tdp": band}
    return report.write(time.perf_counter() - start)


def _summary_section(report: Report, absolute, relative) -> dict[str, Any]:
    grouped: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for point, sim, _ in absolute:
        for quantity, _ in QUANTITIES:
            err = _err(sim.value(quantity), point.measured(quantity))
            if math.isfinite(err):
                grouped[(point.source, point.gpu)][quantity].append(err)
    for point, sim, _ in relative:
        grouped[(point.source, point.gpu)]["relative_throughput"].append(
            _err(sim.relative_throughput, point.relative_throughput))
    rows, metrics = [], {}
    for (source, gpu), by_q in sorted(grouped.items()):
        cells, entry = [], {}
        for quantity in ("throughput_tps", "gpu_power_w", "tpot_p50_s", "relative_throughput"):
            errs = np.abs(by_q.get(quantity, []))
            if len(errs):
                entry[quantity] = {"median_abs_pct": 100 * float(np.median(errs)), "max_abs_pct": 100 * float(errs.max()),
                                   "n": int(len(errs)), "over_15_pct": int((errs > TOLERANCE).sum())}
                cells.append(f"{100 * np.median(errs):.1f} / {100 * errs.max():.1f} % ({len(errs)})")
            else:
                cells.append("-")
        metrics[f"{source} @ {gpu}"] = entry
        rows.append([source, gpu, *cells])
        for quantity in ("throughput_tps", "gpu_power_w"):
            if quantity in entry:
                median = entry[quantity]["median_abs_pct"]
                report.check(f"{source} on {gpu}: {dict(QUANTITIES)[quantity]} within 15 % (median over its points)",
                             median <= 100 * TOLERANCE,
                             f"median {median:.1f} %, max {entry[quantity]['max_abs_pct']:.1f} %, "
                             f"{entry[quantity]['over_15_pct']} of {entry[quantity]['n']} points beyond 15 %")
    sec = report.section("Error per source and GPU")
    report.paragraph(sec, "Median / max |simulated / measured - 1| over each source's points (count). Relative "
                     "throughput is the Zeus cap tables' throughput at a cap over that at the top cap.")
    report.table(sec, "by_source", ["source", "GPU", "throughput", "GPU power", "TPOT", "rel. throughput"], rows)
    report.why(sec, (
        "Points beyond 15 %: Splitwise's A100 points at 4k-8k-token prompts carry no usable power (the logged average "
        "falls as the prefill share rises) and its batch-32/64 decode got 10-20 % slower per step than a linear "
        "per-sequence cost gives, so TPOT there is off by up to 20 %; H100 TP 2 decode is 10-19 % slower in the "
        "simulator (the 2023 engine's overhead is fitted as one value per step for all TP degrees). Zeus's A40 point "
        "at 0.33 TDP (0.23 of full throughput) and the V100 points at 0.40 TDP (0.52-0.53) do not lie on one curve "
        "of the cap: the fit sits between them (+35 % and -13 % at the ends), within 10 % from 0.5 TDP up."
    ))
    return metrics


def _points_section(report: Report, absolute) -> None:
    rows = []
    for point, sim, how in absolute:
        row = [point.source, point.gpu, point.label, how]
        for quantity, _ in QUANTITIES:
            measured = point.measured(quantity)
            row += [measured, sim.value(quantity) if math.isfinite(measured) else math.nan,
                    _pct(_err(sim.value(quantity), measured))]
        rows.append(row)
    sec = report.section("Every point")
    report.paragraph(sec, "Throughput in output tokens/s of the deployment, GPU power in W per GPU, TPOT in s. "
                     "'static' rows are Splitwise's static batches (one prefill, then 127 decode steps).")
    report.table(sec, "points", ["source", "GPU", "configuration", "simulated by", "tok/s measured", "tok/s sim", "err",
                                 "W measured", "W sim", "err", "TPOT measured s", "TPOT sim s", "err"], rows)


def _relative_section(report: Report, relative) -> None:
    rows = [[p.source, p.gpu, p.power_cap_w, p.note.split(":")[0], p.relative_throughput, s.relative_throughput,
             _pct(_err(s.relative_throughput, p.relative_throughput))] for p, s, _ in relative]
    if not rows:
        return
    sec = report.section("Power-limit tables (relative throughput)")
    report.table(sec, "relative", ["source", "GPU", "cap W", "job", "measured", "simulated", "err"], rows,
                 caption="a compute-bound step (one 4096-token Llama-2-7B prefill) at each cap over the top cap")


def _scatter(report: Report, absolute) -> None:
    pyplot = plt()
    fig, axes = pyplot.subplots(1, 2, figsize=(10, 4.4))
    markers = {"A100-SXM4-80GB": "o", "H100-SXM": "s"}
    colours = {}
    for ax, (quantity, title, unit, log) in zip(axes, (("throughput_tps", "Throughput", "output tokens/s", True),
                                                       ("gpu_power_w", "GPU power", "W per GPU", False))):
        xs, ys = [], []
        for point, sim, _ in absolute:
            measured, simulated = point.measured(quantity), sim.value(quantity)
            if not (math.isfinite(measured) and math.isfinite(simulated)):
                continue
            key = f"{point.source} ({point.gpu})"
            colour = colours.setdefault(key, f"C{len(colours)}")
            ax.scatter(measured, simulated, s=18, color=colour, marker=markers.get(point.gpu, "^"),
                       label=key if key not in ax.get_legend_handles_labels()[1] else None)
            xs.append(measured)
            ys.append(simulated)
        if xs:
            lo, hi = min(xs + ys) * 0.8, max(xs + ys) * 1.25
            line = np.geomspace(lo, hi, 50) if log else np.linspace(lo, hi, 50)
            ax.plot(line, line, color="black", linewidth=1, label="y = x")
            ax.fill_between(line, line * (1 - TOLERANCE), line * (1 + TOLERANCE), color="grey", alpha=0.15,
                            label="within 15 %")
            if log:
                ax.set_xscale("log")
                ax.set_yscale("log")
        ax.set_title(f"{title}: simulated against measured")
        ax.set_xlabel(f"measured {title[0].lower() + title[1:]} ({unit})")
        ax.set_ylabel(f"simulated {title[0].lower() + title[1:]} ({unit})")
        ax.legend(fontsize=7)
    save_figure(fig, report.figure_path("fidelity_scatter"))
    sec = report.section("Measured against simulated")
    report.image(sec, "fidelity_scatter", "Every calibration point with a measured throughput or GPU power: simulated "
                 "against measured, the y = x line and a 15 % band")


def _band_section(report: Report, quick: bool, seed: int) -> dict[str, Any]:
    """H100 at 700 W, chat lengths, batch 8-256, a dense and an MoE model: share of TDP drawn."""
    gpu = get_gpu("H100-SXM")
    rows, shares = [], []
    batches = (8, 64, 256) if quick else BAND_BATCHES
    for model in BAND_MODELS:
        for prompt, output in BAND_LENGTHS:
            for batch in batches:
                point = CalibrationPoint("band-check", gpu.name, str(shipped_dir() / "models" / model), 1, 1, 1,
                                         gpu.tdp_w, batch, prompt, output, throughput_tps=1.0)
                sim = estimate(point, StepModels(gpu, gpu.physics)) if quick else \
                    run_node(point, gpu, gpu.physics, warmup_s=20.0, window_s=40.0, seed=seed)
                share = sim.gpu_power_w / gpu.tdp_w
                shares.append(share)
                rows.append([model, prompt, output, batch, sim.throughput_tps, sim.gpu_power_w, 100 * share,
                             sim.tpot_p50_s])
    sec = report.section("Cross-check: H100 serving power at 700 W (not a calibration source)")
    report.paragraph(sec, (
        "Issue 10 quotes public measurements of vLLM serving on one H100 at 700 W (chat prompts of a few hundred to a "
        "thousand tokens, 400-900 output tokens, batch 8-256, dense and MoE) drawing 55-99 % of TDP; that data set is "
        "the project's held-out validation set and is neither read nor fitted here. These are our runs with the "
        "H100 preset, whose power terms are carried over from the A100 fit (docs/calibration.md §14); models from "
        "their config.json (Llama-3.1-8B, Qwen3-30B-A3B), saturating load, vLLM's H100 defaults (8192-token budget)."
    ))
    report.table(sec, "h100_band", ["model", "prompt", "output", "batch cap", "tok/s", "GPU W", "% of TDP", "TPOT s"],
                 rows)
    low, high = 100 * min(shares), 100 * max(shares)
    report.compare("H100 at 700 W, chat serving, batch 8-256: GPU power as % of TDP", "55-99 % (issue 10)",
                   f"{low:.0f}-{high:.0f} %", "inside the band" if low >= 55 and high <= 99.5 else "outside the band")
    return {"min": low, "max": high}


def _sources_section(report: Report, meta: dict[str, Any]) -> None:
    sec = report.section("Sources")
    rows = [[key, s["title"], s["url"], s["licence"]] for key, s in meta.get("sources", {}).items()]
    report.table(sec, "sources", ["key", "what", "where", "licence"], rows)
    engines = meta.get("engine_params", {})
    rows = [[gpu, engine, ", ".join(f"{k} = {v:g}" for k, v in values.items())]
            for gpu, by_engine in engines.items() for engine, values in by_engine.items()]
    report.table(sec, "engine_params", ["GPU", "engine", "engine overheads used for its points"], rows)
