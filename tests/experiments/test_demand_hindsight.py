"""demand-response's hindsight yardstick on constructed numbers: selection, pairing, the check and its wiring.

No simulator runs: every sweep is `hindsight_over` over a runner that returns constructed summaries,
so each test knows which configuration must win and what the check must say, and one forces the
check to fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pals.control.types import Configuration
from pals.experiments import demand_hindsight as dh
from pals.experiments import demand_response as dr
from pals.experiments.cluster_sim import ClusterRun
from pals.experiments.common import PAPER_BATCHES, PAPER_CAPS_W
from pals.experiments.report import Report
from pals.experiments.stats import Estimate, paired_ratio_ci
from pals.runtime.hindsight import HindsightResult, MeetCriteria, hindsight_over

# (cap W, batch) -> (tokens/J node, throughput tok/s, budget intervals over %)
SWEEP = {(400.0, 64): (3.50, 14_000.0, 0.0), (300.0, 64): (3.60, 13_000.0, 0.0), (200.0, 64): (4.00, 12_000.0, 5.0),
         (300.0, 32): (3.00, 10_000.0, 0.0)}


def sweep(values: dict = SWEEP, pals_over_pct: float = 0.0, scale: float = 1.0) -> HindsightResult:
    """Every configuration of `values` through `hindsight_over`, judged at PALS's overshoot (figures times `scale`)."""
    def run(config: Configuration) -> dict:
        tpj, tps, over = values[(config.power_cap_w, config.batch_cap)]
        return {"tokens_per_joule": scale * tpj, "tokens_per_joule_gpu": 1.3 * scale * tpj,
                "throughput_tps": scale * tps, "qos_violation_pct": 100.0, "budget_overshoot_pct": over}

    return hindsight_over([Configuration(c, b) for c, b in values], run,
                          MeetCriteria(max_budget_overshoot_pct=pals_over_pct), "node")


def part(pals_tpj: list[float], pals_tps: list[float], results: list[HindsightResult], name: str = "schedule",
         over: float = 0.0) -> dh.PartSeeds:
    return dh.PartSeeds(name, pals_tps, pals_tpj, [over] * len(results), results)


def test_the_optimum_is_the_best_configuration_at_no_more_overshoot_than_pals():
    result = sweep()
    # 200 W / 64 has the most tokens/J but overshoots more than PALS (0 %): it does not count.
    assert not next(r for r in result.rows if r.power_cap_w == 200.0).meets
    assert (dh.best_by(result, dh.TPJ).power_cap_w, dh.best_by(result, dh.TPJ).batch_cap) == (300.0, 64)
    assert (dh.best_by(result, dh.TPS).power_cap_w, dh.best_by(result, dh.TPS).batch_cap) == (400.0, 64)
    # PALS overshooting as much lets it in.
    assert dh.best_by(sweep(pals_over_pct=5.0), dh.TPJ).power_cap_w == 200.0
    nothing = sweep({(400.0, 64): (3.5, 14_000.0, 9.0)})
    assert dh.best_by(nothing, dh.TPJ) is None
    assert dh.optimum_configs(part([3.4], [14_000.0], [nothing])) == ["none meets"]


def test_ratios_are_paired_by_seed_and_leave_out_seeds_without_an_optimum():
    results = [sweep(scale=1.0), sweep(scale=1.1), sweep({(400.0, 64): (3.5, 14_000.0, 9.0)})]
    p = part([3.5, 3.9, 3.0], [13_500.0, 14_000.0, 12_000.0], results)
    est = dh.ratios(p)
    # Tokens/J against each seed's 300 W / 64 (3.6, 3.96); the third seed has no optimum and is left out.
    assert est[dh.CHECKED] == pytest.approx(paired_ratio_ci([3.5, 3.9], [3.6, 3.96]))
    assert est[dh.RATIOS_THROUGHPUT] == pytest.approx(paired_ratio_ci([13_500.0, 14_000.0], [13_000.0, 14_300.0]))
    assert est[dh.RATIOS_MOST] == pytest.approx(paired_ratio_ci([13_500.0, 14_000.0], [14_000.0, 15_400.0]))
    none = part([3.5], [13_500.0], [results[2]])
    assert dh.ratios(none)[dh.CHECKED] is None
    assert not dh.holds(None)


def test_the_check_rule_is_the_mean_against_the_bar():
    assert dh.holds(Estimate(0.98, 0.90, 1.05))  # the mean decides; the interval is reported beside it
    assert not dh.holds(Estimate(0.96, 0.95, 0.99))
    assert dh.holds(Estimate(0.96, 0.95, 0.99), bar=0.95)
    assert not dh.holds(Estimate(float("nan"), float("nan"), float("nan")))


def test_parts_need_one_entry_per_seed():
    with pytest.raises(ValueError, match="one entry per seed"):
        dh.PartSeeds("schedule", [1.0, 2.0], [1.0], [0.0], [sweep()])


def test_grids_keep_cap_only_configuration_and_name_the_reduction():
    quick, full = dh.schedule_grid(True), dh.schedule_grid(False)
    assert len(full) == len(PAPER_CAPS_W) * len(PAPER_BATCHES)
    assert set(quick) < set(full)
    # Cap-only's configuration (the highest cap, batch 64) stays in the reduced grid, and so does every cap:
    # the cap decides the schedule's optimum, only the batch axis is thinned.
    assert Configuration(max(PAPER_CAPS_W), max(PAPER_BATCHES)) in quick
    assert {c.power_cap_w for c in quick} == set(PAPER_CAPS_W) and max(PAPER_BATCHES) in {c.batch_cap for c in quick}
    below = dh.below_floor_grid(True)
    assert sorted(c.batch_cap for c in below) == sorted(PAPER_BATCHES)
    assert dh.below_floor_grid(False) == full
    assert "quick mode, reduced" in dr._grid_words(True) and "reduced" not in dr._grid_words(False)


def _report_checks(parts: list[dh.PartSeeds], tmp_path) -> tuple[dict, dict, str]:
    report = Report("demand-hindsight-test", "test", tmp_path, True)
    metrics = dh.report_yardstick(report, parts, list(range(len(parts[0].hindsight))))
    summary = report.write()
    return metrics, summary, (tmp_path / "report.md").read_text()


def test_report_check_holds_near_the_optimum_and_fails_when_forced(tmp_path):
    results = [sweep(), sweep(scale=1.02), sweep(scale=0.98)]
    good = part([0.99 * 3.6, 0.99 * 1.02 * 3.6, 0.99 * 0.98 * 3.6], [13_900.0, 14_100.0, 13_800.0], results)
    metrics, summary, text = _report_checks([good], tmp_path / "good")
    (check,) = summary["checks"]
    assert check["passed"] and "schedule" in check["claim"]
    assert metrics["schedule"][dh.CHECKED]["mean"] == pytest.approx(0.99)
    assert metrics["schedule"]["optimum"] == ["300 W / 64"] * 3
    assert "PALS reaches the 0.97x bar" in text and "400 W / 64 (3/3 seeds)" in text
    # Forced to fail: PALS at 0.9x of the optimum's tokens/J on every seed.
    bad = part([0.9 * 3.6, 0.9 * 1.02 * 3.6, 0.9 * 0.98 * 3.6], good.pals_throughput_tps, results)
    _, summary, text = _report_checks([bad], tmp_path / "bad")
    (check,) = summary["checks"]
    assert not check["passed"] and "0.900x" in check["evidence"]
    assert "falls short of the 0.97x bar" in text
    # Nothing meets PALS's overshoot on any seed: PALS is beyond every fixed configuration, which counts for it.
    empty = part([3.5], [14_000.0], [sweep({(400.0, 64): (3.5, 14_000.0, 9.0)})])
    _, summary, text = _report_checks([empty], tmp_path / "empty")
    assert summary["checks"][0]["passed"] and "PALS is beyond every one" in text


def test_the_yardstick_serves_as_much_as_pals():
    """A fixed configuration that leaves power unused below the target, and serves less, is not the yardstick."""
    values = {(250.0, 64): (3.8, 13_000.0, 0.0), (300.0, 64): (3.6, 14_000.0, 0.0)}
    free = sweep(values)
    held = hindsight_over([Configuration(c, b) for c, b in values],
                          lambda c: {"tokens_per_joule": values[(c.power_cap_w, c.batch_cap)][0],
                                     "tokens_per_joule_gpu": values[(c.power_cap_w, c.batch_cap)][0],
                                     "throughput_tps": values[(c.power_cap_w, c.batch_cap)][1],
                                     "qos_violation_pct": 100.0, "budget_overshoot_pct": 0.0},
                          MeetCriteria(max_budget_overshoot_pct=0.0).serving(14_000.0), "node")
    assert dh.best_by(free, dh.TPJ).power_cap_w == 250.0 and dh.best_by(held, dh.TPJ).power_cap_w == 300.0


def test_report_says_when_no_configuration_stays_within_the_budget(tmp_path):
    over = {(150.0, b): (1.0 + b / 64, 500.0 + 10 * b, 93.3) for b in (1, 16, 64)}
    below = part([2.0, 2.0], [1_140.0, 1_140.0], [sweep(over, 93.3), sweep(over, 93.3)], "below the floor", 93.3)
    _, summary, text = _report_checks([below], tmp_path)
    assert summary["checks"][0]["passed"]
    assert "No fixed configuration stays within this budget either: the least overshoot of any is 93.3 %" in text


# -- wiring into demand_response (constructed seeds, no runs) ------------------------------------------------


def _floors() -> dr.Floors:
    return dr.Floors(grid_floor_w=975.0, top_w=1820.0, top_tps=6000.0, lowest_cap_w=100.0,
                     at_lowest_cap_w={1: 765.0, 64: 765.0}, tps_at_grid_floor={b: 30.0 * b for b in PAPER_BATCHES})


def _seed(seed: int, pals_scale: float) -> dr.ResponseSeed:
    labels = tuple(dr.POLICIES)
    below = {frac: {label: dr.BelowFloor(budget_w=765.0 * frac, throughput_tps=1_140.0, mean_power_w=765.0,
                                         tokens_per_joule=2.0, batch_cap=64.0, power_cap_w=100.0,
                                         budget_overshoot_pct=93.3) for label in labels}
             for frac in dr.BELOW_FLOOR_FRACTIONS}
    over = {(150.0, b): (1.0 + b / 64, 500.0 + 10 * b, 93.3) for b in (1, 16, 64)}
    return dr.ResponseSeed(
        throughput_tps={"cap-only": 14_000.0, "pals": 14_000.0},
        tokens_per_joule={"cap-only": 3.5, "pals": 3.6 * pals_scale},
        tracking_error_pct=dict.fromkeys(labels, 2.4), overshoot_pct=dict.fromkeys(labels, 0.2),
        over_share_pct=dict.fromkeys(labels, 0.4), by_level={label: {0.1: 9_000.0, 1.0: 18_000.0} for label in labels},
        batch_by_level={label: {0.1: 64.0, 1.0: 64.0} for label in labels},
        low_throughput_tps=dict.fromkeys(labels, 9_000.0), below_floor=below, seed=seed, pals_budget_overshoot_pct=0.0,
        hindsight=sweep(scale=1.0 + 0.01 * seed),
        below_hindsight={f: sweep(over, 93.3) for f in dr.BELOW_FLOOR_FRACTIONS})


def test_build_report_has_one_yardstick_check_per_part_and_fails_when_forced(tmp_path):
    setup = {"seeds": "3"}
    fine = [_seed(s, 0.99 * (1.0 + 0.01 * s)) for s in range(3)]
    summary = dr.build_report(fine, _floors(), tmp_path / "fine", True, setup).write()
    mine = [c for c in summary["checks"] if "hindsight optimum's tokens/J" in c["claim"]]
    assert len(mine) == 1 + len(dr.BELOW_FLOOR_FRACTIONS) and all(c["passed"] for c in mine)
    assert set(summary["metrics"]["hindsight"]) == {"power-target schedule",
                                                    *(f"below the floor at {f:.0%}" for f in dr.BELOW_FLOOR_FRACTIONS)}
    assert (tmp_path / "fine" / "tables" / "hindsight.csv").is_file()
    worse = [_seed(s, 0.95 * (1.0 + 0.01 * s)) for s in range(3)]
    summary = dr.build_report(worse, _floors(), tmp_path / "worse", True, setup).write()
    (schedule,) = [c for c in summary["checks"] if "tokens/J, power-target schedule" in c["claim"]]
    assert not schedule["passed"] and "0.950x" in schedule["evidence"]
    # Without sweeps (older measurements) the report has no yardstick and no check for it.
    for s in worse:
        s.hindsight, s.below_hindsight = None, {}
    summary = dr.build_report(worse, _floors(), tmp_path / "none", True, setup).write()
    assert not [c for c in summary["checks"] if "hindsight" in c["claim"]] and summary["metrics"]["hindsight"] == {}


def test_cluster_summary_weights_gpu_energy_and_averages_the_nodes_overshoot():
    schedule = dr._node_schedule(975.0, 1820.0, 10.0, 5.0)
    records = {f"node{i}": [{"t_s": 0.0, "sample": None}] + [
        {"t_s": 0.5 * (k + 1), "sample": {"throughput_tps": 100.0 * (i + 1), "batch_cap": 64, "node_power_w": 1000.0}}
        for k in range(4)] for i in range(2)}
    summaries = {"node0": {"tokens_per_joule": 2.0, "energy_j": 100.0, "gpu_energy_j": 50.0, "qos_violation_pct": 100.0,
                           "budget_overshoot_pct": 0.0},
                 "node1": {"tokens_per_joule": 4.0, "energy_j": 300.0, "gpu_energy_j": 250.0, "qos_violation_pct": 90.0,
                           "budget_overshoot_pct": 10.0}}
    res = ClusterRun(summaries=summaries, records=records, cluster_power_w=np.full(4, 2000.0),
                     times_s=np.array([0.5, 1.0, 1.5, 2.0]), truth_tokens={"node0": 200.0, "node1": 1200.0},
                     truth_energy_j={"node0": 100.0, "node1": 300.0})
    out = dr.cluster_summary(res, schedule, _floors())
    assert out["tokens_per_joule"] == pytest.approx(1400.0 / 400.0)
    assert out["tokens_per_joule_gpu"] == pytest.approx((200.0 + 1200.0) / 300.0)
    assert out["throughput_tps"] == pytest.approx(300.0)
    assert out["budget_overshoot_pct"] == pytest.approx(5.0) and out["qos_violation_pct"] == pytest.approx(95.0)
    assert all(math.isfinite(v) for v in out.values())
