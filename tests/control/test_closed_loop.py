"""Closed-loop behaviour on the simulated node: the issue's "must show" figures.

Loads are saturating Poisson arrivals (1.3x the node's capacity) with prompt and output lengths
drawn from the Azure conversation trace; the target is 70 % of the node's maximum throughput.
Efficiency is compared on node tokens/J, the policies' objective and the summaries' headline.
"""

from __future__ import annotations

import numpy as np
import pytest

from pals.control.budget import BudgetSchedule, BudgetStep, PowerBudget
from pals.runtime.load import LoadSpec
from pals.runtime.scenario import run_scenario

CONV_MEAN_OUTPUT_TOKENS = 211.0


def saturating(max_tps, seed=3):
    return LoadSpec(rate_rps=1.3 * max_tps / CONV_MEAN_OUTPUT_TOKENS, seed=seed)


@pytest.mark.parametrize("model", ["Qwen1.5-MoE-A2.7B", "Mixtral-8x7B", "Llama-2-7B"])
def test_pals_near_oracle_beats_baseline_few_violations(scenario_parts, model):
    deployment, predictor, truth, max_tps = scenario_parts(model)
    target = 0.7 * max_tps
    # The Oracle's truth is built for this run's stream by run_scenario (pals.runtime.delivered).
    results = {
        name: run_scenario(deployment, saturating(max_tps), name, duration_s=300, target_tps=target,
                           predictor=predictor).summary
        for name in ("baseline", "pals", "oracle")
    }
    pals, oracle, baseline = results["pals"], results["oracle"], results["baseline"]
    assert pals["tokens_per_joule"] >= 0.95 * oracle["tokens_per_joule"], results
    # Node joules carry the node's fixed ~345 W, which dilutes every gain (GPU tokens/J: +2-7 %).
    assert pals["tokens_per_joule"] >= 1.004 * baseline["tokens_per_joule"], results
    assert pals["tokens_per_joule_gpu"] >= 1.01 * baseline["tokens_per_joule_gpu"], results
    # The 5 % tolerance the old headline had; strictly (any shortfall while requests wait) PALS,
    # aiming at the target plus its margin, still falls short in a few intervals (5.5 % on Mixtral).
    assert pals["qos_violation_pct_lenient"] <= 5.0, results
    assert pals["qos_violation_pct"] <= 10.0, results
    assert pals["qos_violation_pct"] >= pals["qos_violation_pct_lenient"], results
    assert pals["throughput_tps"] >= 0.95 * target


@pytest.mark.parametrize("kind, budgets", [("node", (1500.0, 1100.0)), ("gpu", (1200.0, 700.0))])
@pytest.mark.parametrize("policy", ["pals", "baseline", "adaptive-batch", "adaptive-cap"])
def test_budget_step_down_is_met_within_four_intervals(scenario_parts, policy, kind, budgets):
    deployment, predictor, truth, max_tps = scenario_parts("Mixtral-8x7B")
    step_s = 60.0
    schedule = BudgetSchedule((BudgetStep(0.0, budgets[0]), BudgetStep(step_s, budgets[1])), kind)
    result = run_scenario(deployment, saturating(max_tps), policy, duration_s=120, target_tps=0.7 * max_tps,
                          budget_schedule=schedule, predictor=predictor)
    after = [r for r in result.records if r["sample"] is not None and r["t_s"] > step_s + 1e-6]
    power = np.array([r["measured"]["budget_power_w"] for r in after])
    # Interval power is under the new budget within 4 intervals (2 s) ...
    first_under = next(i for i, p in enumerate(power) if p <= budgets[1])
    assert first_under < 4, power[:6]
    # ... and from the settling time on, the 5 s mean (the QoS window, restarted at the step) stays
    # within +2 % of it, while no single interval exceeds it by more than 10 % (spikes are bounded).
    window = 10
    window_mean = np.array([power[max(0, k - window + 1):k + 1].mean() for k in range(len(power))])
    assert window_mean[4:].max() <= 1.02 * budgets[1], window_mean.max()
    assert power[first_under:].max() <= 1.10 * budgets[1], power.max()
    assert result.summary["budget_overshoot_pct"] == 0.0


def test_pals_is_stable_under_stationary_load(scenario_parts):
    deployment, predictor, truth, max_tps = scenario_parts("Qwen1.5-MoE-A2.7B")
    result = run_scenario(deployment, saturating(max_tps, seed=5), "pals", duration_s=300,
                          target_tps=0.6 * max_tps, budget=PowerBudget(1300.0, "node"), predictor=predictor)
    settled = [r for r in result.records if r["t_s"] > 30.0]
    changes = sum(1 for r in settled if r["config_changed"])
    assert changes <= 0.05 * len(settled), changes


def test_unreachable_budget_and_target_run_best_effort_and_say_so(scenario_parts):
    deployment, predictor, truth, max_tps = scenario_parts("Mixtral-8x7B")
    result = run_scenario(deployment, saturating(max_tps), "pals", duration_s=20, target_tps=5 * max_tps,
                          budget=PowerBudget(500.0, "node"), predictor=predictor)
    warnings = " ".join(result.summary["warnings"])
    assert "below what any configuration draws" in warnings
    assert "above the node's predicted maximum" in warnings
    # One line per kind of warning, however often its live numbers changed during the run.
    assert sum("above the node's predicted maximum" in w for w in result.summary["warnings"]) == 1
    last = result.records[-1]["decision"]["config"]
    assert last["power_cap_w"] == 100.0  # the A100's lowest settable cap: the least power it can draw
    assert result.summary["throughput_tps"] > 0
