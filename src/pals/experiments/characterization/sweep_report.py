"""A short Markdown summary of one sweep (`pals sweep --report`): setup, headline figures, the
table of points and the figures beside it."""

from __future__ import annotations

import os
from pathlib import Path

from pals.core.io import atomic_write_text
from pals.experiments.markdown import markdown_table_lines
from pals.model.plots import characterization_summary
from pals.model.profile import Profile

POINT_COLUMNS = (
    "power cap (W)", "batch cap", "throughput (tokens/s)", "GPU power (W, mean per GPU)", "node power (W)",
    "tokens/J", "tokens/J (GPU)",
)


def write_characterization_report(
    profile: Profile, out_path: str | os.PathLike, plot_paths: list[Path] | None = None
) -> Path:
    """A short Markdown report of a sweep: setup, headline figures, the table, the figures.

    Minimal on purpose (the characterization report, `write_report`, is the full one).
    """
    summary = characterization_summary(profile)
    out = Path(out_path)
    lines = [
        f"# Characterization: {profile.model} on {profile.num_gpus}x {profile.gpu}, TP {profile.tp}, EP {profile.ep}",
        "",
        _setup_line(profile),
        f"- best tokens/J: {summary['best']['tokens_per_joule']:.3f} at {summary['best']['power_cap_w']:g} W, "
        f"batch {summary['best']['batch_cap']} ({summary['best']['throughput_tps']:.0f} tokens/s)",
        f"- batch max / batch min tokens/J at the largest cap: {summary['batch_gain_at_max_cap']:.2f}x",
        "- best cap per batch: "
        + ", ".join(f"batch {b}: {c:g} W" for b, c in summary["best_cap_per_batch_w"].items()),
        f"- peak tokens/J, joint frontier over batch-only frontier: {summary['joint_over_batch_only']:.3f}x",
        "",
        *markdown_table_lines(POINT_COLUMNS, _point_rows(profile)),
    ]
    if plot_paths:
        lines.append("")
        for path in plot_paths:
            lines.append(f"![{path.stem}]({os.path.relpath(path, out.parent)})")
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def _setup_line(profile: Profile) -> str:
    """The node, the load and the mean lengths, as far as the profile's metadata says."""
    workload = profile.metadata.get("workload") or {}
    rate = workload.get("arrival_rate_rps")
    return (
        f"- node: {profile.metadata.get('node', '?')}; load: "
        + ("saturating" if rate is None else f"Poisson {rate:g} requests/s")
        + (
            f"; mean prompt {workload.get('mean_prompt_tokens', float('nan')):.0f} / "
            f"output {workload.get('mean_output_tokens', float('nan')):.0f} tokens"
            if workload
            else ""
        )
    )


def _point_rows(profile: Profile) -> list[list[str]]:
    """One row per measured point, by cap then batch, each number in its own format."""
    rows = []
    for row in sorted(profile.rows, key=lambda r: (r["power_cap_w"], r["batch_cap"])):
        node_w = row.get("node_power_w", float("nan"))
        rows.append([
            f"{row['power_cap_w']:g}", str(int(row["batch_cap"])), f"{row['throughput_tps']:.1f}",
            f"{row['gpu_power_w']:.1f}", f"{node_w:.1f}", f"{row['tokens_per_joule']:.4f}",
            f"{row['tokens_per_joule_gpu']:.4f}",
        ])
    return rows
