"""The `slo` and `kv-pressure` experiments: quick runs (once per module) and their computed checks."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from pals.experiments import run_experiment
from pals.experiments.judged import PolicyFigures
from pals.experiments.stats import Estimate
from pals.experiments.verdict import HINDSIGHT_SHARE_MIN

pytestmark = pytest.mark.slow


def _outputs(out: Path, name: str) -> dict:
    """The written summary, after checking the report links existing figures and tables."""
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.md").read_text()
    assert summary["experiment"] == name and summary["quick"] is True
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(linked) >= 2
    for image in linked:
        assert (out / image).is_file() and (out / image).stat().st_size > 1000
    for table in summary["tables"]:
        assert (out / table).is_file()
    assert "Why it differs" in report and "Checks" in report
    return summary


def _check(summary: dict, words: str) -> dict:
    (found,) = [c for c in summary["checks"] if words in c["claim"]]
    return found


@pytest.fixture(scope="module")
def slo_quick(tmp_path_factory):
    """The quick slo experiment (5 seeds of Mixtral-8x7B), run once for the tests below."""
    out = tmp_path_factory.mktemp("slo")
    return out, run_experiment("slo", out, quick=True, seed=0)


@pytest.fixture(scope="module")
def kv_quick(tmp_path_factory):
    """The quick kv-pressure experiment (sweep and 5 seeds), run once for the tests below."""
    out = tmp_path_factory.mktemp("kv")
    return out, run_experiment("kv-pressure", out, quick=True, seed=0)


# -- slo -------------------------------------------------------------------------------------------


def test_slo_pals_meets_the_slo_the_baseline_breaks(slo_quick, checks_hold):
    from pals.experiments.slo import SLO_MET_MAX_VIOLATION_PCT, SLO_TPOT_MS

    out, summary = slo_quick
    _outputs(out, "slo")
    slo_ms = SLO_TPOT_MS["Mixtral-8x7B"]
    m = summary["metrics"]["Mixtral-8x7B"]
    assert m["slo_state"] == {"baseline": "breaks", "pals": "meets"}
    # The states rest on the reported intervals.
    assert m["baseline"]["tpot_p99_ms"]["low"] > slo_ms and m["baseline"]["slo_violation_pct"]["mean"] > 50.0
    assert m["pals"]["tpot_p99_ms"]["high"] <= slo_ms
    assert m["pals"]["slo_violation_pct"]["high"] <= SLO_MET_MAX_VIOLATION_PCT
    checks_hold(summary, "stationary saturating load: PALS meets the SLO")
    # Meeting the SLO costs throughput against full batches.
    assert m["pals"]["throughput_tps"]["mean"] < m["baseline"]["throughput_tps"]["mean"]


def test_slo_static_comparison_is_computed_from_the_ratio(slo_quick):
    _, summary = slo_quick
    m = summary["metrics"]["Mixtral-8x7B"]
    share = m["ratios"]["pals/hindsight"]
    assert m["hindsight_seeds"] == summary["metrics"]["seeds"] == 5
    # The hindsight optimum meets the SLO as well as PALS does, so it is below the Baseline's full batches.
    assert m["ratios"]["hindsight/baseline"]["high"] < 1.0
    check = _check(summary, "stationary saturating load: PALS reaches at least")
    assert check["passed"] == (share["mean"] >= HINDSIGHT_SHARE_MIN)
    assert f"{share['mean']:.3f}x" in check["evidence"]


def test_slo_step_load_is_judged_from_its_own_runs(slo_quick, checks_hold):
    from pals.experiments.slo import STEP_LABEL, STEP_PHASES, STEP_QOS_ALLOWANCE_PCT

    out, summary = slo_quick
    assert (out / "tables" / "hindsight_step.csv").is_file() and (out / "tables" / "step_means.csv").is_file()
    m = summary["metrics"][STEP_LABEL]
    assert m["hindsight_seeds"] == summary["metrics"]["seeds"] == 5
    # PALS follows the load: a lower cap in the lulls than in the peaks, on every seed.
    assert all(lull < peak for lull, peak in zip(m["pals_cap_lull_w"], m["pals_cap_peak_w"]))
    assert len(STEP_PHASES) >= 2 and STEP_QOS_ALLOWANCE_PCT > 0
    checks_hold(summary, "step load: PALS meets the SLO")
    share = m["pals/hindsight"]
    check = _check(summary, "step load: PALS's tokens/J above")
    assert check["passed"] == (share["low"] > 1.0)
    assert f"{share['mean']:.3f}x" in check["evidence"]


def test_slo_pals_ties_the_best_static_on_the_stationary_load(slo_quick, checks_hold):
    """A stationary load's optimum is a fixed configuration: PALS reaches the bar, and cannot beat it beyond noise."""
    _, summary = slo_quick
    checks_hold(summary, "stationary saturating load: PALS reaches at least")
    share = summary["metrics"]["Mixtral-8x7B"]["ratios"]["pals/hindsight"]
    assert share["low"] <= 1.0 + 1e-9


def test_slo_pals_beats_the_best_static_on_the_step_load(slo_quick, checks_hold):
    """Issue 12's SLO bar: PALS meets a TPOT SLO the Baseline breaks, above the best fixed configuration meeting it."""
    from pals.experiments.slo import STEP_LABEL

    _, summary = slo_quick
    checks_hold(summary, "step load: PALS meets the SLO (TPOT p99 <= 28 ms) the baseline breaks")
    checks_hold(summary, "step load: PALS's tokens/J above")
    assert summary["metrics"][STEP_LABEL]["slo_state"] == {"baseline": "breaks", "pals": "meets"}


# -- kv-pressure -----------------------------------------------------------------------------------


def test_kv_sweep_shows_preemption_above_the_capacity(kv_quick, checks_hold):
    out, summary = kv_quick
    _outputs(out, "kv-pressure")
    m = summary["metrics"]
    capacity = m["kv_capacity_seqs"]
    sweep = {int(b): e for b, e in m["sweep"].items()}
    below = [b for b in sweep if b <= capacity]
    above = [b for b in sweep if b > capacity]
    assert below and above
    assert all(sweep[b]["preemptions_per_min"]["mean"] == 0.0 for b in below)
    assert all(sweep[b]["preemptions_per_min"]["mean"] > 0.0 for b in above)
    assert sweep[max(above)]["preemptions_per_min"]["mean"] >= sweep[min(above)]["preemptions_per_min"]["mean"]
    held = m["held_batch"]
    assert held == max(below)
    assert sweep[held]["tokens_per_joule"]["mean"] > sweep[max(sweep)]["tokens_per_joule"]["mean"]
    assert m["held_over_largest"]["low"] > 1.0
    checks_hold(summary, "preemptions rise", "saves energy over batch", "PALS above the Baseline")


def test_kv_pals_checks_are_computed_from_its_runs(kv_quick):
    _, summary = kv_quick
    m = summary["metrics"]
    batches = m["pals_final_batches"]
    assert len(batches) == 5
    assert _check(summary, "PALS finds a batch cap")["passed"] == all(b < 64 for b in batches)
    share = m["ratios"]["pals/hindsight"]
    assert _check(summary, "hindsight optimum")["passed"] == (share["low"] >= 0.97)
    # The Baseline preempts (batch 64 above the capacity) in every seed.
    assert m["baseline"]["preemptions_per_min"]["low"] > 0.0


def test_kv_pals_finds_the_smaller_batch(kv_quick, checks_hold):
    """Issue 12: the profile measures each point at steady state, so it sees the recompute and PALS leaves batch 64."""
    _, summary = kv_quick
    m = summary["metrics"]
    checks_hold(summary, "PALS finds a batch cap", "hindsight optimum")
    assert all(b < 64 for b in m["pals_final_batches"])
    # The profile's view of the held batch against batch 64 agrees with the warm sweep's (it rated 0.87x before).
    profile, sweep = m["profile_held_over_largest"], m["held_over_largest"]
    assert profile["low"] <= sweep["mean"] <= profile["high"]
    assert all(r > 1.0 for r in m["profile_held_over_largest_per_seed"])


# -- the checks are computed: constructed numbers that must fail them (no runs) ----------------------


def _fig(tpj: float, tpot_ms: float, viol_pct: float, config: str, preempt: float = 0.0) -> PolicyFigures:
    return PolicyFigures(tpj, 1000.0 * tpj, tpot_ms, viol_pct, 0.0, preempt, config)


def test_slo_checks_fail_on_numbers_that_break_them(tmp_path, checks_hold):
    from pals.experiments.slo import build_report

    # The Baseline meets the SLO here, and PALS is below the static optimum: both checks must fail.
    runs = [{"baseline": _fig(1.00 + 0.01 * k, 20.0, 0.0, "400 W / 64"),
             "pals": _fig(0.80 + 0.01 * k, 25.0, 0.0, "350 W / 32"),
             "hindsight": _fig(0.90 + 0.01 * k, 26.0, 0.0, "300 W / 32")} for k in range(3)]
    summary = build_report({"Mixtral-8x7B": runs}, [0, 1, 2], tmp_path, True, {}).write()
    assert summary["metrics"]["Mixtral-8x7B"]["slo_state"]["baseline"] == "meets"
    assert not any(c["passed"] for c in summary["checks"])
    with pytest.raises(AssertionError, match="checks do not hold"):
        checks_hold(summary, "stationary saturating load: PALS meets the SLO")
    # PALS within the bar of the optimum (a tie, less 2 %): the second check holds.
    close = [dict(r, pals=_fig(r["hindsight"].tokens_per_joule * 0.98, 25.0, 0.0, "300 W / 32")) for r in runs]
    summary = build_report({"Mixtral-8x7B": close}, [0, 1, 2], tmp_path, True, {}).write()
    checks_hold(summary, "stationary saturating load: PALS reaches at least")


def test_slo_step_checks_are_computed_from_the_numbers(tmp_path, checks_hold):
    from pals.experiments.slo import STEP_LABEL, build_report, step_section

    # PALS breaks the SLO and is below the optimum: both step checks must fail; then above it by more than noise.
    below = [{"baseline": _fig(0.40, 30.0, 40.0, "400 W / 64"), "pals": _fig(0.40 + 0.01 * k, 29.0, 40.0, "350 W / 32"),
              "hindsight": _fig(0.45 + 0.01 * k, 25.0, 0.0, "300 W / 32")} for k in range(3)]
    for runs, passed in ((below, False), ([dict(r, pals=_fig(r["hindsight"].tokens_per_joule * 1.05, 25.0, 0.0,
                                                              "300 W / 32")) for r in below], True)):
        report = build_report({"Mixtral-8x7B": runs}, [0, 1, 2], tmp_path, True, {})
        step_section(report, {STEP_LABEL: runs}, [0, 1, 2], None, [(250.0, 350.0)] * 3)
        summary = report.write()
        step = [c for c in summary["checks"] if "step load" in c["claim"]]
        assert len(step) == 2 and all(c["passed"] == passed for c in step)
        assert summary["metrics"][STEP_LABEL]["slo_state"]["pals"] == ("meets" if passed else "breaks")
    # A Baseline that meets the SLO too: PALS meeting it is no longer the claim.
    met = [dict(r, baseline=_fig(0.40, 24.0, 0.0, "400 W / 64"), pals=_fig(r["hindsight"].tokens_per_joule * 1.05, 25.0,
                                                                          0.0, "300 W / 32")) for r in below]
    report = build_report({"Mixtral-8x7B": met}, [0, 1, 2], tmp_path, True, {})
    step_section(report, {STEP_LABEL: met}, [0, 1, 2], None, [(250.0, 350.0)] * 3)
    (claim,) = [c for c in report.write()["checks"] if "step load: PALS meets the SLO" in c["claim"]]
    assert not claim["passed"] and "baseline meets" in claim["evidence"]


def test_kv_checks_fail_when_preemption_does_not_rise(tmp_path, checks_hold):
    from pals.experiments.kv_pressure import MODEL, SweepPoint, build_report, mechanism

    # Preemptions everywhere and batch 64 the most efficient: the mechanism checks must fail.
    sweep = [SweepPoint(b, s, 1.0 + b / 1000 + s / 1e4, 1000.0, 5.0) for b in (16, 32, 64) for s in range(3)]
    assert not mechanism(sweep, 40.0)["preemptions_rise"]
    runs = [{"baseline": _fig(1.0, math.nan, math.nan, "400 W / 64", 5.0),
             "pals": _fig(1.1 + 0.01 * k, math.nan, math.nan, "250 W / 64", 5.0),
             "hindsight": _fig(1.2, math.nan, math.nan, "250 W / 32")} for k in range(3)]
    summary = build_report({MODEL: runs}, [0, 1, 2], sweep, 40.0, tmp_path, True, {}).write()
    for words in ("preemptions rise", "saves energy over batch", "PALS finds a batch cap", "hindsight optimum"):
        with pytest.raises(AssertionError, match="checks do not hold"):
            checks_hold(summary, words)
    checks_hold(summary, "PALS above the Baseline")
    est = Estimate(**summary["metrics"]["held_over_largest"])
    assert est.high < 1.0


def test_kv_profile_reason_is_computed_from_the_numbers():
    from pals.experiments.kv_pressure import _profile_reason

    mech = {"held_batch": 32, "largest_batch": 64}
    sweep = Estimate(1.02, 1.016, 1.024)
    assert "does not see the recompute" in _profile_reason(Estimate(0.87, 0.86, 0.88), sweep, [0.87] * 5, mech)
    agrees = _profile_reason(Estimate(1.005, 0.984, 1.027), sweep, [0.99, 1.03, 0.97, 1.0, 1.02], mech)
    assert "agrees" in agrees and "on 2 of 5 seeds" in agrees and "smaller than the profile's half interval" in agrees
    assert "every seed's profile ranks batch 32 above" in _profile_reason(Estimate(1.03, 1.01, 1.04), sweep,
                                                                          [1.02, 1.03], mech)
    assert "differs" in _profile_reason(Estimate(1.10, 1.08, 1.12), sweep, [1.1] * 5, mech)
    assert _profile_reason(None, sweep, [], mech) == "."
