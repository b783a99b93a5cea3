"""Characterization figures of a profile (the paper's Figures 1 and 3) and its headline figures.

- tokens/J against power cap, one line per batch cap;
- tokens/J against batch cap, one line per power cap;
- Pareto frontiers of throughput against tokens/J for batch-only (cap fixed at
  the largest profiled cap), cap-only (batch fixed at the largest profiled batch)
  and joint (every point) configurations.

matplotlib is imported inside the functions (Agg backend), so importing this
module costs nothing. A sweep's Markdown summary is written by
`pals.experiments.characterization.sweep_report` (reports live with the experiments).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pals.model.profile import Profile


def pareto_front(throughput_tps, tokens_per_joule) -> np.ndarray:
    """Indices of the points no other point beats on both throughput and tokens/J, by rising throughput."""
    t = np.asarray(throughput_tps, dtype=np.float64)
    e = np.asarray(tokens_per_joule, dtype=np.float64)
    order = np.lexsort((-e, -t))  # throughput descending, ties: efficiency descending
    front: list[int] = []
    best_e = -np.inf
    for i in order:
        if e[i] > best_e:
            front.append(int(i))
            best_e = e[i]
    return np.asarray(front[::-1], dtype=int)


def frontiers(profile: Profile) -> dict[str, np.ndarray]:
    """Row indices of the batch-only, cap-only and joint Pareto frontiers."""
    caps = profile.column("power_cap_w")
    batches = profile.column("batch_cap")
    t = profile.column("throughput_tps")
    e = profile.column("tokens_per_joule")
    out: dict[str, np.ndarray] = {}
    for name, mask in (
        ("batch-only", caps == caps.max()),
        ("cap-only", batches == batches.max()),
        ("joint", np.ones(len(t), dtype=bool)),
    ):
        idx = np.flatnonzero(mask)
        out[name] = idx[pareto_front(t[idx], e[idx])]
    return out


def plot_profile(profile: Profile, out_prefix: str | os.PathLike, title: str | None = None) -> list[Path]:
    """Write the three PNG figures beside `out_prefix` (`<prefix>_tpj_vs_cap.png`, ...).

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    caps = profile.column("power_cap_w")
    batches = profile.column("batch_cap")
    t = profile.column("throughput_tps")
    e = profile.column("tokens_per_joule")
    ylabel = "tokens per node joule (tokens/J)" if profile.has_node_power else "tokens per GPU joule (tokens/J)"
    name = title or f"{profile.model} on {profile.num_gpus}x {profile.gpu}, TP {profile.tp}"
    paths: list[Path] = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for batch in np.unique(batches):
        sel = batches == batch
        order = np.argsort(caps[sel])
        ax.plot(caps[sel][order], e[sel][order], marker="o", label=f"batch {int(batch)}")
    ax.set_xlabel("power cap per GPU (W)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{name}: tokens/J vs power cap", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, prefix.with_name(prefix.name + "_tpj_vs_cap.png")))

    fig, ax = plt.subplots(figsize=(6, 4))
    for cap in np.unique(caps):
        sel = caps == cap
        order = np.argsort(batches[sel])
        ax.plot(batches[sel][order], e[sel][order], marker="o", label=f"{cap:g} W")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch cap (max running sequences per replica)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{name}: tokens/J vs batch cap", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, prefix.with_name(prefix.name + "_tpj_vs_batch.png")))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(t, e, color="0.8", s=12, label="all configurations")
    styles = {"batch-only": ("tab:blue", "s"), "cap-only": ("tab:orange", "^"), "joint": ("tab:green", "o")}
    labels = {
        "batch-only": f"batch only (cap {caps.max():g} W)",
        "cap-only": f"cap only (batch {int(batches.max())})",
        "joint": "joint cap x batch",
    }
    members = {"batch-only": caps == caps.max(), "cap-only": batches == batches.max()}
    for key, idx in frontiers(profile).items():
        color, marker = styles[key]
        if key in members:  # the class's other points, faint, so a short frontier still shows its range
            ax.scatter(t[members[key]], e[members[key]], color=color, marker=marker, s=14, alpha=0.3)
        ax.plot(t[idx], e[idx], color=color, marker=marker, label=labels[key])
    ax.set_xlabel("throughput (generated tokens/s)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{name}: Pareto frontiers", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    paths.append(_save(fig, prefix.with_name(prefix.name + "_pareto.png")))
    return paths


def _save(fig, path: Path, strict: bool = True) -> Path:
    """Lay out, check the plot rules (`pals.model.plot_rules`: raise, or with `strict=False` warn) and write."""
    import matplotlib.pyplot as plt

    from pals.model.plot_rules import enforce

    fig.tight_layout()
    try:
        enforce(fig, str(path), strict=strict)
    except BaseException:
        plt.close(fig)
        raise
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def characterization_summary(profile: Profile) -> dict[str, Any]:
    """Headline figures of a sweep: best configuration, batch and cap effects, frontier gains."""
    caps = profile.column("power_cap_w")
    batches = profile.column("batch_cap")
    t = profile.column("throughput_tps")
    e = profile.column("tokens_per_joule")
    best = int(np.argmax(e))
    max_cap, max_batch, min_batch = caps.max(), batches.max(), batches.min()
    at_max_cap = caps == max_cap
    e_hi = e[at_max_cap & (batches == max_batch)]
    e_lo = e[at_max_cap & (batches == min_batch)]
    front = frontiers(profile)
    peak_batch_only = float(e[front["batch-only"]].max())
    peak_cap_only = float(e[front["cap-only"]].max())
    peak_joint = float(e[front["joint"]].max())
    best_cap_per_batch = {
        int(b): float(caps[batches == b][np.argmax(e[batches == b])]) for b in np.unique(batches)
    }
    return {
        "best": {
            "power_cap_w": float(caps[best]),
            "batch_cap": int(batches[best]),
            "tokens_per_joule": float(e[best]),
            "throughput_tps": float(t[best]),
        },
        "batch_gain_at_max_cap": float(e_hi[0] / e_lo[0]) if e_hi.size and e_lo.size else float("nan"),
        "best_cap_per_batch_w": best_cap_per_batch,
        "peak_tpj_batch_only": peak_batch_only,
        "peak_tpj_cap_only": peak_cap_only,
        "peak_tpj_joint": peak_joint,
        "joint_over_batch_only": peak_joint / peak_batch_only,
    }


def plot_relative_curves(
    panels: dict[str, dict[str, tuple[Any, Any]]],
    out_path: str | os.PathLike,
    title: str,
    xlabel: str = "power cap per GPU (W)",
    ylabel: str = "tokens/J relative to the line's best (x)",
    normalize: bool = True,
    vlines: dict[str, float] | None = None,
) -> Path:
    """Side-by-side panels of curves, each line divided by its own maximum (so models of 1 and 8 tokens/J share an axis).

    Args:
        panels: panel title -> line label -> (x values, y values).
        out_path: PNG to write.
        title: Figure title.
        normalize: Divide each line by its maximum.
        vlines: Dashed vertical markers (e.g. the paper's best cap): keyed by a line label (drawn in
            that line's colour, in every panel) or by a panel title (drawn black in that panel).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vlines = vlines or {}
    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), sharey=normalize, squeeze=False)
    colors: dict[str, Any] = {}
    for ax, (panel, lines) in zip(axes[0], panels.items()):
        for label, (x, y) in lines.items():
            x = np.asarray(x, dtype=np.float64)
            y = np.asarray(y, dtype=np.float64)
            if normalize and y.size:
                y = y / np.nanmax(y)
            (line,) = ax.plot(x, y, marker="o", label=label, color=colors.get(label))
            colors.setdefault(label, line.get_color())
            if label in vlines:
                ax.axvline(vlines[label], color=colors[label], linestyle="--", alpha=0.6)
        if panel in vlines:
            ax.axvline(vlines[panel], color="black", linestyle="--", alpha=0.6, label="paper's best")
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(xlabel)
        if not normalize or ax is axes[0][0]:  # panels of their own scale each name it
            ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, Path(out_path))


def plot_grouped_bars(
    categories: list[str],
    series: dict[str, list[float]],
    out_path: str | os.PathLike,
    title: str,
    ylabel: str,
    log: bool = False,
    band: tuple[float, float] | None = None,
    band_label: str = "paper",
) -> Path:
    """Grouped bars: one group per category, one bar per series (NaN: no bar), an optional shaded band.

    Bars whose tops differ by less than `plot_rules.SMALL_DIFFERENCE_FRAC` of their height are drawn on
    a zoomed axis (said in the title), so the differences show. The caller's title and label are
    checked against the plot rules and reported (`PlotRuleWarning`), not refused.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(categories) + 2.5), 4))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(categories))
    for i, (label, values) in enumerate(series.items()):
        vals = np.asarray(values, dtype=np.float64)
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, np.nan_to_num(vals), width, label=label)
        for bar, value in zip(bars, vals):
            if np.isfinite(value):
                ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                            fontsize=6)
    if band is not None:
        ax.axhspan(band[0], band[1], color="tab:green", alpha=0.15, label=band_label)
    if log:
        ax.set_yscale("log")
        finite = [v for values in series.values() for v in values if np.isfinite(v) and v > 0]
        if finite:  # bars grow from 1x (or below the smallest), not from an arbitrary axis limit
            ax.set_ylim(bottom=min(1.0, 0.8 * min(finite)))
    elif _zoom_small_differences(ax, series, band):
        title += " (axis zoomed)"
    ax.set_xticks(x)
    ax.set_xticklabels(categories, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, Path(out_path), strict=False)


def _zoom_small_differences(ax, series: dict[str, list[float]], band: tuple[float, float] | None) -> bool:
    """Zoom the value axis onto positive bars that differ by under the plot rules' threshold; True if zoomed."""
    from pals.model.plot_rules import SMALL_DIFFERENCE_FRAC

    finite = [v for values in series.values() for v in values if np.isfinite(v)]
    if len(finite) < 2 or min(finite) <= 0:
        return False
    low, high = min(finite), max(finite)
    if not 0 < high - low < SMALL_DIFFERENCE_FRAC * high:
        return False
    if band is not None:
        low, high = min(low, band[0]), max(high, band[1])
    pad = 0.5 * (high - low)
    ax.set_ylim(low - pad, high + pad)
    return True
