"""Markdown tables: the one writer behind every report (experiments, characterization, sweeps).

A cell that is already a string is written as it is (a caller that wants its own number format
formats first); other values go through `format_cell`. A `|` inside a cell becomes `/`, so a
cell never breaks the table.
"""

from __future__ import annotations

import math
from typing import Any, Sequence


def format_cell(value: Any) -> str:
    """A value as a report shows it: yes/no, "-" for None and NaN, floats to about three significant digits."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.1f}"
        if magnitude >= 1:
            return f"{value:.3g}" if magnitude < 10 else f"{value:.2f}".rstrip("0").rstrip(".")
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A header row, a `|---|` rule and one line per row (no trailing newline)."""
    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(format_cell(v).replace("|", "/") for v in row) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def markdown_table_lines(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """`markdown_table` as a list of lines, for reports built as a list of lines joined by newlines."""
    return markdown_table(columns, rows).split("\n")
