"""The loop over a simulated node, the decision log, and the HTTP endpoint."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pals.control.budget import PowerBudget, ThroughputTarget
from pals.control.decision_log import DecisionLog
from pals.control.endpoint import Endpoint
from pals.control.loop import ControlLoop
from pals.control.policies import Baseline
from pals.sim.node import SimNode, SimNodeSpec
from pals.sim.workload import LengthDistribution, PoissonWorkload


def make_loop(tmp_path, policy=None, **kwargs):
    workload = PoissonWorkload(4.0, LengthDistribution.fixed(300), LengthDistribution.fixed(100), seed=1)
    node = SimNode(SimNodeSpec("Qwen1.5-MoE-A2.7B", "A100-SXM4-80GB"), workload, seed=1)
    return ControlLoop(node, policy or Baseline(), node.clock, decision_log=tmp_path / "d.jsonl", **kwargs)


def test_loop_runs_logs_one_line_per_interval_and_summarises(tmp_path):
    loop = make_loop(tmp_path, target=ThroughputTarget(300.0), budget=PowerBudget(1200.0))
    loop.run(duration_s=10.0)
    loop.close()
    records = DecisionLog.read(tmp_path / "d.jsonl")
    assert len(records) == 21  # the initial decision plus 20 observed intervals
    assert [r["interval"] for r in records] == list(range(21))
    assert records[0]["sample"] is None
    second = records[1]
    for key in ("t_s", "sample", "budget", "target", "decision", "predicted", "measured", "qos_violation", "decide_ms"):
        assert key in second
    assert second["decision"]["config"]["power_cap_w"] < 400  # clamped under the 1200 W node budget
    assert records[-1]["t_s"] == pytest.approx(10.0)
    summary = loop.summary()
    assert summary["intervals"] == 20 and summary["duration_s"] == pytest.approx(10.0)
    assert summary["throughput_tps"] > 0 and summary["tokens_per_joule"] > 0
    # Telemetry-based energy agrees with the simulator's ground truth (GPU energy is exact counters).
    truth_j = loop.node.energy_j_total()
    first_j = 0.0  # energy counters start at zero with the node
    assert summary["gpu_energy_j"] == pytest.approx(truth_j - first_j, rel=0.02)


def test_set_budget_is_applied_at_the_next_step(tmp_path):
    loop = make_loop(tmp_path)
    loop.step()
    assert loop.step().to_json()["decision"]["config"]["power_cap_w"] == 400
    loop.set_budget(PowerBudget(800.0, "gpu"))
    record = loop.step().to_json()
    assert record["budget"] == {"budget_w": 800.0, "kind": "gpu"}
    assert record["decision"]["config"]["power_cap_w"] <= 200.0
    assert record["config_changed"]


@pytest.fixture()
def served(tmp_path):
    loop = make_loop(tmp_path, target=ThroughputTarget(200.0))
    for _ in range(3):
        loop.step()
        loop.clock.wait_until(loop.clock.now_s() + 0.5)
    endpoint = Endpoint(loop, port=0).start()
    try:
        yield loop, endpoint
    finally:
        endpoint.stop()
        loop.close()


def call(endpoint, method, path, body=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {} if data is None else {"Content-Type": "application/json"}
    request = urllib.request.Request(endpoint.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read()


def test_endpoint_status_decisions_metrics(served):
    loop, endpoint = served
    assert endpoint.host == "127.0.0.1"
    status, _, body = call(endpoint, "GET", "/status")
    data = json.loads(body)
    assert status == 200 and data["policy"] == "baseline"
    assert data["configuration"] == {"power_cap_w": 400.0, "batch_cap": 64}
    assert data["target"] == {"target_tps": 200.0} and data["budget"] is None
    assert "last_sample" in data and "warnings" in data
    status, _, body = call(endpoint, "GET", "/decisions?n=2")
    assert status == 200 and [r["interval"] for r in json.loads(body)] == [1, 2]
    status, ctype, body = call(endpoint, "GET", "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            assert (s.labels["node"], s.labels["policy"]) == (loop.metrics.node, "baseline"), s
            samples[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("node", "policy"))))] = s.value
    gpus = loop.constraints.num_gpus
    assert [samples[("pals_gpu_power_cap_watts", (("gpu", str(i)),))] for i in range(gpus)] == [400.0] * gpus
    assert samples[("pals_batch_cap", ())] == 64.0
    assert samples[("pals_throughput_target_tokens_per_second", ())] == 200.0
    for name in ("pals_gpu_power_watts", "pals_node_power_watts", "pals_throughput_tokens_per_second",
                 "pals_tokens_per_joule", "pals_qos_violations_total", "pals_requests_running"):
        assert (name, ()) in samples, name
    assert ("pals_power_budget_watts", (("kind", "node"),)) in samples


def test_endpoint_changes_budget_and_target(served):
    loop, endpoint = served
    status, _, body = call(endpoint, "PUT", "/budget", {"budget_w": 900, "kind": "gpu"})
    assert status == 200 and json.loads(body)["budget"] == {"budget_w": 900.0, "kind": "gpu"}
    assert loop.budget == PowerBudget(900.0, "gpu")
    status, _, _ = call(endpoint, "PUT", "/target", {"target_tps": 350})
    assert status == 200 and loop.target == ThroughputTarget(350.0)
    record = loop.step().to_json()
    assert record["decision"]["config"]["power_cap_w"] <= 225.0
    status, _, _ = call(endpoint, "PUT", "/budget", {"budget_w": None})
    assert status == 200 and loop.budget is None


@pytest.mark.parametrize(
    "method, path, body, code, words",
    [
        ("PUT", "/budget", b"{not json", 400, "not valid JSON"),
        ("PUT", "/budget", {"kind": "gpu"}, 400, "missing field"),
        ("PUT", "/budget", {"budget_w": -5}, 400, "positive"),
        ("PUT", "/budget", {"budget_w": "lots"}, 400, "number"),
        ("PUT", "/budget", {"budget_w": 900, "kind": "rack"}, 400, "'node' or 'gpu'"),
        ("PUT", "/budget", [900], 400, "JSON object"),
        ("PUT", "/target", {"target_tps": 0}, 400, "positive"),
        ("PUT", "/target", {"target_tps": 100, "extra": 1}, 400, "unknown field"),
        ("PUT", "/target", None, 400, "empty body"),
        ("GET", "/decisions?n=abc", None, 400, "integer"),
        ("GET", "/decisions?n=0", None, 400, "between"),
        ("GET", "/nowhere", None, 404, "no route"),
        ("POST", "/status", {}, 405, "not allowed"),
    ],
)
def test_endpoint_rejects_malformed_requests_with_json_4xx(served, method, path, body, code, words):
    loop, endpoint = served
    before = (loop.budget, loop.target)
    status, ctype, payload = call(endpoint, method, path, body)
    assert status == code
    assert ctype == "application/json"
    assert words in json.loads(payload)["error"]
    assert (loop.budget, loop.target) == before


def test_restart_summary_scores_only_the_intervals_after_it(tmp_path):
    """An experiment's warm-up under control: the summary covers what follows the restart, equal to
    summarising those records alone."""
    from pals.control.summary import summarize

    loop = make_loop(tmp_path, target=ThroughputTarget(300.0))
    loop.run(duration_s=5.0)
    loop.restart_summary()
    loop.run(duration_s=5.0)
    loop.close()
    records = DecisionLog.read(tmp_path / "d.jsonl")
    after = [r for r in records if r["t_s"] > 5.0 + 1e-9]
    summary = loop.summary()
    assert summary["intervals"] == len(after) == 10
    expected = summarize(after)
    for key in ("generated_tokens", "energy_j", "qos_violation_pct", "config_changes"):
        assert summary[key] == pytest.approx(expected[key]), key
    assert summary["generated_tokens"] < summarize(records)["generated_tokens"]
