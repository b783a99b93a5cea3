"""Experiment output: tables (CSV + Markdown), PNG plots, report.md and summary.json.

One `Report` per experiment. Sections hold paragraphs, tables and images in
order; `comparison` rows put the paper's number beside ours with a verdict,
and each section can carry a "why it differs" paragraph that names the
mechanism. `write()` puts everything under the output folder:

    OUT/report.md        the report, images linked relative to OUT
    OUT/summary.json     machine-readable: metrics, comparisons, checks, timing
    OUT/tables/*.csv     every table
    OUT/*.png            every figure (saved by the experiment through `figure_path`)
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pals.core.io import atomic_write_text, dumps_json
from pals.errors import ConfigError
from pals.experiments.markdown import format_cell, markdown_table


@dataclass
class Table:
    name: str
    """File stem (letters, digits, '-' and '_')."""
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class Comparison:
    """One paper number beside ours."""

    quantity: str
    paper: str
    ours: str
    verdict: str
    """'matches', 'same direction', 'differs' or 'not comparable' (plus words)."""


@dataclass
class Check:
    """One claim the experiment must show, with the measured evidence."""

    claim: str
    passed: bool
    evidence: str


@dataclass
class Section:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)


def _csv_cell(value: Any) -> Any:
    """A table value as the CSV writes it: NaN and inf blank, numpy scalars as Python numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _csv_cell(value.item())
    return value


class Report:
    """Collects one experiment's results and writes them under `out_dir`.

    Args:
        name: experiment name (e.g. 'single-node').
        title: report heading.
        out_dir: output folder (created).
        quick: whether this was a --quick run (stated in the report).
    """

    def __init__(self, name: str, title: str, out_dir: str | Path, quick: bool) -> None:
        self.name = name
        self.title = title
        self.out_dir = Path(out_dir)
        self.quick = quick
        self.intro: list[str] = []
        self.sections: list[Section] = []
        self.comparisons: list[Comparison] = []
        self.checks: list[Check] = []
        self.metrics: dict[str, Any] = {}
        self.tables: list[Table] = []
        self.figures: list[str] = []
        self.setup: dict[str, Any] = {}
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create output folder {self.out_dir} ({error}); give a writable --out") from None

    def section(self, title: str) -> Section:
        sec = Section(title)
        self.sections.append(sec)
        return sec

    def paragraph(self, section: Section, text: str) -> None:
        section.blocks.append(("text", text.strip()))

    def table(self, section: Section, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "") -> Table:
        tab = Table(name, list(columns), [list(r) for r in rows], caption)
        self.tables.append(tab)
        section.blocks.append(("table", tab))
        return tab

    def figure_path(self, stem: str) -> Path:
        """Where to save a PNG named `stem` (the experiment saves it; `image` links it)."""
        return self.out_dir / f"{stem}.png"

    def image(self, section: Section, stem: str, caption: str) -> None:
        path = self.figure_path(stem)
        if path.exists():
            self.figures.append(path.name)
            section.blocks.append(("image", (path.name, caption)))

    def why(self, section: Section, text: str) -> None:
        """The 'why it differs' paragraph: which mechanism decides the gap to the paper."""
        section.blocks.append(("why", text.strip()))

    def compare(self, quantity: str, paper: str, ours: str, verdict: str) -> None:
        self.comparisons.append(Comparison(quantity, paper, ours, verdict))

    def check(self, claim: str, passed: bool, evidence: str) -> None:
        self.checks.append(Check(claim, bool(passed), evidence))

    def full_setup(self) -> dict[str, Any]:
        """`setup` plus which physics the simulated nodes ran (`lab_physics.physics_label`) unless it says so."""
        from pals.experiments.lab_physics import physics_label

        return {**self.setup, "physics": self.setup.get("physics", physics_label())}

    def markdown(self, wall_s: float | None = None) -> str:
        lines = [f"# {self.title}", ""]
        mode = "quick (reduced grid and duration; numbers are indicative)" if self.quick else "full"
        lines.append(f"Experiment `{self.name}`, mode: {mode}." + (f" Wall time {wall_s:.1f} s." if wall_s else ""))
        lines.append("")
        lines.extend(p.strip() + "\n" for p in self.intro)
        setup = self.full_setup()
        if setup:
            lines.append("Setup: " + "; ".join(f"{k} = {format_cell(v)}" for k, v in setup.items()) + ".")
            lines.append("")
        if self.comparisons:
            lines += ["## Paper vs ours", ""]
            lines.append(markdown_table(["quantity", "paper", "ours", "verdict"],
                                        [[c.quantity, c.paper, c.ours, c.verdict] for c in self.comparisons]))
            lines.append("")
        if self.checks:
            lines += ["## Checks", ""]
            lines.append(markdown_table(["claim", "holds", "evidence"],
                                        [[c.claim, "yes" if c.passed else "**no**", c.evidence] for c in self.checks]))
            lines.append("")
        for sec in self.sections:
            lines += [f"## {sec.title}", ""]
            for kind, block in sec.blocks:
                if kind == "text":
                    lines += [block, ""]
                elif kind == "why":
                    lines += [f"**Why it differs.** {block}", ""]
                elif kind == "table":
                    if block.caption:
                        lines += [f"*{block.caption}* (tables/{block.name}.csv)", ""]
                    lines += [markdown_table(block.columns, block.rows), ""]
                elif kind == "image":
                    name, caption = block
                    lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
        return "\n".join(lines).rstrip() + "\n"

    def write(self, wall_s: float | None = None) -> dict[str, Any]:
        """Write report.md, summary.json and tables/*.csv; return the summary dict."""
        tables_dir = self.out_dir / "tables"
        tables_dir.mkdir(exist_ok=True)
        for tab in self.tables:
            lines = []
            buffer = _Lines(lines)
            writer = csv.writer(buffer)
            writer.writerow(tab.columns)
            for row in tab.rows:
                writer.writerow([_csv_cell(v) for v in row])
            atomic_write_text(tables_dir / f"{tab.name}.csv", "".join(lines))
        atomic_write_text(self.out_dir / "report.md", self.markdown(wall_s))
        summary = {
            "experiment": self.name,
            "title": self.title,
            "quick": self.quick,
            "wall_s": None if wall_s is None else round(wall_s, 2),
            "setup": self.full_setup(),
            "metrics": self.metrics,
            "comparisons": [c.__dict__ for c in self.comparisons],
            "checks": [c.__dict__ for c in self.checks],
            "all_checks_passed": all(c.passed for c in self.checks),
            "tables": [f"tables/{t.name}.csv" for t in self.tables],
            "figures": self.figures,
            "report": "report.md",
        }
        text = dumps_json(summary, indent=2) + "\n"
        atomic_write_text(self.out_dir / "summary.json", text)
        return json.loads(text)  # the summary as written: NaN as None, numpy as Python numbers


class _Lines:
    """A minimal file-like sink for csv.writer."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> int:
        self.lines.append(text)
        return len(text)
