"""Seeds, intervals and the one verdict rule, on constructed numbers; single-node's checks from numbers."""

from __future__ import annotations

import json
import math

import pytest

from pals.errors import ConfigError
from pals.experiments.single_node import POLICIES, SeedRun, build_report
from pals.experiments.stats import Estimate, at_least, mean_ci, not_below, paired_ratio_ci, ratio_ci
from pals.experiments.verdict import LABELS, MATCH_TOLERANCE, ratio_verdict, verdict


def test_mean_ci_is_the_student_t_interval():
    est = mean_ci([1.0, 2.0, 3.0])
    assert est.mean == 2.0
    # t(0.975, 2 dof) = 4.3027; sd = 1; half-width = 4.3027 / sqrt(3)
    assert est.high - est.mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert mean_ci([1.0, 2.0, 3.0], confidence=0.5).half_width < est.half_width
    mean, low, high = mean_ci([5.0])
    assert mean == 5.0 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ConfigError):
        mean_ci([])
    with pytest.raises(ConfigError):
        mean_ci([1.0, float("nan")])


def test_paired_ratios_are_geometric_and_paired():
    # The same 10 % gain on every seed, whatever the seed's level: no spread at all once paired.
    a, b = [1.1, 2.2, 0.55], [1.0, 2.0, 0.5]
    est = paired_ratio_ci(a, b)
    assert est.mean == pytest.approx(1.1) and est.half_width == pytest.approx(0.0, abs=1e-12)
    # 2x and 0.5x average to 1x.
    assert ratio_ci([2.0, 0.5]).mean == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="pair"):
        paired_ratio_ci([1.0, 2.0], [1.0])
    with pytest.raises(ConfigError, match="positive"):
        paired_ratio_ci([1.0, -1.0], [1.0, 1.0])


def test_claims_rest_on_the_interval():
    assert at_least(Estimate(1.0, 0.98, 1.02), 0.97) and not at_least(Estimate(1.0, 0.96, 1.04), 0.97)
    assert not_below(Estimate(0.99, 0.97, 1.01), 1.0) and not not_below(Estimate(0.98, 0.97, 0.99), 1.0)
    assert not at_least(Estimate(1.5, float("nan"), float("nan")), 1.0)  # one seed: nothing rests on it


@pytest.mark.parametrize("ours, paper, upper_bound, label", [
    (Estimate(0.24, 0.20, 0.28), 0.26, False, "matches"),
    (Estimate(0.12, 0.09, 0.15), 0.26, False, "same direction"),  # within the sign, outside 25 %
    (Estimate(0.012, 0.001, 0.02), 0.13, False, "same direction"),  # a 1.2 % gain against 13 %: not "matches"
    (Estimate(0.24, -0.01, 0.49), 0.26, False, "differs"),  # the interval cannot tell it from zero
    (Estimate(-0.10, -0.12, -0.08), 0.26, False, "differs"),  # the opposite sign
    (Estimate(0.005, 0.001, 0.009), -0.05, True, "differs: exceeds its upper bound"),
    (Estimate(-0.05, -0.06, -0.04), -0.05, True, "matches"),  # 95 % of the bound, as the paper says
    (Estimate(0.005, -0.01, 0.02), None, True, "not comparable"),  # at the bound within noise, no paper figure
    (Estimate(0.2, 0.1, 0.3), None, False, "not comparable"),
])
def test_the_rule(ours, paper, upper_bound, label):
    result = verdict(ours, paper, upper_bound=upper_bound)
    assert result.label == label and result.label in LABELS
    assert str(result).startswith(label)


def test_no_verdict_says_matches_for_a_policy_beating_its_upper_bound():
    """Whatever the paper claims, a ratio to an upper bound above 1 beyond noise never 'matches'."""
    for paper in (1.005, 1.01, 0.95, 1.2):
        for ratio in (Estimate(1.005, 1.001, 1.009), Estimate(1.01, 1.005, 1.015), Estimate(1.2, 1.1, 1.3)):
            assert ratio_verdict(ratio, paper, upper_bound=True).label == "differs: exceeds its upper bound"
    # Without the flag the same numbers can match a paper that claims them: the flag is what protects.
    assert ratio_verdict(Estimate(1.005, 1.001, 1.009), 1.005).label == "matches"
    assert MATCH_TOLERANCE == 0.25


# -- single-node's checks, from constructed numbers ------------------------------------------------------


def seed_run(k: int, oracle=1.20, hindsight=1.18, pals=1.17, pals_viol=2.0) -> SeedRun:
    wobble = 1.0 + 0.004 * (k - 2)
    tpj = {"baseline": 1.00 * wobble, "adaptive-cap": 1.15 * wobble, "adaptive-batch": 1.00 * wobble,
           "pals": pals * wobble, "oracle": oracle * wobble}
    viol = {p: 2.0 for p in POLICIES} | {"pals": pals_viol}
    return SeedRun(tpj, viol, {p: 1000.0 for p in POLICIES}, {p: "200 W / 64" for p in POLICIES},
                   hindsight_tpj=hindsight * wobble, hindsight_config="200 W / 64", hindsight_meeting=5)


def report_for(tmp_path, **numbers) -> dict:
    measured = {"A": [seed_run(k, **numbers) for k in range(5)], "B": [seed_run(k, **numbers) for k in range(5)]}
    return build_report(measured, tmp_path, quick=True, setup={}).write(1.0)


REQUIRED = ("Oracle reaches at least the hindsight", "does not exceed its upper bound", "hindsight optimum at no more")


def test_single_node_checks_hold_on_consistent_numbers(tmp_path, checks_hold):
    summary = report_for(tmp_path)
    checks_hold(summary, *REQUIRED)
    assert summary["all_checks_passed"]
    labels = {c["quantity"]: c["verdict"].split(" (")[0] for c in summary["comparisons"]}
    assert labels["PALS tokens/J vs Baseline (geometric mean of models)"] == "same direction"  # 1.17x against 1.26x
    assert labels["batch-only (AdaptiveBatch) vs Baseline"] == "differs"
    json.loads((tmp_path / "summary.json").read_text())


@pytest.mark.parametrize("forced, claim", [
    (dict(oracle=1.10, hindsight=1.18), "Oracle reaches at least the hindsight"),
    (dict(pals=1.30, oracle=1.20), "does not exceed its upper bound"),
    (dict(pals=1.10, hindsight=1.18), "hindsight optimum at no more"),
    (dict(pals_viol=6.0), "PALS >= baseline"),
])
def test_a_check_forced_to_fail_fails_the_experiment_test(tmp_path, checks_hold, forced, claim):
    summary = report_for(tmp_path, **forced)
    assert not summary["all_checks_passed"]
    assert any(claim in c["claim"] and not c["passed"] for c in summary["checks"])
    with pytest.raises(AssertionError, match="checks do not hold"):
        checks_hold(summary, *REQUIRED, "PALS >= baseline")


def test_pals_beating_its_bound_is_flagged_in_the_verdicts(tmp_path):
    summary = report_for(tmp_path, pals=1.30, oracle=1.20)
    verdicts = {c["quantity"]: c["verdict"] for c in summary["comparisons"]}
    assert verdicts["PALS as share of the Oracle's tokens/J"].startswith("differs: exceeds its upper bound")
