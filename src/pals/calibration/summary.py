"""Text summaries of a fit (what `pals calibrate` prints) and the physics file it writes."""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pals.calibration.fit import FitResult
from pals.sim.physics import physics_file_text

_UNITS = {"throughput_tps": "tok/s", "gpu_power_w": "W", "tpot_p50_s": "s", "ttft_p50_s": "s",
          "prefill_power_w": "W", "decode_power_w": "W", "relative_throughput": ""}
_SHORT = {"throughput_tps": "throughput", "gpu_power_w": "GPU power", "tpot_p50_s": "TPOT", "ttft_p50_s": "TTFT",
          "prefill_power_w": "prefill power", "decode_power_w": "decode power", "relative_throughput": "rel. throughput"}


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.3g}"
    return f"{value:.4g}"


def residual_table(result: FitResult) -> str:
    """Every measured quantity beside its fitted value."""
    lines = [f"{'source':<17} {'configuration':<46} {'quantity':<15} {'measured':>10} {'fitted':>10} {'error':>7}"]
    for r in result.residuals:
        unit = _UNITS[r.quantity]
        lines.append(f"{r.point.source[:17]:<17} {r.point.label[:46]:<46} {_SHORT[r.quantity]:<15} "
                     f"{_num(r.measured):>10} {_num(r.simulated):>10} {100 * r.error:>+6.1f}%" + (f" {unit}" if unit else ""))
    return "\n".join(lines)


def error_summary(result: FitResult) -> dict[str, dict[str, dict[str, float]]]:
    """source -> quantity -> median / max absolute % error and count."""
    grouped: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in result.residuals:
        grouped[r.point.source][r.quantity].append(abs(r.error) * 100)
    return {s: {q: {"median_abs_pct": float(np.median(v)), "max_abs_pct": float(np.max(v)), "n": len(v)}
                for q, v in by_q.items()} for s, by_q in grouped.items()}


def summary_text(result: FitResult) -> str:
    """Per-source errors, cross-validation, identifiability and the fitted values."""
    lines = ["", "Error by source (median / max |simulated / measured - 1|):"]
    for source, by_q in error_summary(result).items():
        parts = [f"{_SHORT[q]} {v['median_abs_pct']:.1f} / {v['max_abs_pct']:.1f} % (n={v['n']})" for q, v in by_q.items()]
        lines.append(f"  {source}: " + "; ".join(parts))
    if result.cv:
        lines.append(f"Cross-validation ({result.cv['scheme']}, {result.cv['folds']} folds), held-out median / max "
                     "error, in-sample median:")
        for q, e in result.cv["errors"].items():
            lines.append(f"  {_SHORT[q]}: {e['held_out_median_abs_pct']:.1f} / {e['held_out_max_abs_pct']:.1f} %, "
                         f"in sample {e['in_sample_median_abs_pct']:.1f} %")
    lines.append("Parameters (fitted, prior, posterior sd / prior sd, verdict):")
    for i in result.identifiability:
        bound = ", at its bound" if i.at_bound else ""
        lines.append(f"  {i.name:<40} {i.value:<11.4g} prior {i.prior_value:<10.4g} {i.sd_ratio:4.2f}  {i.verdict}{bound}")
    unconstrained = [i.name for i in result.identifiability if i.sd_ratio >= 0.9]
    lines.append("Not constrained by these data (they stay at the preset's values): "
                 + (", ".join(unconstrained) if unconstrained else "none"))
    for combo in result.degenerate:
        lines.append(f"  only fixed together: {combo}")
    return "\n".join(lines)


def physics_json(result: FitResult, data: str, command: str) -> str:
    """The physics file text: the shared values that changed, plus a record of the fit."""
    from pals import __version__

    record: dict[str, Any] = {
        "data": data,
        "command": command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "pals_version": __version__,
        "points": len({id(r.point) for r in result.residuals}),
        "cost": result.cost,
        "errors": error_summary(result),
        "cross_validation": result.cv,
        "identifiability": {i.name: {"value": i.value, "prior": i.prior_value, "sd_ratio": i.sd_ratio,
                                     "verdict": i.verdict} for i in result.identifiability},
        "per_engine": result.per_engine,
    }
    return physics_file_text(result.gpu.name, _rounded(result.changed()), record)


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.4g}") for k, v in values.items()}


def shipped_sources() -> dict[str, Any]:
    """sources.json of the shipped calibration data (sources, engines, fit settings, per-engine values)."""
    path = Path(str(resources.files("pals") / "data" / "measurements" / "sources.json"))
    return json.loads(path.read_text(encoding="utf-8"))
