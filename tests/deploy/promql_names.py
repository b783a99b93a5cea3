"""Metric names in a PromQL expression, and the metric table of docs/metrics.md, for the deploy tests.

A small tokenizer, not a PromQL parser: it drops strings, label matchers `{...}`, range and
subquery brackets `[...]`, label lists after `by`/`without`/`on`/`ignoring`/`group_left`/
`group_right`, Grafana variables (`$node`, `${datasource}`, `$__rate_interval`) and numbers;
an identifier left standing alone or before `{` or `[` is a metric name unless it is a PromQL
function (before `(`), aggregation or keyword.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

KEYWORDS = frozenset(
    """sum avg min max count stddev stdvar topk bottomk quantile count_values group limitk limit_ratio
    by without on ignoring group_left group_right and or unless bool offset atan2 inf nan""".split()
)
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})

_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"(0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?)([smhdwy]|ms)?")
_VARIABLE = re.compile(r"\$(\{[^}]*\}|\w+)")


def _skip_bracketed(text: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index after the bracket that closes the one at `i` (strings inside are honoured)."""
    depth = 0
    while i < len(text):
        ch = text[i]
        if ch in "\"'`":
            i = _skip_string(text, i)
            continue
        if ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced {open_ch}{close_ch} in {text!r}")


def _skip_string(text: str, i: int) -> int:
    quote = text[i]
    i += 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" and quote != "`" else 1
    if i >= len(text):
        raise ValueError(f"unterminated string in {text!r}")
    return i + 1


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` reads."""
    names: set[str] = set()
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch.isspace() or ch in "()+-*/%^=!<>,":
            i += 1
        elif ch in "\"'`":
            i = _skip_string(expr, i)
        elif ch == "{":
            i = _skip_bracketed(expr, i, "{", "}")
        elif ch == "[":
            i = _skip_bracketed(expr, i, "[", "]")
        elif ch == "$":
            match = _VARIABLE.match(expr, i)
            if not match:
                raise ValueError(f"stray $ in {expr!r}")
            i = match.end()
        elif ch.isdigit() or (ch == "." and i + 1 < len(expr) and expr[i + 1].isdigit()):
            i = _NUMBER.match(expr, i).end()
        else:
            match = _IDENT.match(expr, i)
            if not match:
                raise ValueError(f"unexpected {ch!r} at {i} in {expr!r}")
            word, i = match.group(0), match.end()
            rest = expr[i:].lstrip()
            if word.lower() in LABEL_LIST_KEYWORDS:
                if rest.startswith("("):
                    i = _skip_bracketed(expr, len(expr) - len(rest), "(", ")")
            elif word.lower() in KEYWORDS or rest.startswith("("):
                pass  # an aggregation, keyword or function
            else:
                names.add(word)
    return names


_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$", re.S)


def template_query_names(query: str) -> set[str]:
    """Metric names in a Grafana Prometheus variable query (`label_values(EXPR, label)` or PromQL)."""
    match = _LABEL_VALUES.match(query)
    return metric_names(match.group(1) if match else query)


@dataclass(frozen=True)
class MetricRow:
    name: str
    type: str
    unit: str
    labels: tuple[str, ...]
    status: str
    meaning: str


_ROW = re.compile(r"^\|\s*`([A-Za-z_:][A-Za-z0-9_:]*)`\s*\|(.*)\|\s*$")


def documented_metrics(path: Path) -> dict[str, MetricRow]:
    """The rows of the metric table in docs/metrics.md, by name (raises on a malformed row)."""
    rows: dict[str, MetricRow] = {}
    for line in path.read_text().splitlines():
        match = _ROW.match(line)
        if not match:
            continue
        cells = [c.strip() for c in match.group(2).split("|")]
        if len(cells) != 5:
            raise ValueError(f"{path.name}: a table row needs 6 cells: {line}")
        kind, unit, labels, status, meaning = cells
        if match.group(1) in rows:
            raise ValueError(f"{path.name}: {match.group(1)} is documented twice")
        label_names = tuple(re.findall(r"[a-z_]+", re.sub(r"\([^)]*\)", "", labels)))
        rows[match.group(1)] = MetricRow(match.group(1), kind, unit, label_names, status, meaning)
    return rows
