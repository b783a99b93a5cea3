"""The rules every PALS figure keeps, checked on the figure itself before it is saved.

1. **Titled**: the figure has a title (a suptitle, or a title on one of its panels).
2. **Labelled with units**: every axis that shows tick values has a label naming its unit in
   parentheses or brackets ("node power (W)", "tokens/J ratio to baseline (x)"). An axis whose ticks
   are category names (bars per policy, per model) needs no label; an axis whose tick labels are
   hidden (a panel sharing its time axis with the one below, the hidden x axis of a twin) needs none.
3. **Small differences readable**: bars whose tops differ by less than `SMALL_DIFFERENCE_FRAC` of
   their drawn length (the differences a reader cannot see on a bar grown from zero) are flagged:
   draw them as ratios to a reference (bars grown from 1x) or zoom the axis (set its lower limit
   near the smallest bar). Equal bars are not flagged: there is no difference to see.

`figure_problems(fig)` lists what a figure breaks, in words; `enforce(fig, where)` raises
`PlotRuleError` on any (PALS's own figures: `pals demo`, `pals report`, the profile and
characterization plots) or, with `strict=False`, reports them as a `PlotRuleWarning`
(`pals.experiments.common.save_figure`, which experiments of their own call).
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

SMALL_DIFFERENCE_FRAC = 0.05
"""Bars whose tops differ by less than this fraction of their drawn length are flagged (rule 3)."""
UNIT_PATTERN = re.compile(r"\([^()]+\)|\[[^\[\]]+\]")
"""An axis label names its unit in parentheses or brackets (rule 2)."""


class PlotRuleError(ValueError):
    """A PALS figure breaks a plot rule (a bug in the code that drew it, not in the user's input)."""


class PlotRuleWarning(UserWarning):
    """A figure saved through a reporting (non-strict) path breaks a plot rule."""


def _shows_data(ax) -> bool:
    return bool(ax.get_visible() and ax.axison and (ax.lines or ax.patches or ax.collections or ax.images))


def _categorical(axis) -> bool:
    """Ticks that name categories: string categories, or fixed ticks given words for labels."""
    from matplotlib.category import StrCategoryFormatter
    from matplotlib.ticker import FixedFormatter, FixedLocator, FuncFormatter

    formatter = axis.get_major_formatter()
    if isinstance(formatter, (FixedFormatter, StrCategoryFormatter)):
        return True
    if isinstance(axis.get_major_locator(), FixedLocator) and isinstance(formatter, FuncFormatter):
        texts = formatter.format_ticks(list(axis.get_majorticklocs()))
        return any(ch.isalpha() for text in texts for ch in text)
    return False


def _tick_labels_shown(axis) -> bool:
    if not axis.get_visible():
        return False
    ticks = axis.get_major_ticks()
    return any(t.label1.get_visible() or t.label2.get_visible() for t in ticks[:1]) if ticks else False


def _axis_problems(ax, name: str, where: str) -> list[str]:
    axis = ax.xaxis if name == "x" else ax.yaxis
    if not _tick_labels_shown(axis) or _categorical(axis):
        return []
    label = axis.get_label().get_text().strip()
    if not label:
        return [f"{where}: the {name} axis has no label; label it with its unit, e.g. 'power (W)'"]
    if not UNIT_PATTERN.search(label):
        return [f"{where}: the {name} axis label {label!r} names no unit; add it in parentheses, e.g. '(W)', '(x)', '(%)'"]
    return []


def _bar_problems(ax, where: str) -> list[str]:
    from matplotlib.container import BarContainer

    out = []
    for orientation in ("vertical", "horizontal"):
        starts, tops = [], []
        for container in ax.containers:
            if not isinstance(container, BarContainer) or getattr(container, "orientation", "vertical") != orientation:
                continue
            for rect in container.patches:
                lo, size = (rect.get_y(), rect.get_height()) if orientation == "vertical" else (rect.get_x(), rect.get_width())
                if math.isfinite(lo) and math.isfinite(size) and size != 0:
                    starts.append(lo)
                    tops.append(lo + size)
        if len(tops) < 2:
            continue
        axis = ax.yaxis if orientation == "vertical" else ax.xaxis
        low, high = sorted(ax.get_ylim() if orientation == "vertical" else ax.get_xlim())
        upward = all(t >= s for s, t in zip(starts, tops))
        base = max(min(starts), low) if upward else min(max(starts), high)
        values = [base, *tops]
        if axis.get_scale() == "log":
            if min(values) <= 0:
                continue
            values = [math.log10(v) for v in values]
        base, tops_scaled = values[0], values[1:]
        length = max(abs(t - base) for t in tops_scaled)
        spread = max(tops_scaled) - min(tops_scaled)
        if length > 0 and 0 < spread < SMALL_DIFFERENCE_FRAC * length:
            out.append(f"{where}: its bars differ by {100 * spread / length:.1f} % of their drawn length (under "
                       f"{100 * SMALL_DIFFERENCE_FRAC:g} %); draw ratios to a reference (bars from 1x) or zoom the axis")
    return out


def _suptitle_text(fig) -> str:
    suptitle = getattr(fig, "_suptitle", None)
    return suptitle.get_text().strip() if suptitle is not None else ""


def figure_problems(fig: Any) -> list[str]:
    """What `fig` (a matplotlib Figure) breaks of the module's rules, one line each (empty: none)."""
    problems = []
    panels = [ax for ax in fig.axes if _shows_data(ax) and getattr(ax, "_colorbar", None) is None]
    titled = bool(_suptitle_text(fig)) or any(ax.get_title(loc).strip() for ax in fig.axes
                                              for loc in ("center", "left", "right"))
    if not titled:
        problems.append("the figure has no title; give it a suptitle or title its panels")
    for i, ax in enumerate(panels):
        title = ax.get_title().strip()
        where = f"panel {title!r}" if title else f"panel {i + 1}"
        problems += _axis_problems(ax, "x", where)
        problems += _axis_problems(ax, "y", where)
        problems += _bar_problems(ax, where)
    return problems


def enforce(fig: Any, where: str, *, strict: bool = True) -> list[str]:
    """Check `fig` (about to be saved as `where`); raise `PlotRuleError` on a broken rule, or with
    `strict=False` warn (`PlotRuleWarning`, one line naming the figure). Returns the problems."""
    problems = figure_problems(fig)
    if problems:
        message = f"figure {where} breaks the plot rules (pals.model.plot_rules): " + "; ".join(problems)
        if strict:
            raise PlotRuleError(message)
        warnings.warn(message, PlotRuleWarning, stacklevel=3)
    return problems
