"""The issue's load-related fixes: capacity learnt only when capacity-limited, the load-aware
objective, GET /frontier, the power-tracking error and the profiler's drain.

Unit tests use the synthetic `TableModel` of test_policies (data standing in for a fitted
predictor); the closed-loop test runs the simulated node under a fixed Poisson load."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from pals.control.endpoint import Endpoint
from pals.control.loop import ControlLoop
from pals.control.policies import Baseline, make_policy
from pals.control.summary import summarize
from pals.control.types import Configuration


def _policy_helpers():
    """The synthetic table and context helpers of test_policies.py (tests are not a package here)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_pals_test_policies", Path(__file__).with_name("test_policies.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _policy_helpers()
CONSTRAINTS, TableModel, ctx, obs_for = _helpers.CONSTRAINTS, _helpers.TableModel, _helpers.ctx, _helpers.obs_for


def feed(policy, model, current, n, start_i=1, **obs_kwargs):
    decision = None
    for i in range(start_i, start_i + n):
        decision = policy.decide(ctx(current=current, obs=obs_for(model, current, time_s=0.5 * i, **obs_kwargs),
                                     target=400.0, index=i))
    return decision


# -- 1: capacity correction ------------------------------------------------------------------


def test_capacity_ratio_is_not_learnt_from_demand_limited_intervals():
    model = TableModel()
    policy = make_policy("pals", predictor=model)
    current = policy.decide(ctx(target=400.0, index=0)).config
    # Half the capacity is offered: momentary queues (1 waiting, every other interval) while the
    # batch is far from full.
    for i in range(1, 61):
        policy.decide(ctx(current=current, obs=obs_for(model, current, 0.5, waiting=i % 2, time_s=0.5 * i,
                                                       running=current.batch_cap // 4), target=400.0, index=i))
    assert policy.memory_.seconds == {}
    assert policy.memory_.pooled() == pytest.approx(1.0)


def test_capacity_ratio_is_learnt_from_capacity_limited_intervals_after_warmup():
    model = TableModel()
    policy = make_policy("pals", predictor=model)
    current = policy.decide(ctx(target=400.0, index=0)).config
    feed(policy, model, current, 9, factor=0.3)  # filling: first 4.5 s, ignored
    assert policy.memory_.seconds == {}
    feed(policy, model, current, 20, start_i=10, factor=0.8)  # batch full, queue: capacity
    assert policy.memory_.seconds.get(current, 0.0) > 0
    assert policy.memory_.factor(current) < 0.95


# -- 2: load-aware objective -----------------------------------------------------------------


def test_known_demand_below_capacity_picks_a_lower_cap_than_saturation():
    model = TableModel()
    saturated = make_policy("pals", predictor=model)
    sat_choice = saturated.decide(ctx(target=400.0, index=0)).config
    aware = make_policy("pals", predictor=model)
    current = aware.decide(ctx(current=Configuration(400.0, 64), target=400.0, index=0)).config
    demand = 420.0
    reasons = []
    for i in range(1, 80):  # the node delivers the demand, nothing waits
        thr_now, _ = model.truth(np.array(current.power_cap_w), np.array(current.batch_cap))
        d = aware.decide(ctx(current=current, obs=obs_for(model, current, demand / float(thr_now), waiting=0,
                                                          running=4, time_s=0.5 * i), target=400.0, index=i))
        reasons.append(d.reason)
        current = d.config
    assert aware.demand_tps_ == pytest.approx(demand, rel=0.01)
    chosen = current
    # The choice minimises predicted power at the delivered throughput, among candidates with margin.
    caps = np.repeat([150.0, 200.0, 250.0, 300.0, 350.0, 400.0], 6)
    batches = np.tile([1, 4, 8, 16, 32, 64], 6)
    thr, gpu_w = model.truth(caps, batches)
    need = max(400.0 * 1.1, demand * 1.1)
    util = np.minimum(demand, thr) / thr
    power = util * gpu_w + (1 - util) * np.minimum(0.6 * CONSTRAINTS.power_cap_min_w * 4, gpu_w)
    eff = np.where(thr >= need, np.minimum(demand, thr) / power, -1)
    best = int(np.argmax(eff))
    assert chosen == Configuration(float(caps[best]), int(batches[best])), (chosen, sat_choice)
    assert any("offered load changed" in r for r in reasons)
    assert chosen.power_cap_w <= sat_choice.power_cap_w


CONV_MEAN_OUTPUT_TOKENS = 211.0


def test_fixed_load_pals_picks_a_low_cap_near_the_oracle(scenario_parts):
    from pals.control.policies import PolicyOptions
    """Fixed loads of 30-50 % of capacity: PALS runs a low cap, near the Oracle's tokens/J on average.

    The paper's "95 % of the oracle" is an average. Since the recalibration one cap step costs 6-7 %
    tokens/J (Mixtral, 200 -> 250 W at batch 64), and at 50 % load the Oracle's 200 W needs 1,428 tok/s
    of capacity where the profile measured 1,391 (2.6 % low, a 30 s window): PALS keeps 250 W and gets
    93.6 % of the Oracle there, 98-100 % at 30 and 40 %. So the mean over the loads is held to 95 %
    and no single load may fall more than one cap step (10 %) short."""
    from pals.runtime.load import LoadSpec
    from pals.runtime.scenario import run_scenario

    deployment, predictor, truth, max_tps = scenario_parts("Mixtral-8x7B")
    ratios = []
    for fraction in (0.3, 0.4, 0.5):
        load_tps = fraction * max_tps
        load = LoadSpec(rate_rps=load_tps / CONV_MEAN_OUTPUT_TOKENS, seed=11)
        results = {name: run_scenario(deployment, load, name, duration_s=120, target_tps=0.95 * load_tps,
                                      predictor=predictor)
                   for name in ("baseline", "pals")}
        pals, base = (results[n].summary for n in ("pals", "baseline"))
        # The Oracle (built for this stream by run_scenario) is held to PALS's own share of violations.
        allowance = PolicyOptions(oracle_max_qos_violation_pct=pals["qos_violation_pct"])
        oracle = run_scenario(deployment, load, "oracle", duration_s=120, target_tps=0.95 * load_tps,
                              options=allowance).summary
        final_cap = results["pals"].records[-1]["decision"]["config"]["power_cap_w"]
        assert final_cap <= 250.0, (fraction, results["pals"].records[-1]["decision"])
        ratios.append(pals["tokens_per_joule"] / oracle["tokens_per_joule"])
        assert ratios[-1] >= 0.90, (fraction, pals, oracle)
        assert pals["tokens_per_joule"] >= 1.05 * base["tokens_per_joule"], (fraction, pals, base)
        # Held to PALS's share of violations on the truth of this stream; the live run's telemetry
        # noise can move the QoS window's edge by one interval either way.
        one_interval_pct = 100.0 / oracle["intervals"]
        assert oracle["qos_violation_pct"] <= pals["qos_violation_pct"] + one_interval_pct + 1e-9, (fraction, pals, oracle)
    assert np.mean(ratios) >= 0.95, ratios


# -- 4: GET /frontier and time_s ---------------------------------------------------------------


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _loop(policy):
    from pals.sim.node import SimNode, SimNodeSpec
    from pals.sim.workload import LengthDistribution, PoissonWorkload

    workload = PoissonWorkload(4.0, LengthDistribution.fixed(300), LengthDistribution.fixed(100), seed=1)
    node = SimNode(SimNodeSpec("Qwen1.5-MoE-A2.7B", "A100-SXM4-80GB"), workload, seed=1)
    return ControlLoop(node, policy, node.clock)


def test_frontier_serves_the_policys_predicted_table_and_status_has_time():
    model = TableModel()
    loop = _loop(make_policy("pals", predictor=model))
    loop.step()
    loop.node.clock.wait_until(loop.node.clock.now_s() + 0.5)
    loop.step()
    with Endpoint(loop, port=0) as endpoint:
        frontier = _get(endpoint.url + "/frontier")
        status = _get(endpoint.url + "/status")
    points = frontier["points"]
    assert len(points) == 36
    assert set(points[0]) == {"power_cap_w", "batch_cap", "throughput_tps", "gpu_power_w", "node_power_w"}
    p = next(pt for pt in points if pt["power_cap_w"] == 250.0 and pt["batch_cap"] == 16)
    thr, gpu_w = model.truth(np.array(250.0), np.array(16))
    assert p["throughput_tps"] == pytest.approx(float(thr), rel=1e-3)
    assert p["gpu_power_w"] == pytest.approx(float(gpu_w), rel=1e-3)
    assert status["time_s"] == pytest.approx(loop.node.clock.now_s())


def test_frontier_is_empty_with_a_reason_for_baseline_and_the_client_falls_back():
    from pals.cluster.client import HttpNodeClient

    loop = _loop(Baseline())
    loop.step()
    with Endpoint(loop, port=0) as endpoint:
        frontier = _get(endpoint.url + "/frontier")
        client = HttpNodeClient(endpoint.url)
        assert client.frontier() is None
        client.close()
    assert frontier["points"] == [] and "no predictor" in frontier["reason"]


def test_client_builds_a_frontier_from_the_endpoint():
    from pals.cluster.client import HttpNodeClient

    loop = _loop(make_policy("pals", predictor=TableModel()))
    loop.step()
    with Endpoint(loop, port=0) as endpoint:
        client = HttpNodeClient(endpoint.url)
        frontier = client.frontier()
        client.close()
    assert frontier is not None and len(frontier.node_power_w) >= 2
    assert list(frontier.throughput_tps) == sorted(frontier.throughput_tps)


# -- 5: power tracking error -------------------------------------------------------------------


def _rec(power_w, budget_w=1000.0, bound=False, violation=False, at_max=False, interval=1, waiting=None):
    return {"t_s": 0.5 * interval, "time_s": 0.5 * interval,
            "policy": "x", "interval": interval, "interval_s": 0.5, "decide_ms": 0.1, "config_changed": False,
            "budget": {"budget_w": budget_w, "kind": "node"}, "target": {"target_tps": 100.0},
            "sample": {"throughput_tps": 100.0, "node_power_w": power_w, "gpu_power_w": power_w / 2,
                       "requests_waiting": (1 if violation else 0) if waiting is None else waiting,
                       "requests_running": 1, "power_cap_w": 400.0, "batch_cap": 64},
            "decision": {"config": {"power_cap_w": 400.0, "batch_cap": 64}, "reason": "test", "budget_bound": bound},
            "qos_violation": violation, "at_max_config": at_max,
            "capacity_limited": (violation if waiting is None else waiting > 0)}


def test_tracking_error_counts_binding_unused_and_overshoot_only():
    first = dict(_rec(0.0), sample=None)
    settle = [_rec(1000.0) for _ in range(4)]
    records = [first] + settle + [
        _rec(970.0, bound=True, waiting=3),        # bound while work waits: 3 %
        _rec(950.0, bound=True),                   # bound but nothing waits: the node needs no more
        _rec(800.0),                               # under budget, target met: not tracked
        _rec(900.0, violation=True),               # budget unused while short of target: 10 %
        _rec(900.0, violation=True, at_max=True),  # at its maximum: cannot use more, not tracked
        _rec(1020.0),                              # overshoot anywhere: 2 %
    ]
    # A one-interval power window makes the window mean the interval's own power: the tracking rule alone.
    out = summarize(records, power_window_s=0.5)
    assert out["power_tracking_intervals"] == 3
    assert out["power_tracking_error_pct"] == pytest.approx((3 + 10 + 2) / 3)
    assert out["power_tracking_error_raw_pct"] == pytest.approx((3 + 5 + 20 + 10 + 10 + 2) / 6)
    # The per-interval figure applies the same rule to interval power, whatever the window.
    assert summarize(records)["power_tracking_error_interval_pct"] == pytest.approx((3 + 10 + 2) / 3)


def test_budget_figures_use_the_trailing_window_mean_and_keep_interval_spikes():
    """Power alternating +6 % / -4 % around the budget: every other interval is over by 6 %, the
    5 s mean never by more than 1.4 % (window restarted at the budget change, after ten at 1000 W)."""
    first = dict(_rec(0.0), sample=None)
    steady = [_rec(1000.0, bound=True, waiting=3) for _ in range(10)]
    swings = [_rec(1060.0 if k % 2 == 0 else 960.0, bound=True, waiting=3) for k in range(20)]
    out = summarize([first] + steady + swings)
    assert out["max_budget_overshoot_interval_pct"] == pytest.approx(6.0)
    assert out["budget_overshoot_interval_pct"] == pytest.approx(100.0 * 10 / 30)
    # Highest window: 1000 + five at 1060 + four at 960 over ten intervals = 1014 W.
    assert out["max_budget_overshoot_pct"] == pytest.approx(1.4)
    assert out["budget_overshoot_pct"] == 0.0
    assert out["power_tracking_error_interval_pct"] == pytest.approx(20 * 5.0 / 26)
    assert out["power_tracking_error_pct"] <= 1.4


def test_tracking_error_is_small_under_a_binding_budget(scenario_parts):
    from pals.control.budget import PowerBudget
    from pals.runtime.load import LoadSpec
    from pals.runtime.scenario import run_scenario

    deployment, predictor, truth, max_tps = scenario_parts("Mixtral-8x7B")
    load = LoadSpec(rate_rps=1.3 * max_tps / CONV_MEAN_OUTPUT_TOKENS, seed=3)
    for name in ("pals", "baseline"):
        s = run_scenario(deployment, load, name, duration_s=60, target_tps=max_tps,
                         budget=PowerBudget(1300.0, "node"), predictor=predictor).summary
        assert s["power_tracking_intervals"] > 0
        # On the 5 s window mean (the QoS window): interval power swings +-4 % at a fixed cap.
        assert s["power_tracking_error_pct"] <= 3.0, (name, s)
        assert s["max_budget_overshoot_pct"] <= 2.0, (name, s)


def _peak_tolerance():
    from pals.control.policies import BudgetGuard

    return BudgetGuard.peak_tolerance_frac  # the caps may sum this far over the budget


PEAK_TOLERANCE = _peak_tolerance()
assert PEAK_TOLERANCE <= 0.10  # interval spikes stay bounded


@pytest.mark.parametrize("model, budget_w, lifts", [("Qwen1.5-MoE-A2.7B", 1650.0, True), ("Mixtral-8x7B", 1300.0, False)])
def test_budget_governor_lifts_the_cap_over_the_naive_share_without_overshoot(scenario_parts, model, budget_w, lifts):
    """The lift exists only where the GPUs draw under their caps. Since the recalibration Mixtral at
    batch 64 draws its cap up to ~350 W (346 W at 350 W): at a 1,300 W budget (naive share 227 W)
    there is nothing to lift, and the cap must not rise over the share. Qwen-MoE at TP 4 spends
    20-35 % of a step in collectives and draws under its caps above ~300 W (293 W at 300, 320 W at
    400): at 1,650 W (naive share 311 W) the governor lifts the cap over the share."""
    from pals.control.budget import PowerBudget
    from pals.runtime.load import LoadSpec
    from pals.runtime.scenario import run_scenario

    deployment, predictor, truth, max_tps = scenario_parts(model)
    load = LoadSpec(rate_rps=1.3 * max_tps / CONV_MEAN_OUTPUT_TOKENS, seed=3)
    for name in ("baseline", "pals"):
        result = run_scenario(deployment, load, name, duration_s=60, target_tps=max_tps,
                              budget=PowerBudget(budget_w, "node"), predictor=predictor)
        alpha, beta_w = predictor.syspower_.alpha, predictor.syspower_.beta_w
        naive_cap_w = (budget_w - beta_w) / alpha / 4
        caps = [r["decision"]["config"]["power_cap_w"] for r in result.records]
        power = np.array([r["measured"]["budget_power_w"] for r in result.records if r["sample"] is not None])
        # Lifted over the naive share where the GPUs draw under their caps, not where they draw them ...
        assert (caps[-1] > naive_cap_w + 2.0) is lifts, (name, caps[-1], naive_cap_w)
        # ... but never to caps that could sum over the budget's peak tolerance, which bounds every interval ...
        assert max(caps) <= ((1 + PEAK_TOLERANCE) * budget_w - beta_w) / alpha / 4 + 0.01, (name, max(caps))  # logged to 1 mW
        assert power.max() <= (1 + PEAK_TOLERANCE) * budget_w, (name, power.max())
        # ... and the 5 s mean stays within 2 % of the budget.
        assert result.summary["budget_overshoot_pct"] == 0.0
        assert result.summary["max_budget_overshoot_pct"] <= 2.0, result.summary


def test_budget_guard_integrates_only_when_binding_and_busy():
    from pals.control.budget import PowerBudget
    from pals.control.policies import BudgetGuard
    from pals.core.power import NodePowerModel
    from pals.control.types import DecisionContext, Observation

    budget = PowerBudget(1300.0, "node")

    def context(node_w, waiting=10, running=64, changed=False, cap_w=None):
        gpu_w = NodePowerModel().gpu_w(node_w)
        cap = guard.last_bound_w_ if cap_w is None else cap_w
        obs = Observation(time_s=1.0, interval_s=0.5, throughput_tps=100.0, prompt_tps=0.0, gpu_power_w=gpu_w,
                          node_power_w=node_w, node_power_reading_w=None, generated_tokens=50.0,
                          gpu_energy_j=gpu_w / 2, node_energy_j=node_w / 2, requests_waiting=waiting,
                          requests_running=running, power_cap_w=cap, batch_cap=64)
        return DecisionContext(CONSTRAINTS, Configuration(cap, 64), obs, budget, None, changed, 1)

    guard = BudgetGuard()
    naive = guard.cap_bound_w(context(1200.0, cap_w=400.0))
    for _ in range(20):  # binding, capacity-limited, 7 % under: the bound rises
        guard.update(context(1209.0))
        guard.cap_bound_w(context(1209.0))
    lifted = guard.last_bound_w_
    assert lifted > naive + 2.0
    assert lifted <= ((1 + PEAK_TOLERANCE) * 1300.0 - 345.0) / 1.05 / 4 + 1e-6  # the peak tolerance bounds the lift
    guard.update(context(1100.0, waiting=0, running=20))  # a lull: no wind-up
    assert guard.cap_bound_w(context(1100.0)) == pytest.approx(lifted)
    guard.update(context(1100.0, cap_w=200.0))  # not at the bound (another choice): no wind-up
    assert guard.cap_bound_w(context(1100.0)) == pytest.approx(lifted)
    # One interval 3 % over in a 5 s window that is under the budget: noise, not a reason to cut.
    guard.update(context(1339.0))
    assert guard.cap_bound_w(context(1339.0)) >= lifted - 1.0
    # The window mean crossing the budget (sustained +7 %): cut at once by the window's excess, once.
    before = guard.last_bound_w_
    bounds = []
    for _ in range(8):
        guard.update(context(1391.0))
        bounds.append(guard.cap_bound_w(context(1391.0)))
    assert guard.window_power_w() > 1300.0
    assert bounds[-1] < before - 4.0
    excess = guard.window_power_w() / 1300.0 - 1.0
    assert guard.trim_frac <= guard.over_base_frac_ + excess + guard.margin_frac + 1e-9  # no wind-up
    # A single interval far over the budget (> spike_frac): cut at once by its own excess.
    trim = guard.trim_frac
    guard.update(context(1300.0 * (1 + guard.spike_frac + 0.01)))
    assert guard.trim_frac >= trim + guard.spike_frac
    guard.update(context(1250.0, changed=True))  # a new budget: the lift is dropped
    assert guard.cap_bound_w(context(1250.0)) <= naive + 1e-6


def test_budget_guard_cuts_on_any_interval_over_while_the_window_is_young():
    from pals.control.budget import PowerBudget
    from pals.control.policies import BudgetGuard
    from pals.core.power import NodePowerModel
    from pals.control.types import DecisionContext, Observation

    budget = PowerBudget(1100.0, "node")
    guard = BudgetGuard()

    def context(node_w, changed=False):
        gpu_w = NodePowerModel().gpu_w(node_w)
        obs = Observation(time_s=1.0, interval_s=0.5, throughput_tps=100.0, prompt_tps=0.0, gpu_power_w=gpu_w,
                          node_power_w=node_w, node_power_reading_w=None, generated_tokens=50.0,
                          gpu_energy_j=gpu_w / 2, node_energy_j=node_w / 2, requests_waiting=10,
                          requests_running=64, power_cap_w=250.0, batch_cap=64)
        return DecisionContext(CONSTRAINTS, Configuration(250.0, 64), obs, budget, None, changed, 1)

    guard.update(context(1300.0, changed=True))  # the step down: the interval ran under the old budget
    first = guard.cap_bound_w(context(1300.0))
    guard.update(context(1111.0))  # 1 % over, right after the step: the window is young, cut at once
    assert guard.trim_frac >= 0.01 + guard.margin_frac - 1e-9
    assert guard.cap_bound_w(context(1111.0)) < first - 2.0


# -- 6: profiler drain ------------------------------------------------------------------------


def test_profiler_drains_the_queue_before_each_point(tmp_path):
    from pals.core.workload import WorkloadDescriptor
    from pals.model.profiler import ProfileGrid, drain_queue, measure_window, run_profile
    from pals.core.node import Actuation
    from pals.sim.node import SimNode, SimNodeSpec
    from pals.sim.workload import LengthDistribution, PoissonWorkload

    def node():
        workload = PoissonWorkload(6.0, LengthDistribution.fixed(1000), LengthDistribution.fixed(200), seed=2)
        return SimNode(SimNodeSpec("Mixtral-8x7B", "A100-SXM4-80GB"), workload, seed=2, initial=Actuation(400.0, 64))

    # A batch-1 point cannot keep up: a backlog builds.
    backlogged = node()
    backlogged.apply(Actuation(150.0, 1))
    backlogged.clock.wait_until(20.0)
    assert backlogged.sample().requests_waiting > 10
    backlogged.apply(Actuation(400.0, 64))
    waited = drain_queue(backlogged, backlogged.clock, 60.0)
    assert 0 < waited < 60.0 and backlogged.sample().requests_waiting <= 2
    # In a profile, the batch-64 point after batch 1 is measured on a drained node: it delivers what a
    # node that ran batch 64 all along delivers over the same window (same seed: the same arrivals).
    # At 400 W batch 64 carries the offered 1,200 tokens/s (at 150 W it no longer does since the
    # recalibration: that point stays backlogged and cannot drain).
    features = WorkloadDescriptor(1000.0, 200.0, 6.0)
    for drain_max_s, close in ((None, True), (0.0, False)):
        shared = node()
        profile = run_profile(shared, shared.clock, ProfileGrid((400.0,), (1, 64)), 5.0, 20.0, tmp_path / "a.csv",
                              resume=False, progress=False, workload=features, drain_max_s=drain_max_s)
        after = next(r for r in profile.rows if r["batch_cap"] == 64)
        steady = node()
        steady.clock.wait_until(shared.clock.now_s() - after["window_s"])
        window, _ = measure_window(steady, steady.clock, after["window_s"])
        # Without the drain the backlog inflates the window by 40-90 %.
        assert (after["throughput_tps"] == pytest.approx(window.throughput_tps, rel=0.03)) is close, (
            drain_max_s, after["throughput_tps"], window.throughput_tps)
