"""Verdicts computed from numbers, by one rule (no verdict is chosen by hand).

An effect is a signed change: a ratio r to a reference is the effect r - 1 (1.26x baseline is
+0.26; 95 % of the Oracle is -0.05). Ours is an `Estimate` (mean and confidence interval over
seeds, `pals.experiments.stats`); the paper's is one number. The rule, in order:

1. **differs: exceeds its upper bound** when the quantity is a ratio to the policy's own upper
   bound (`upper_bound=True`: PALS / Oracle, Oracle / hindsight optimum, ...) and the whole
   interval lies above 1 (effect > 0 beyond noise). A policy cannot beat its bound; if it does,
   the bound or the measurement is wrong, whatever the paper says.
2. **matches** when the interval excludes zero, our mean has the paper's sign, and it lies within
   `MATCH_TOLERANCE` (25 %) of the paper's effect: |ours - paper| <= 0.25 |paper|.
3. **same direction** when the interval excludes zero and our mean has the paper's sign.
4. **differs** otherwise (the opposite sign, or an interval that cannot tell the effect from zero).

Without a paper figure (`paper_effect` None) the verdict is "not comparable". With an undefined
interval (one seed) rules 2 and 3 cannot apply.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pals.experiments.stats import Estimate

HINDSIGHT_SHARE_MIN = 0.97
"""Issue 12's bar, shared by every experiment's yardstick check: a policy reaches its hindsight
optimum when its tokens/J is at least this fraction of the optimum's (at no more violations)."""

MATCH_TOLERANCE = 0.25
"""Our effect "matches" the paper's when within this fraction of it (same sign, interval excluding zero)."""

LABELS = ("matches", "same direction", "differs", "differs: exceeds its upper bound", "not comparable")
"""Every verdict the rule can give."""


@dataclass(frozen=True)
class Verdict:
    """The rule's answer and the numbers it rested on."""

    label: str
    """One of `LABELS`."""
    ours: Estimate
    """Our effect (mean and interval)."""
    paper: float | None
    """The paper's effect (None: the paper gives none)."""

    @property
    def agrees(self) -> bool:
        """True for "matches" and "same direction"."""
        return self.label in ("matches", "same direction")

    def __str__(self) -> str:
        ours = self.ours.describe("{:+.3f}")
        paper = "none" if self.paper is None else f"{self.paper:+.3f}"
        return f"{self.label} (effect {ours} vs paper {paper})"


def verdict(ours: Estimate, paper_effect: float | None, *, upper_bound: bool = False,
            tolerance: float = MATCH_TOLERANCE) -> Verdict:
    """Apply the rule (module docstring) to our effect `ours` and the paper's `paper_effect`.

    Args:
        ours: our effect as an `Estimate` (for a ratio estimate r, pass `r.shifted(1.0)`).
        paper_effect: the paper's effect on the same scale (None: no paper figure).
        upper_bound: the quantity is a ratio to the policy's own upper bound (rule 1).
        tolerance: the "matches" band as a fraction of the paper's effect.
    """
    if upper_bound and math.isfinite(ours.low) and ours.low > 0:
        return Verdict("differs: exceeds its upper bound", ours, paper_effect)
    if paper_effect is None:
        return Verdict("not comparable", ours, paper_effect)
    same_sign = paper_effect != 0 and ours.mean * paper_effect > 0
    if ours.excludes(0.0) and same_sign:
        if abs(ours.mean - paper_effect) <= tolerance * abs(paper_effect):
            return Verdict("matches", ours, paper_effect)
        return Verdict("same direction", ours, paper_effect)
    return Verdict("differs", ours, paper_effect)


def ratio_verdict(ratio: Estimate, paper_ratio: float | None, *, upper_bound: bool = False,
                  tolerance: float = MATCH_TOLERANCE) -> Verdict:
    """The rule on a ratio (ours an estimate of r, the paper's r): effects r - 1."""
    return verdict(ratio.shifted(1.0), None if paper_ratio is None else paper_ratio - 1.0,
                   upper_bound=upper_bound, tolerance=tolerance)
