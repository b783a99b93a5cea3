"""The multi-node hindsight yardstick: the combination search, its report and check on constructed numbers,
and a fixed configuration's node run being the variants' own."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import numpy as np
import pytest

from pals.control.types import Configuration
from pals.errors import ConfigError
from pals.experiments.cluster_hindsight import (
    HINDSIGHT_SHARE_MIN,
    ClusterHindsight,
    NodeSweep,
    best_combination,
    criteria_from,
    hindsight_section,
    unservable_nodes,
    why_no_combination,
)
from pals.experiments.report import Report
from pals.runtime.hindsight import MeetCriteria

DURATION_S = 100.0
CONFIGS = (Configuration(200.0, 64), Configuration(300.0, 64), Configuration(400.0, 64))


def sweep(tokens_per_joule: list[float], power_w: list[float], violations_pct: list[float],
          slo_pct: list[float | None] | None = None, ttft_s: list[float | None] | None = None) -> NodeSweep:
    """A node's sweep over `CONFIGS` with the given tokens/J, mean node power, strict QoS violations (and, where
    given, SLO violations and TTFT p99)."""
    energy = np.asarray(power_w) * DURATION_S
    slo = slo_pct or [None] * len(power_w)
    ttft = ttft_s or [None] * len(power_w)
    return NodeSweep(CONFIGS, np.asarray(tokens_per_joule) * energy, energy, DURATION_S,
                     tuple({"qos_violation_pct": v, "slo_violation_pct": s, "throughput_tps": t * w, "ttft_p99_s": f}
                           for v, s, t, w, f in zip(violations_pct, slo, tokens_per_joule, power_w, ttft)))


def three_nodes() -> dict[str, NodeSweep]:
    """Lower caps are more efficient everywhere; node "c"'s most efficient configuration violates often."""
    return {"a": sweep([3.5, 3.3, 3.1], [1200.0, 1600.0, 1800.0], [0.0, 0.0, 0.0]),
            "b": sweep([1.2, 1.0, 0.9], [1200.0, 1600.0, 1800.0], [2.0, 1.0, 0.5]),
            "c": sweep([6.0, 5.0, 4.8], [1200.0, 1400.0, 1500.0], [30.0, 2.0, 1.0])}


def brute_force(sweeps: dict[str, NodeSweep], budget_w: float, criteria: dict[str, MeetCriteria]):
    """The best (cluster tokens/J, configs) by trying every combination in plain Python."""
    best = None
    names = list(sweeps)
    for combo in itertools.product(range(len(CONFIGS)), repeat=len(names)):
        s = [sweeps[n] for n in names]
        if not all(criteria[n].meets(sw.summaries[i]) for n, sw, i in zip(names, s, combo)):
            continue
        if sum(sw.node_power_w[i] for sw, i in zip(s, combo)) > budget_w:
            continue
        tpj = sum(sw.tokens[i] for sw, i in zip(s, combo)) / sum(sw.energy_j[i] for sw, i in zip(s, combo))
        if best is None or tpj > best[0]:
            best = (tpj, {n: CONFIGS[i] for n, i in zip(names, combo)})
    return best


@pytest.mark.parametrize("budget_w", [3600.0, 4000.0, 4400.0, 4800.0, 6000.0])
def test_the_search_is_the_best_combination_within_the_budget_and_criteria(budget_w):
    sweeps = three_nodes()
    criteria = criteria_from({"a": 0.0, "b": 2.0, "c": 2.0})
    found, expected = best_combination(sweeps, budget_w, criteria), brute_force(sweeps, budget_w, criteria)
    if expected is None:
        assert found is None
        return
    assert found.configs == expected[1]
    assert found.tokens_per_joule == pytest.approx(expected[0])
    assert found.cluster_power_w <= budget_w
    assert found.cluster_power_w == pytest.approx(sum(found.node_power_w.values()))
    assert all(found.qos_violation_pct[n] <= limit for n, limit in {"a": 0.0, "b": 2.0, "c": 2.0}.items())


def test_the_budget_and_the_criteria_bind():
    sweeps = three_nodes()
    free = best_combination(sweeps, 10_000.0, {})
    assert free.configs == {n: CONFIGS[0] for n in sweeps}  # no limits: the most efficient of every node
    assert free.qos_violation_pct["c"] == 30.0
    held = best_combination(sweeps, 10_000.0, criteria_from({"a": 0.0, "b": 2.0, "c": 2.0}))
    assert held.configs["c"] == CONFIGS[1]  # node c's most efficient configuration violates more than allowed
    tight = best_combination(sweeps, 4200.0, criteria_from({"a": 0.0, "b": 2.0, "c": 2.0}))
    assert tight.cluster_power_w <= 4200.0
    assert tight.meeting < held.meeting


def test_no_combination_says_why():
    sweeps = three_nodes()
    strict = criteria_from({"a": 0.0, "b": 0.0, "c": 2.0})  # no configuration of b has 0 % violations
    assert best_combination(sweeps, 10_000.0, strict) is None
    assert "no fixed configuration of b" in why_no_combination(sweeps, 10_000.0, strict)
    tight = criteria_from({"a": 0.0, "b": 0.5, "c": 1.0})  # b and c only at 400 W: at least 4,500 W in all
    assert best_combination(sweeps, 4400.0, tight) is None
    assert "4,500 W, over the 4,400 W budget" in why_no_combination(sweeps, 4400.0, tight)
    assert why_no_combination(sweeps, 4500.0, tight) == ""


def test_the_same_load_must_be_served():
    """A configuration that delivers less than PALS + coordinator did (its queue grows) is not a candidate."""
    sweeps = {"a": sweep([3.5, 3.3, 3.1], [1200.0, 1600.0, 1800.0], [0.0] * 3)}
    served = {"a": float(sweeps["a"].summaries[1]["throughput_tps"])}
    free = best_combination(sweeps, 5000.0, criteria_from({"a": 0.0}))
    held = best_combination(sweeps, 5000.0, criteria_from({"a": 0.0}, None, served))
    assert free.configs["a"] == CONFIGS[0] and held.configs["a"] == CONFIGS[1]


def test_slo_violations_count_where_given():
    sweeps = {"a": sweep([3.5, 3.3, 3.1], [1200.0, 1600.0, 1800.0], [0.0] * 3, slo_pct=[20.0, 1.0, 0.0])}
    assert best_combination(sweeps, 5000.0, criteria_from({"a": 0.0})).configs["a"] == CONFIGS[0]
    assert best_combination(sweeps, 5000.0, criteria_from({"a": 0.0}, {"a": 1.0})).configs["a"] == CONFIGS[1]


def test_the_service_bound_excludes_a_configuration_whose_requests_queue():
    """The most efficient configuration runs near saturation: same violations and load, a 6 s TTFT p99."""
    sweeps = {"a": sweep([3.5, 3.3, 3.1], [1200.0, 1600.0, 1800.0], [0.0] * 3, ttft_s=[6.0, 0.7, 0.5])}
    bounded = best_combination(sweeps, 5000.0, criteria_from({"a": 0.0}))
    blind = best_combination(sweeps, 5000.0, criteria_from({"a": 0.0}, service_bound=False))
    assert bounded.configs["a"] == CONFIGS[1] and bounded.ttft_p99_s == {"a": 0.7}
    assert blind.configs["a"] == CONFIGS[0]
    # A node the budget affords no fixed configuration within the bound is not held to latency at all.
    assert best_combination(sweeps, 5000.0, criteria_from({"a": 0.0}, unservable={"a"})).configs["a"] == CONFIGS[0]
    # A policy as slow as the queueing configuration is compared with it.
    slow = best_combination(sweeps, 5000.0, criteria_from({"a": 0.0}, ttft_p99_s={"a": 6.5}))
    assert slow.configs["a"] == CONFIGS[0]
    assert "ttft_p99_s <= 2" in why_no_combination(
        {"a": sweep([3.5, 3.3, 3.1], [1200.0] * 3, [0.0] * 3, ttft_s=[6.0] * 3)}, 5000.0, criteria_from({"a": 0.0}))


def test_a_node_is_unservable_where_no_configuration_within_the_bound_fits_the_budget():
    def latency(ttft_s):
        sw = sweep([3.5, 3.3, 3.1], [1200.0, 1600.0, 1800.0], [0.0] * 3, ttft_s=ttft_s)
        return NodeSweep(sw.configs, sw.tokens, sw.energy_j, sw.duration_s,
                         tuple(dict(x, tpot_p99_ms=30.0) for x in sw.summaries))

    sweeps = {"a": latency([6.0, 0.7, 0.5]), "b": latency([2.5, 2.4, 2.2]), "c": latency([6.0, 5.0, 1.0])}
    # b: never within 2 s; c: within it only at 1,800 W, which 4,000 W leaves (4,000 - 2 x 1,200 = 1,600 W) no room for.
    assert unservable_nodes(sweeps, 4000.0) == {
        "b": "its fastest fixed configuration has a TTFT p99 of 2.20 s",
        "c": "within the bound only at 1,800 W or more, with 1,600 W left by the budget"}
    assert set(unservable_nodes(sweeps, 5000.0)) == {"b"}
    assert unservable_nodes({"a": sweep([1.0] * 3, [1.0] * 3, [0.0] * 3)}, 10.0) == {"a": "its runs report no latency"}


def test_bad_input_is_one_clear_error():
    with pytest.raises(ConfigError, match="budget"):
        best_combination(three_nodes(), 0.0, {})
    with pytest.raises(ConfigError, match="as many"):
        NodeSweep(CONFIGS, np.ones(2), np.ones(3), DURATION_S, ({},) * 3)


# -- the report and its check on constructed numbers ----------------------------------------------------


def coordinator(tpj: float, violations: dict[str, float], k: int, ttft_s: float | None = 0.7):
    """PALS + coordinator's figures on seed `k` (the attributes the section reads; `ttft_s` None: no latency)."""
    wobble = 1.0 + 0.005 * (k - 2)
    latency = {} if ttft_s is None else {"node_ttft_p99_s": {m: ttft_s for m in "abc"},
                                         "node_tpot_p99_ms": {m: 40.0 for m in "abc"}}
    return SimpleNamespace(tokens_per_joule=tpj * wobble, qos_violation_pct=violations,
                           node_power_w={"a": 1700.0, "b": 1500.0, "c": 1450.0}, mean_cluster_power_w=4650.0, **latency)


def section(tmp_path, pals_share: float, budget_w: float = 4800.0, ttft_s: float | None = 0.7,
            unservable: dict[str, str] | None = None):
    """The section over five seeds of `three_nodes`, PALS + coordinator at `pals_share` x the optimum."""
    sweeps = three_nodes()
    violations = {"a": 0.0, "b": 2.0, "c": 2.0}
    best = best_combination(sweeps, budget_w, criteria_from(violations))
    pals = [coordinator(pals_share * best.tokens_per_joule, violations, k, ttft_s) for k in range(5)]
    hindsight = ClusterHindsight(list(range(5)), {"binding": [best] * 5}, {"binding": [""] * 5}, [],
                                 {"binding": [best] * 5}, {"binding": [unservable or {}] * 5})
    report = Report("multi-node", "test", tmp_path, quick=True)
    metrics = hindsight_section(report, {"binding": f"binding {budget_w:,.0f} W"}, {"binding": budget_w},
                                {"binding": pals}, hindsight, ["a", "b", "c"])
    report.metrics = metrics
    return report.write(1.0), metrics


def test_the_check_holds_when_pals_reaches_the_bar(tmp_path, checks_hold):
    summary, metrics = section(tmp_path, 0.99)
    checks_hold(summary, "the hindsight optimum's cluster tokens/J")
    share = metrics["binding"]["pals+coordinator/hindsight"]
    assert share["mean"] == pytest.approx(0.99, abs=1e-3) and share["low"] < share["mean"] < share["high"]
    text = (tmp_path / "report.md").read_text()
    assert "at or above the 0.97x bar" in text and "hindsight_combinations" in text


def test_the_service_bound_check_is_computed_from_pals_latency(tmp_path, checks_hold):
    summary, metrics = section(tmp_path, 0.99)
    checks_hold(summary, "keeps every node within the service bound")
    assert metrics["binding"]["pals+coordinator/latency_blind"]["mean"] == pytest.approx(0.99, abs=1e-3)
    assert "Without the service bound" in (tmp_path / "report.md").read_text()
    for ttft_s, evidence in ((3.0, "worst TTFT p99 3.00 s"), (None, "not reported")):
        summary, _ = section(tmp_path, 0.99, ttft_s=ttft_s)
        (check,) = [c for c in summary["checks"] if "keeps every node within" in c["claim"]]
        assert not check["passed"] and evidence in check["evidence"]
    # Where no fixed configuration serves a node within the bound, the node is not held to it (and the evidence says so).
    why = "its fastest fixed configuration has a TTFT p99 of 2.50 s"
    summary, _ = section(tmp_path, 0.99, ttft_s=3.0, unservable={m: why for m in "abc"})
    (check,) = [c for c in summary["checks"] if "keeps every node within" in c["claim"]]
    assert check["passed"] and f"a on run 1 ({why})" in check["evidence"]
    summary, _ = section(tmp_path, 0.99, ttft_s=3.0, unservable={"a": why})  # b and c are held to it and break it
    assert not [c for c in summary["checks"] if "keeps every node within" in c["claim"]][0]["passed"]


def test_a_check_forced_to_fail_fails(tmp_path, checks_hold):
    summary, _ = section(tmp_path, HINDSIGHT_SHARE_MIN - 0.05)
    assert not summary["all_checks_passed"]
    with pytest.raises(AssertionError, match="checks do not hold"):
        checks_hold(summary, "the hindsight optimum's cluster tokens/J")
    assert "below the 0.97x bar" in (tmp_path / "report.md").read_text()


def test_no_optimum_on_any_seed_counts_for_pals_and_says_why(tmp_path):
    """No fixed combination meets PALS + coordinator's figures on any seed: it is beyond every one."""
    pals = [coordinator(3.0, {"a": 0.0, "b": 0.0, "c": 0.0}, k) for k in range(5)]
    hindsight = ClusterHindsight(list(range(5)), {"paper": [None] * 5}, {"paper": ["no fixed configuration of b"] * 5}, [])
    report = Report("multi-node", "test", tmp_path, quick=True)
    metrics = hindsight_section(report, {"paper": "paper 4,800 W"}, {"paper": 4800.0}, {"paper": pals}, hindsight,
                                ["a", "b", "c"])
    summary = report.write(1.0)
    assert metrics["paper"]["pals+coordinator/hindsight"] is None and metrics["paper"]["seeds_with_optimum"] == 0
    (check,) = [c for c in summary["checks"] if "hindsight optimum's cluster tokens/J" in c["claim"]]
    assert check["passed"] and "on 5 seeds no fixed combination" in check["evidence"]
    text = (tmp_path / "report.md").read_text()
    assert "no seed has a hindsight optimum" in text and "seed 0: no fixed configuration of b" in text
    json.dumps(metrics)  # summary.json material


# -- the sweep's node run is the variants' own ----------------------------------------------------------


def test_a_fixed_configuration_runs_as_the_variants_node_does():
    """Static 400 W / 64 on each node's stream gives the very tokens and energy of the Baseline (which holds
    400 W / 64 without a budget) in the multi-node cluster run: same node, stream, loop and counters."""
    from pals.experiments.cluster_hindsight import sweep_node
    from pals.experiments.common import Lab
    from pals.experiments.multi_node import _run_variant, _setup

    lab = Lab(seed=3, quick=True)
    info = _setup(lab)
    cluster = _run_variant(lab, info, "baseline", None, 10.0)
    for index, model in enumerate(info):
        node = sweep_node(lab, model, info[model], index, [Configuration(400.0, 64)], 10.0)
        assert node.tokens[0] == cluster.truth_tokens[model]
        assert node.energy_j[0] == pytest.approx(cluster.truth_energy_j[model], rel=1e-12)
        assert node.qos_violation_pct(0) == cluster.summaries[model]["qos_violation_pct"]
