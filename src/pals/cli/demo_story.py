"""What `pals demo` shows: the best static configuration, the table, the one-line caption and the figure.

Everything here is computed from the runs' summaries and records: the caption's words are chosen by
the measured values (`caption`), never written in advance, so it cannot go stale when the simulator
or a policy changes. The demo runs one seed: a ratio within `TIE_FRAC` of 1 reads as a tie, and the
caption says the figures are one seed's (`pals experiment` gives intervals over seeds).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from pals.control.slo import Slo
from pals.runtime.hindsight import HindsightResult, MeetCriteria

TIE_FRAC = 0.02
"""Ratios of tokens/J within this fraction of 1 read as ties in the caption (one seed: no interval)."""
MET_PCT = 1.0
"""A policy "meets" the SLO or "stays under" the budget when at most this share of its intervals breaks it. Units: %."""
CAPTION_WRAP_CHARS = 150
"""The figure's caption is wrapped at this many characters a line."""
STATIC_NAME = "static"
"""The best static configuration's key in the demo's summaries."""


@dataclass(frozen=True)
class StaticChoice:
    """The best fixed configuration of the hindsight sweep and the constraints it was held to."""

    row: Any
    """The chosen `HindsightRow` (None: the sweep ran no configuration)."""
    meets: str
    """What it meets, in words ("PALS's QoS, SLO and budget figures", ...)."""
    held_to: str | None
    """"qos": PALS's QoS, SLO and budget figures; "slo": its SLO and budget figures only; None: neither."""
    criteria: MeetCriteria | None
    """The criteria it met (None: it meets none, the best tokens/J is shown)."""


def choose_static(sweep: HindsightResult, pals: Mapping[str, Any]) -> tuple[HindsightResult, StaticChoice]:
    """The best static configuration held to PALS's own figures: QoS, SLO and budget; if none meets all
    three, SLO and budget (the latency and power constraints); else the best tokens/J, said so.

    Returns the sweep judged by the criteria the choice used (its table's `meets` column) and the choice.
    """
    key = "tokens_per_joule"
    full = MeetCriteria.no_worse_than(pals)
    tiers = ((full, "PALS's QoS, SLO and budget figures", "qos"),
             (MeetCriteria(max_budget_overshoot_pct=full.max_budget_overshoot_pct,
                           max_slo_violation_pct=full.max_slo_violation_pct),
              "PALS's SLO and budget figures (none meets its QoS too)", "slo"))
    for criteria, words, held_to in tiers:
        meeting = [r for r in sweep.rows if criteria.meets(sweep.summaries[_config(r)])]
        if meeting:
            judged = _judged(sweep, criteria)
            return judged, StaticChoice(judged.best, words, held_to, criteria)
    best = max(sweep.rows, key=lambda r: getattr(r, key)) if sweep.rows else None
    return sweep, StaticChoice(best, "none of PALS's SLO and budget figures (no fixed configuration does)", None, None)


def _judged(sweep: HindsightResult, criteria: MeetCriteria) -> HindsightResult:
    rows = []
    for row in sweep.rows:
        failures = criteria.failures(sweep.summaries[_config(row)])
        rows.append(replace(row, meets=not failures, why_not="; ".join(failures)))
    return HindsightResult(rows, criteria, sweep.objective, sweep.summaries)


def _config(row):
    from pals.control.types import Configuration

    return Configuration(row.power_cap_w, row.batch_cap)


def static_label(row) -> str:
    return f"static {row.power_cap_w:g} W/{row.batch_cap}"


COLUMNS = (
    ("policy", "policy", "{}"),
    ("tokens_per_joule", "tok/J node", "{:.3f}"),
    ("x_baseline", "x baseline", "{:.2f}"),
    ("throughput_tps", "tok/s", "{:.0f}"),
    ("qos_violation_pct", "QoS miss %", "{:.1f}"),
    ("slo_violation_pct", "SLO viol %", "{:.1f}"),
    ("tpot_p99_ms", "TPOT p99 ms", "{:.1f}"),
    ("budget_overshoot_pct", "over budget %", "{:.1f}"),
    ("mean_power_w", "mean W", "{:.0f}"),
    ("config_changes", "changes", "{}"),
)
"""The table's columns: summary key, heading, format. "QoS miss %" is the strict QoS violation share."""


def _cell(summary: Mapping[str, Any], key: str, fmt: str, baseline_tpj: float | None) -> str:
    if key == "x_baseline":
        value = summary["tokens_per_joule"] / baseline_tpj if baseline_tpj else None
    else:
        value = summary.get(key)
    return "-" if value is None else fmt.format(value)


def format_table(summaries: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> str:
    """Fixed-width comparison table, one row per policy (ratios to the baseline's tokens/J when it ran)."""
    labels = labels or {}
    base = summaries.get("baseline", {}).get("tokens_per_joule") or None
    header = [title for _, title, _ in COLUMNS]
    rows = [[labels.get(name, name) if key == "policy" else _cell(s, key, fmt, base) for key, _, fmt in COLUMNS]
            for name, s in summaries.items()]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdicts:
    """The demo's comparisons, each computed from the summaries."""

    pals_over_baseline: float | None
    """PALS's tokens/J over the baseline's (None: one of them did not run). Units: x."""
    pals_over_static: float | None
    """PALS's tokens/J over the best static configuration's (None: the sweep did not run). Units: x."""
    pals_meets_slo: bool | None
    """PALS broke the SLO in at most `MET_PCT` of its intervals (None: no SLO figures)."""
    baseline_meets_slo: bool | None
    """The same for the baseline."""
    pals_under_budget: bool | None
    """PALS's window power was over the budget in at most `MET_PCT` of its intervals."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _meets(summary: Mapping[str, Any] | None, key: str) -> bool | None:
    if summary is None or summary.get(key) is None:
        return None
    return float(summary[key]) <= MET_PCT


def _ratio(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> float | None:
    if a is None or b is None or not b.get("tokens_per_joule"):
        return None
    return float(a["tokens_per_joule"]) / float(b["tokens_per_joule"])


def verdicts(summaries: Mapping[str, Mapping[str, Any]]) -> Verdicts:
    pals, base, static = summaries.get("pals"), summaries.get("baseline"), summaries.get(STATIC_NAME)
    return Verdicts(_ratio(pals, base), _ratio(pals, static), _meets(pals, "slo_violation_pct"),
                    _meets(base, "slo_violation_pct"), _meets(pals, "budget_overshoot_pct"))


def _versus(ratio: float, what: str) -> str:
    if abs(ratio - 1.0) <= TIE_FRAC:
        return f"ties {what} on tokens/J ({ratio:.2f}x)"
    return f"{'beats' if ratio > 1 else 'does not beat'} {what} on tokens/J ({ratio:.2f}x)"


def caption(summaries: Mapping[str, Mapping[str, Any]], slo: Slo, static: StaticChoice | None = None,
            interrupted: bool = False) -> str:
    """One line saying what the viewer should see, every word chosen by the numbers."""
    v = verdicts(summaries)
    pals, base = summaries.get("pals"), summaries.get("baseline")
    if pals is None or base is None:
        ran = ", ".join(summaries) or "nothing"
        return f"interrupted before PALS and the baseline both ran (ran: {ran}); no comparison"
    parts = [f"PALS: {v.pals_over_baseline:.2f}x baseline tokens/J"]
    slo_words = slo.describe()
    if v.pals_meets_slo and v.baseline_meets_slo is False:
        parts.append(f"meets the SLO ({slo_words}) the baseline breaks in {base['slo_violation_pct']:.0f} % of intervals")
    elif v.pals_meets_slo:
        parts.append(f"both meet the SLO ({slo_words})")
    else:
        parts.append(f"breaks the SLO ({slo_words}) in {pals['slo_violation_pct']:.0f} % of intervals "
                     f"(baseline {base['slo_violation_pct']:.0f} %)")
    if pals["qos_violation_pct"] > base["qos_violation_pct"] + MET_PCT:
        parts.append(f"misses the throughput target more often ({pals['qos_violation_pct']:.0f} % of intervals "
                     f"vs {base['qos_violation_pct']:.0f} %)")
    parts.append("stays under the budget step" if v.pals_under_budget
                 else f"over the budget in {pals['budget_overshoot_pct']:.1f} % of intervals")
    if v.pals_over_static is not None and static is not None and static.row is not None:
        held = {None: "", "qos": " at the same QoS, SLO and budget figures",
                "slo": " at the same SLO and budget figures"}
        parts.append(_versus(v.pals_over_static, f"the best static configuration{held[static.held_to]} "
                                                 f"({static_label(static.row)})"))
    tail = "; interrupted: partial runs" if interrupted else ""
    return ", ".join(parts) + f" (one seed{tail})"


def plot_demo(results: Mapping[str, Any], path: Path, *, slo: Slo, labels: Mapping[str, str], title: str,
              caption_text: str) -> None:
    """Time panels (node power vs budget, TPOT vs SLO, power cap, batch cap) beside tokens/J ratio bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pals.model.plot_rules import enforce

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(13, 9.5))
    grid = fig.add_gridspec(4, 2, width_ratios=(3.2, 1.0))
    axes = [fig.add_subplot(grid[0, 0])]
    axes += [fig.add_subplot(grid[i, 0], sharex=axes[0]) for i in range(1, 4)]
    bars = fig.add_subplot(grid[:, 1])
    _time_panels(axes, results, slo, labels)
    _ratio_bars(bars, {name: r.summary for name, r in results.items()}, labels)
    fig.suptitle("\n".join([title, *textwrap.wrap(caption_text, CAPTION_WRAP_CHARS)]), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    enforce(fig, str(path))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _time_panels(axes, results: Mapping[str, Any], slo: Slo, labels: Mapping[str, str]) -> None:
    budget_drawn = False
    for name, result in results.items():
        recs = [r for r in result.records if r.get("sample")]
        if not recs:
            continue
        t = [r["t_s"] for r in recs]
        label = labels.get(name, name)
        line, = axes[0].plot(t, [r["sample"]["node_power_w"] for r in recs], lw=0.8, label=label)
        if not budget_drawn:
            axes[0].step(t, [r["budget"]["budget_w"] if r["budget"] else float("nan") for r in recs], "k--",
                         where="post", lw=1.2, label="node budget")
            budget_drawn = True
        tpot = [r["sample"].get(f"tpot_{slo.label}_s") for r in recs]
        axes[1].plot(t, [float("nan") if v is None else 1000.0 * v for v in tpot], lw=0.8, color=line.get_color(),
                     label=label)
        axes[2].step(t, [r["decision"]["config"]["power_cap_w"] for r in recs], where="post", lw=1.0,
                     color=line.get_color(), label=label)
        axes[3].step(t, [r["decision"]["config"]["batch_cap"] for r in recs], where="post", lw=1.0,
                     color=line.get_color(), label=label)
    if slo.tpot_ms is not None:
        axes[1].axhline(slo.tpot_ms, color="k", ls="--", lw=1.2, label=f"SLO ({slo.describe()})")
    for ax, (title, ylabel) in zip(axes, (("Node power vs budget", "node power (W)"),
                                          (f"TPOT {slo.label} over the last 30 s vs the SLO", f"TPOT {slo.label} (ms)"),
                                          ("GPU power cap", "power cap per GPU (W)"),
                                          ("Batch cap", "batch cap (sequences)"))):
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper right", fontsize=7, ncol=4)
        ax.grid(alpha=0.3)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("simulated time (s)")


def _ratio_bars(ax, summaries: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str]) -> None:
    """Tokens/J over the baseline's, bars grown from 1x (small differences show as bar lengths)."""
    base = summaries.get("baseline", {}).get("tokens_per_joule")
    names = [n for n in summaries if base]
    ratios = [summaries[n]["tokens_per_joule"] / base for n in names]
    colors = [f"C{i}" for i in range(len(names))]
    ax.bar(range(len(names)), [r - 1.0 for r in ratios], bottom=1.0, color=colors, width=0.6)
    for i, r in enumerate(ratios):
        ax.annotate(f"{r:.3f}x", (i, r), ha="center", va="bottom" if r >= 1 else "top", fontsize=8)
    ax.axhline(1.0, color="k", lw=1.0)
    if ratios:  # zoomed on the bars (and 1x): the differences fill the axis
        low, high = min(1.0, *ratios), max(1.0, *ratios)
        pad = 0.15 * max(high - low, 0.01)
        ax.set_ylim(low - pad, high + pad)
    ax.set_xticks(range(len(names)), [labels.get(n, n) for n in names], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("tokens/J (node) over the baseline's (x)")
    ax.set_title("Tokens per joule vs baseline\n(bars from 1x)", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
