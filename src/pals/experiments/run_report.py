"""`pals report`'s figure: the Grafana dashboard's node views drawn from a run's decision log.

One PNG, one titled panel per view, sharing the time axis, every axis labelled with its unit (checked by
`pals.model.plot_rules` before the file is written): power vs budget, throughput vs target
(QoS-violation intervals shaded), power cap and batch cap, tokens per joule over time, and TTFT /
TPOT when the log has them. The header quotes the run-wide figures. Long logs are drawn as
per-bin means (about 2,000 bins), so a week of 500 ms intervals plots as fast as an hour.

matplotlib is imported inside `write_report` (Agg backend), so importing this module costs nothing.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from pals.core.io import atomic_write_bytes
from pals.errors import ConfigError
from pals.experiments.run_series import RunSeries
from pals.model.plot_rules import enforce

MAX_POINTS = 3000
"""Above this many intervals, series are drawn as bin means."""
TARGET_BINS = 2000
"""How many bins a long series is drawn with."""
MIN_TPJ_WINDOW_S = 10.0
"""Tokens/J over time is computed over windows at least this long (one 500 ms interval is noisy). Units: s."""

_COLORS = {"node": "#1f77b4", "gpu": "#2ca02c", "budget": "#d62728", "gpu_budget": "#ff7f0e",
           "throughput": "#9467bd", "target": "#d62728", "cap": "#1f77b4", "batch": "#8c564b",
           "tpj": "#17becf", "p50": "#1f77b4", "p99": "#d62728"}


def _bins(series: RunSeries, width_s: float) -> np.ndarray:
    """Bin index of every interval for bins `width_s` wide."""
    return np.floor((series.t_s - series.t_s[0]) / width_s).astype(np.int64)


def _binned(index: np.ndarray, t_s: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(last time, mean value) per occupied bin, NaN values left out of the means."""
    bins, start = np.unique(index, return_index=True)
    end = np.append(start[1:], len(index))
    finite = np.isfinite(values)
    sums = np.add.reduceat(np.where(finite, values, 0.0), start)
    counts = np.add.reduceat(finite.astype(np.float64), start)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return t_s[end - 1], means


class _Drawer:
    """Series as drawn: raw, or bin means for long runs; times in the unit the axis uses."""

    def __init__(self, series: RunSeries) -> None:
        self.series = series
        duration_s = float(series.t_s[-1] - series.t_s[0]) if len(series) > 1 else 1.0
        self.binned = len(series) > MAX_POINTS
        self.index = _bins(series, max(duration_s / TARGET_BINS, 1e-9)) if self.binned else None
        span_s = float(series.t_s[-1])
        self.time_scale, self.time_unit = (3600.0, "h") if span_s > 10 * 3600 else (60.0, "min") if span_s > 1800 else (1.0, "s")

    def xy(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t_s = self.series.t_s
        if self.binned:
            t_s, values = _binned(self.index, t_s, np.asarray(values, dtype=np.float64))
        return t_s / self.time_scale, values

    def has(self, values: np.ndarray) -> bool:
        return bool(np.isfinite(values).any())


def tokens_per_joule_windows(series: RunSeries, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(window end, tokens/J of node energy) over consecutive windows `window_s` long."""
    index = _bins(series, window_s)
    tokens = series.throughput_tps * series.interval_s
    energy_j = series.node_power_w * series.interval_s
    bins, start = np.unique(index, return_index=True)
    end = np.append(start[1:], len(index))
    token_sums = np.add.reduceat(tokens, start)
    energy_sums = np.add.reduceat(energy_j, start)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpj = np.where(energy_sums > 0, token_sums / energy_sums, np.nan)
    return series.t_s[end - 1], tpj


def _power_panel(ax, d: _Drawer) -> None:
    s = d.series
    ax.plot(*d.xy(s.node_power_w), color=_COLORS["node"], lw=1.0, label="node power")
    ax.plot(*d.xy(s.gpu_power_w), color=_COLORS["gpu"], lw=1.0, label="GPU power (sum)")
    if d.has(s.node_budget_w):
        ax.plot(*d.xy(s.node_budget_w), color=_COLORS["budget"], lw=1.6, ls="--", drawstyle="steps-post", label="node budget")
    if d.has(s.gpu_budget_w):
        ax.plot(*d.xy(s.gpu_budget_w), color=_COLORS["gpu_budget"], lw=1.6, ls="--", drawstyle="steps-post", label="GPU budget")
    ax.set_title("Power vs budget")
    ax.set_ylabel("power (W)")
    ax.set_ylim(bottom=0)


def _throughput_panel(ax, d: _Drawer) -> None:
    s = d.series
    ax.plot(*d.xy(s.throughput_tps), color=_COLORS["throughput"], lw=0.6, alpha=0.45, label="throughput (interval)")
    ax.plot(*d.xy(s.window_throughput_tps), color=_COLORS["throughput"], lw=1.4, label="throughput (QoS window)")
    if d.has(s.target_tps):
        ax.plot(*d.xy(s.target_tps), color=_COLORS["target"], lw=1.6, ls="--", drawstyle="steps-post", label="target")
    if s.qos_violation.any():
        t, share = d.xy(s.qos_violation.astype(np.float64))
        ax.fill_between(t, 0, 1, where=share > 0, step="post", color=_COLORS["target"], alpha=0.12,
                        transform=ax.get_xaxis_transform(), lw=0, label="target missed")
    ax.set_title("Throughput vs target")
    ax.set_ylabel("throughput (tokens/s)")
    ax.set_ylim(bottom=0)


def _caps_panel(ax, d: _Drawer) -> list:
    s = d.series
    ax.plot(*d.xy(s.power_cap_w), color=_COLORS["cap"], lw=1.4, drawstyle="steps-post", label="power cap per GPU (W)")
    ax.set_ylabel("power cap per GPU (W)")
    ax.set_ylim(0, max(1.0, float(np.nanmax(s.power_cap_w))) * 1.1)
    right = ax.twinx()
    right.plot(*d.xy(s.batch_cap), color=_COLORS["batch"], lw=1.4, drawstyle="steps-post", label="batch cap (sequences)")
    right.set_ylabel("batch cap (sequences)")
    right.set_ylim(0, max(1.0, float(np.nanmax(s.batch_cap))) * 1.1)
    ax.set_title("Power cap and batch cap")
    return [right]


def _tpj_panel(ax, d: _Drawer, run_tpj: float) -> None:
    s = d.series
    duration_s = float(s.t_s[-1] - s.t_s[0]) if len(s) > 1 else 0.0
    window_s = max(MIN_TPJ_WINDOW_S, duration_s / 200.0)
    t_s, tpj = tokens_per_joule_windows(s, window_s)
    ax.plot(t_s / d.time_scale, tpj, color=_COLORS["tpj"], lw=1.4, marker="." if len(tpj) < 60 else None,
            label=f"over {window_s:g} s windows")
    if math.isfinite(run_tpj):
        ax.axhline(run_tpj, color="0.3", lw=1.0, ls="--", label=f"whole run: {run_tpj:.3f}")
    ax.set_title("Tokens per joule (node energy)")
    ax.set_ylabel("tokens per node joule (tokens/J)")
    ax.set_ylim(bottom=0)


def _latency_panel(ax, d: _Drawer, kind: str) -> None:
    s = d.series
    for q in ("p50", "p99"):
        values = s.latency_s.get(f"{kind}_{q}_s")
        if values is not None:
            ax.plot(*d.xy(values), color=_COLORS[q], lw=1.2, label=q)
    ax.set_title("Time to first token" if kind == "ttft" else "Time per output token")
    ax.set_ylabel(f"{kind.upper()} (s)")
    ax.set_ylim(bottom=0)


def _header(series: RunSeries, totals: dict[str, float], name: str) -> str:
    minutes = series.duration_s / 60.0
    span = f"{series.duration_s:.0f} s" if minutes < 2 else f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.1f} h"
    restarts = f", {len(series.restarts_s)} restart(s)" if series.restarts_s else ""
    return (f"PALS run report: {name} (policy {series.policy}, {span}, {len(series)} intervals{restarts})\n"
            f"{totals['tokens_per_joule']:.3f} tokens/J (node)   mean node power {totals['mean_node_power_w']:.0f} W   "
            f"target missed in {100 * totals['qos_violation_share']:.1f}% of intervals   "
            f"{totals['config_changes']} configuration change{'' if totals['config_changes'] == 1 else 's'}")


def write_report(series: RunSeries, out_path: str | Path, title: str | None = None, dpi: int = 110) -> Path:
    """Draw the report of `series` and write it to `out_path` (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = _Drawer(series)
    totals = series.totals()
    latency = [k for k in ("ttft", "tpot") if any(key.startswith(k) for key in series.latency_s)]
    n = 4 + len(latency)
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.7 * n + 0.9), sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    twins = []
    _power_panel(axes[0], d)
    _throughput_panel(axes[1], d)
    twins += _caps_panel(axes[2], d)
    _tpj_panel(axes[3], d, totals["tokens_per_joule"])
    for ax, kind in zip(axes[4:], latency):
        _latency_panel(ax, d, kind)
    for ax in axes:
        for i, t_s in enumerate(series.restarts_s):
            ax.axvline(t_s / d.time_scale, color="0.4", lw=0.9, ls=":", label="controller restarted" if i == 0 else None)
        ax.grid(True, alpha=0.3)
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        for twin in twins if ax is axes[2] else []:
            more = twin.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.07 if ax is axes[2] else 1.01, 1.0),
                  fontsize=8, frameon=False)
    axes[-1].set_xlabel(f"time ({d.time_unit})")
    fig.suptitle(_header(series, totals, title or series.source.parent.name), fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    try:
        enforce(fig, str(out_path))  # titled, every axis labelled with its unit (a bug here otherwise)
    except BaseException:
        plt.close(fig)
        raise
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    out = Path(out_path)
    try:
        atomic_write_bytes(out, buffer.getvalue(), durable=False)
    except OSError as error:
        raise ConfigError(f"cannot write {out} ({error.strerror or error}); pass --out with a writable path") from None
    return out
