"""Seeds and confidence: means with Student-t intervals, and paired ratios for "A vs B on the same seeds".

Every experiment runs each comparison over several seeds (request stream, telemetry noise, offline
profile) and reports a mean with its confidence interval; a claim holds only when the interval
supports it (`at_least`), and a verdict against the paper is computed from the interval
(`pals.experiments.verdict`).

- `mean_ci(values)`: mean and the Student-t interval of the mean (n - 1 degrees of freedom).
- `ratio_ci(ratios)`: the same for ratios already formed per seed (e.g. a geometric mean over
  models of each seed's A / B).
- `paired_ratio_ci(a, b)`: A / B when both ran on the same seeds: the geometric mean of the
  per-seed ratios a_i / b_i with the Student-t interval of their logarithms, mapped back (ratios
  are multiplicative: 2x and 0.5x average to 1x, not 1.25x). Pairing removes what the two share
  (the same stream and noise), which is most of the run-to-run spread.

With one value the interval is undefined: low and high are NaN; `at_least` is then False and no
verdict can say more than "differs" (`not_below`, a "within noise" test, falls back on the mean).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

from pals.errors import ConfigError


class Estimate(NamedTuple):
    """A mean and its confidence interval (unpacks as `mean, low, high`)."""

    mean: float
    low: float
    """Lower end of the interval (NaN with fewer than two values)."""
    high: float
    """Upper end of the interval (NaN with fewer than two values)."""

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def shifted(self, by: float) -> "Estimate":
        """The same estimate minus `by` (e.g. a ratio as an effect: ratio - 1)."""
        return Estimate(self.mean - by, self.low - by, self.high - by)

    def excludes(self, value: float) -> bool:
        """True when the whole interval lies on one side of `value` (False when undefined)."""
        return bool(self.low > value or self.high < value)

    def describe(self, fmt: str = "{:.3f}", suffix: str = "") -> str:
        """'1.093x [1.071, 1.115]' style text (the interval omitted when undefined)."""
        text = fmt.format(self.mean) + suffix
        if math.isfinite(self.low) and math.isfinite(self.high):
            text += f" [{fmt.format(self.low)}, {fmt.format(self.high)}]"
        return text


def _checked(values: Sequence[float], name: str) -> list[float]:
    out = [float(v) for v in values]
    if not out:
        raise ConfigError(f"{name}: no values")
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{name}: values must be finite, got {out}")
    return out


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided Student-t critical value for `confidence` with `dof` degrees of freedom."""
    from scipy.stats import t

    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1, got {confidence!r}")
    return float(t.ppf(0.5 + confidence / 2, dof))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean of `values` and its Student-t confidence interval."""
    xs = _checked(values, "mean_ci")
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return Estimate(mean, float("nan"), float("nan"))
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half)


def ratio_ci(ratios: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Geometric mean of per-seed ratios with the Student-t interval of their logarithms, mapped back."""
    rs = _checked(ratios, "ratio_ci")
    if any(r <= 0 for r in rs):
        raise ConfigError(f"ratio_ci: ratios must be positive, got {rs}")
    logs = mean_ci([math.log(r) for r in rs], confidence)
    return Estimate(math.exp(logs.mean), math.exp(logs.low), math.exp(logs.high))


def paired_ratio_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Estimate:
    """A / B over paired runs (same seeds): geometric mean of a_i / b_i with a Student-t interval on the logs."""
    xs, ys = _checked(a, "paired_ratio_ci"), _checked(b, "paired_ratio_ci")
    if len(xs) != len(ys):
        raise ConfigError(f"paired_ratio_ci: {len(xs)} values against {len(ys)}; pair them seed by seed")
    if any(v <= 0 for v in xs + ys):
        raise ConfigError("paired_ratio_ci: ratios need positive values")
    return ratio_ci([x / y for x, y in zip(xs, ys)], confidence)


def at_least(estimate: Estimate, threshold: float) -> bool:
    """The interval supports "at least `threshold`": its lower end is at or above it."""
    return bool(estimate.low >= threshold)


def not_below(estimate: Estimate, threshold: float) -> bool:
    """The interval does not show the value below `threshold` ("at least, within noise"): its upper end reaches it."""
    return bool(estimate.high >= threshold or (math.isnan(estimate.high) and estimate.mean >= threshold))
