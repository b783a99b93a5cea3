"""The hindsight yardstick of demand response: every fixed (cap, batch) through the same loop and guard.

For each seed and each part of the experiment (the three-node power-target schedule, and each node
budget below the cap floor) every configuration of a grid runs as the `static` policy through the
same loop and budget guard as PALS, under the same schedule or budget, request streams and seed:
the guard clamps a static configuration's cap to the budget as it does the Baseline's
(`pals.runtime.hindsight.hindsight_over` does the sweep). The hindsight optimum of a seed is the
fixed configuration with the most tokens per node joule among those with no more budget overshoot
than PALS (`MeetCriteria`, the runtime summaries' `budget_overshoot_pct`; for the schedule the mean
over the three nodes) that serve as much as PALS did, less `pals.runtime.hindsight.THROUGHPUT_SHORTFALL_MAX`
(`MeetCriteria.serving`): PALS is asked for more throughput than any budget allows (best effort), so
its job is the most throughput within the power target, and a configuration that leaves power unused
below the target does a different job. Strict QoS is not a criterion (the target is unreachable for
all); every configuration's strict QoS violations are in the table all the same.

The check compares tokens per node joule (`HINDSIGHT_SHARE_MIN`, issue 12's bar, mean over seeds
with the interval reported, as in `single-node`): node tokens/J is the one objective the project's
headline reports. The paper's Fig 10 claim is about throughput, so the throughput of PALS over the
same configuration, and over the fixed configuration with the most throughput at no more
overshoot, are reported beside it, each paired by seed with a 95 % interval (`pals.experiments.stats`).
The tokens/J ratio is the throughput ratio times the configuration's mean power over PALS's: under
the guard the two differ by the power one of them leaves unused below the target.

Selection and verdicts below run on numbers only (tests feed constructed `HindsightResult`s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from pals.control.types import Configuration
from pals.experiments.common import PAPER_BATCHES, PAPER_CAPS_W
from pals.experiments.judged import config_text, text
from pals.experiments.report import Report, Table
from pals.experiments.stats import Estimate, paired_ratio_ci
from pals.experiments.verdict import HINDSIGHT_SHARE_MIN
from pals.runtime.hindsight import HindsightResult, HindsightRow, grid_configurations

QUICK_SCHEDULE_CAPS_W = PAPER_CAPS_W
"""The schedule's grid in quick mode: every paper cap (the cap is the lever that decides the optimum on the
schedule, so quick mode thins only the batch axis). Units: W."""
QUICK_SCHEDULE_BATCHES = PAPER_BATCHES[-2:]
"""The schedule's grid in quick mode: the two largest paper batch caps (under the saturating load the batch
cap rarely binds; full mode runs every batch, and `hindsight.csv` lists what each grid ran)."""
QUICK_BELOW_FLOOR_CAPS_W = PAPER_CAPS_W[:1]
"""The grid below the floor in quick mode: the lowest paper cap (every batch). Below the floor the guard holds
the GPUs at their lowest settable cap whatever the fixed cap (the full mode's grid shows it). Units: W."""
TPJ, TPS = "tokens_per_joule", "throughput_tps"
"""The row keys the yardstick ranks by: node tokens/J (the check's) and throughput (the paper's)."""
CHECKED = "tokens/J over the hindsight optimum"
"""The ratio the check rests on (see the module docstring)."""
RATIOS_THROUGHPUT = "throughput over the hindsight optimum"
"""PALS's throughput over the same configuration (the paper's quantity, beside the check)."""
RATIOS_MOST = "throughput over the most-throughput fixed configuration"
"""PALS's throughput over the fixed configuration with the most throughput at no more overshoot."""
POWER_SAME = 0.002
"""Mean powers within this fraction of each other are called the same in the prose."""
RATIOS = {CHECKED: (TPJ, TPJ), RATIOS_THROUGHPUT: (TPJ, TPS), RATIOS_MOST: (TPS, TPS)}
"""Ratio name -> (the key the configuration is chosen by, the key compared): PALS / that configuration."""


def schedule_grid(quick: bool) -> list[Configuration]:
    """The grid the schedule's yardstick sweeps: the paper's, or in quick mode the reduced one."""
    if quick:
        return grid_configurations(QUICK_SCHEDULE_CAPS_W, QUICK_SCHEDULE_BATCHES)
    return grid_configurations(PAPER_CAPS_W, PAPER_BATCHES)


def below_floor_grid(quick: bool) -> list[Configuration]:
    """The grid below the cap floor: the paper's, or in quick mode its lowest cap with every batch."""
    return grid_configurations(QUICK_BELOW_FLOOR_CAPS_W if quick else PAPER_CAPS_W, PAPER_BATCHES)


@dataclass
class PartSeeds:
    """One part of the experiment (the schedule, or one budget below the floor), seed by seed."""

    name: str
    """What the part is, for tables and checks ('power-target schedule', 'below the floor at 95%')."""
    pals_throughput_tps: list[float]
    """PALS's throughput on each seed (the same definition as the rows'). Units: tokens/s."""
    pals_tokens_per_joule: list[float]
    """PALS's tokens per node joule on each seed. Units: tokens/J."""
    pals_budget_overshoot_pct: list[float]
    """PALS's share of budget intervals over the budget on each seed (the criterion). Units: %."""
    hindsight: list[HindsightResult]
    """Each seed's sweep of every fixed configuration, judged at PALS's overshoot and throughput."""

    def __post_init__(self) -> None:
        n = {len(self.pals_throughput_tps), len(self.pals_tokens_per_joule), len(self.pals_budget_overshoot_pct),
             len(self.hindsight)}
        if len(n) != 1:
            raise ValueError(f"{self.name}: one entry per seed in every list, got lengths {sorted(n)}")

    def pals(self, key: str) -> list[float]:
        return self.pals_tokens_per_joule if key == TPJ else self.pals_throughput_tps


def best_by(result: HindsightResult, key: str) -> HindsightRow | None:
    """The configuration with the most `key` among those that meet the criteria (None: none meets)."""
    meeting = [r for r in result.rows if r.meets and math.isfinite(getattr(r, key))]
    return max(meeting, key=lambda r: getattr(r, key)) if meeting else None


def ratio(part: PartSeeds, chosen_by: str, compared: str) -> Estimate | None:
    """PALS / the configuration chosen by `chosen_by`, on `compared`, paired by seed (seeds without one left out)."""
    pals, fixed = [], []
    for value, result in zip(part.pals(compared), part.hindsight):
        best = best_by(result, chosen_by)
        other = None if best is None else getattr(best, compared)
        if other is not None and other > 0 and value > 0 and math.isfinite(value):
            pals.append(value)
            fixed.append(other)
    return paired_ratio_ci(pals, fixed) if pals else None


def ratios(part: PartSeeds) -> dict[str, Estimate | None]:
    """Every ratio of `RATIOS` for one part."""
    return {name: ratio(part, chosen, compared) for name, (chosen, compared) in RATIOS.items()}


def holds(est: Estimate | None, bar: float | None = None) -> bool:
    """The check's rule: the mean over seeds reaches the bar (undefined: it does not)."""
    bar = HINDSIGHT_SHARE_MIN if bar is None else bar
    return est is not None and math.isfinite(est.mean) and est.mean >= bar


def optimum_configs(part: PartSeeds, key: str = TPJ) -> list[str]:
    """Each seed's optimum as '400 W / 64' ('none meets' where no configuration meets PALS's overshoot and throughput)."""
    out = []
    for result in part.hindsight:
        best = best_by(result, key)
        out.append("none meets" if best is None else config_text(Configuration(best.power_cap_w, best.batch_cap)))
    return out


def beyond_every(part: PartSeeds) -> bool:
    """No fixed configuration meets PALS's overshoot and throughput on any seed: PALS is beyond every one."""
    return bool(part.hindsight) and all(best_by(h, TPJ) is None for h in part.hindsight)


def _text(est: Estimate | None) -> str:
    return text(est, suffix="x")


def _configs(names: Sequence[str]) -> str:
    counts = {n: names.count(n) for n in dict.fromkeys(names)}
    return ", ".join(f"{n} ({c}/{len(names)} seeds)" for n, c in counts.items())


def hindsight_csv_rows(part: PartSeeds, seeds: Sequence[int]) -> list[list[object]]:
    """Every fixed configuration of every seed of `part` (the full table, written as CSV only)."""
    return [[part.name, seed, r.power_cap_w, r.batch_cap, r.tokens_per_joule, r.throughput_tps,
             r.budget_overshoot_pct, r.qos_violation_pct, r.meets, r.why_not]
            for seed, result in zip(seeds, part.hindsight) for r in result.rows]


HINDSIGHT_CSV_COLUMNS = ["part", "seed", "cap W", "batch", "tokens/J node", "throughput tok/s",
                         "budget intervals over %", "strict QoS violations %", "meets PALS's overshoot and throughput", "why not"]


def report_yardstick(report: Report, parts: Sequence[PartSeeds], seeds: Sequence[int]) -> dict:
    """The yardstick's section, its checks (one per part) and its metrics (returned for summary.json)."""
    sec = report.section("PALS against the hindsight optimum (the best fixed configuration, same loop and guard)")
    for paragraph in __doc__.split("\n\n")[1:3]:
        report.paragraph(sec, paragraph)
    est = {p.name: ratios(p) for p in parts}
    rows = []
    for p in parts:
        meeting = [sum(r.meets for r in h.rows) for h in p.hindsight]
        rows.append([p.name, len(p.hindsight[0].rows) if p.hindsight else 0,
                     f"{np.median(meeting):g}" if meeting else "0", _configs(optimum_configs(p)),
                     *(_text(est[p.name][k]) for k in RATIOS), "yes" if holds(est[p.name][CHECKED]) else "no"])
    report.table(sec, "hindsight_ratios", ["part", "configurations", "meeting PALS's overshoot and throughput (median)",
                                           "hindsight optimum (most tokens/J)", *(f"PALS {k}" for k in RATIOS),
                                           f"PALS >= {HINDSIGHT_SHARE_MIN:.2f}x (tokens/J, mean)"], rows,
                 "PALS / fixed configuration, paired by seed: geometric mean [95 % interval]")
    report.tables.append(Table("hindsight", HINDSIGHT_CSV_COLUMNS,
                               [row for p in parts for row in hindsight_csv_rows(p, seeds)]))
    report.paragraph(sec, "Every fixed configuration of every seed and part is in tables/hindsight.csv. "
                     + " ".join(_part_words(p, est[p.name]) for p in parts))
    for p in parts:
        share = est[p.name][CHECKED]
        report.check(f"PALS reaches at least {HINDSIGHT_SHARE_MIN:.2f}x the hindsight optimum's tokens/J, {p.name} "
                     "(no more budget overshoot, as much served; mean over seeds; no fixed configuration meeting "
                     "that on any seed counts for PALS)", holds(share) or beyond_every(p),
                     f"PALS / hindsight tokens/J {_text(share)}; throughput {_text(est[p.name][RATIOS_THROUGHPUT])}; "
                     f"optimum {_configs(optimum_configs(p))}")
    return {p.name: {k: None if v is None else v._asdict() for k, v in est[p.name].items()}
            | {"optimum": optimum_configs(p), "optimum_by_throughput": optimum_configs(p, TPS)} for p in parts}



def _part_words(part: PartSeeds, est: dict[str, Estimate | None]) -> str:
    """One computed sentence per part: where PALS stands against the optimum, and which quantity differs."""
    share, thr, most = est[CHECKED], est[RATIOS_THROUGHPUT], est[RATIOS_MOST]
    if share is None:
        return (f"{part.name.capitalize()}: no fixed configuration meets PALS's budget overshoot and throughput on "
                "any seed" + (": PALS is beyond every one." if beyond_every(part) else ", so the yardstick is undefined."))
    reach = "reaches" if holds(share) else "falls short of"
    same = optimum_configs(part) == optimum_configs(part, TPS)
    most_words = ("the same configurations have the most throughput" if same else
                  f"the most-throughput fixed configurations ({_configs(optimum_configs(part, TPS))}) give PALS "
                  f"{_text(most)} on throughput")
    least_over = min((r.budget_overshoot_pct for h in part.hindsight for r in h.rows), default=0.0)
    over_words = ("" if least_over <= 0 else f" No fixed configuration stays within this budget either: the least "
                  f"overshoot of any is {least_over:.1f} % of intervals over it (PALS: "
                  f"{np.mean(part.pals_budget_overshoot_pct):.1f} %, mean over seeds).")
    return (f"{part.name.capitalize()}: PALS {reach} the {HINDSIGHT_SHARE_MIN:.2f}x bar with {_text(share)} of the "
            f"optimum's tokens/J ({_configs(optimum_configs(part))}) and {_text(thr)} of its throughput; "
            f"{most_words}.{_power_words(share, thr)}{over_words}")


def _power_words(share: Estimate, thr: Estimate | None) -> str:
    """What the optimum's power is against PALS's (tokens/J ratio over throughput ratio), when they differ."""
    if thr is None:
        return ""
    power = share.mean / thr.mean
    if abs(power - 1.0) < POWER_SAME:
        return ""
    return (f" The optimum draws {power:.3f}x PALS's mean power (the tokens/J ratio over the throughput ratio): "
            + ("PALS turns power the fixed configuration leaves unused under the target into throughput, at fewer "
               "tokens per joule." if power < 1 else "it spends more of the target than PALS does."))
