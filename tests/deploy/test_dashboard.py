"""The Grafana dashboard (`deploy/grafana/pals.json`) and the rules name only documented metrics,
and the metrics documented as existing are exported by a running controller today."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from promql_names import documented_metrics, metric_names, template_query_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "pals.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RULES = ROOT / "deploy" / "prometheus" / "pals-rules.yml"


def _panels(panels):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows hold their panels


@pytest.fixture(scope="module")
def dashboard():
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def documented():
    return documented_metrics(METRICS_DOC)


def test_tokenizer_finds_metric_names_and_nothing_else():
    expr = ('sum by (node) (rate(pals_generated_tokens_total{node=~"$node", policy="a b"}[$__rate_interval]))'
            ' / on(node) group_left(policy) sum without(kind) (pals_node_energy_joules_total offset 5m)'
            ' > bool 0.5e3 and up == 1 or time() - pals_last_sample_timestamp_seconds > 30')
    assert metric_names(expr) == {"pals_generated_tokens_total", "pals_node_energy_joules_total", "up",
                                  "pals_last_sample_timestamp_seconds"}
    assert metric_names('label_replace(node:pals_x:avg5m, "slo", "ttft", "", "")') == {"node:pals_x:avg5m"}
    assert metric_names("max_over_time(pals_a[6h:1m]) - last_over_time(pals_b[6h])") == {"pals_a", "pals_b"}
    assert template_query_names('label_values(pals_node_power_watts{node=~"$node"}, policy)') == {"pals_node_power_watts"}
    with pytest.raises(ValueError):
        metric_names("pals_a{node=")


def test_metric_table_is_well_formed(documented):
    assert len(documented) >= 40
    for row in documented.values():
        assert row.type in {"gauge", "counter"}, row
        assert row.status in {"exists", "planned", "prometheus"}, row
        assert row.meaning, row
        # Prometheus conventions: counters end in _total; a unit suffix where there is a unit.
        assert (row.type == "counter") == row.name.endswith("_total"), row.name
        if row.unit == "W":
            assert row.name.endswith("_watts"), row.name
        if row.unit == "J":
            assert row.name.endswith("_joules_total"), row.name
        if row.unit == "s" or row.unit.startswith("s ("):
            assert row.name.endswith("_seconds"), row.name
        if row.unit == "tokens/s":
            assert row.name.endswith("_tokens_per_second"), row.name
        if row.name.startswith("pals_coordinator_node_") or row.name.startswith("pals_coordinator_reconciliations"):
            assert "node" in row.labels, row.name


def test_dashboard_shape(dashboard):
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"datasource", "node", "policy"} <= set(variables)
    assert variables["node"]["multi"] and variables["policy"]["multi"]
    panels = [p for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    assert len(panels) >= 12
    ids = [p["id"] for p in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert panel["title"] and panel.get("description"), panel["id"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"panel {panel['title']!r} has no unit"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["legendFormat"], panel["title"]


def test_every_dashboard_query_names_only_documented_metrics(dashboard, documented):
    used: dict[str, set[str]] = {}
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            for name in metric_names(target["expr"]):
                used.setdefault(name, set()).add(panel["title"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            for name in template_query_names(query):
                used.setdefault(name, set()).add(f"variable ${variable['name']}")
    unknown = {name: sorted(where) for name, where in used.items() if name not in documented}
    assert not unknown, f"not in docs/metrics.md: {unknown}"
    # The views the issue asks for are all there.
    for needed in ("pals_node_power_watts", "pals_power_budget_watts", "pals_throughput_tokens_per_second",
                   "pals_throughput_target_tokens_per_second", "pals_gpu_power_cap_watts", "pals_batch_cap",
                   "pals_generated_tokens_total", "pals_node_energy_joules_total", "pals_ttft_seconds",
                   "pals_tpot_seconds", "pals_coordinator_cluster_budget_watts", "pals_coordinator_node_budget_watts"):
        assert needed in used, f"the dashboard shows no {needed}"


def test_every_rule_reads_documented_or_recorded_metrics(documented):
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    recorded = {rule["record"] for rule in rules if "record" in rule}
    for rule in rules:
        unknown = metric_names(rule["expr"]) - set(documented) - recorded
        assert not unknown, f"{rule.get('alert') or rule.get('record')} reads undocumented {sorted(unknown)}"


def _sample_names(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for family in text_string_to_metric_families(text) for s in family.samples
            if not s.name.endswith("_created")}


@pytest.fixture(scope="module")
def agent_names():
    """Sample names a real controller's registry exports after a few intervals on the simulated node."""
    from pals.control.budget import PowerBudget
    from pals.runtime.builder import ControlSettings, build_controller
    from pals.runtime.deployment import Deployment
    from pals.runtime.load import LoadSpec, UniformLengths, make_workload
    from pals.sim.node import SimNode

    node = SimNode(Deployment("GPT-2", tp=1).sim_spec(),
                   make_workload(LoadSpec(saturate=True, lengths=UniformLengths((10, 20), (5, 10)))))
    settings = ControlSettings("baseline", budget=PowerBudget(800.0), target_tps=100.0)
    controller = build_controller(node, settings)
    try:
        controller.run(duration_s=2.0)
    finally:
        controller.close()
    assert len(controller.loop.log.recent()) >= 3
    return _sample_names(controller.loop.metrics.exposition().decode())


@pytest.fixture(scope="module")
def coordinator_names():
    """Sample names the coordinator's registry (`pals coordinate --metrics-port`) exports after two rounds
    over a simulated node behind its real endpoint."""
    from pals.cluster.client import HttpNodeClient
    from pals.cluster.coordinator import Coordinator
    from pals.cluster.metrics import CoordinatorMetrics
    from pals.control.endpoint import Endpoint
    from pals.control.loop import ControlLoop
    from pals.control.policies import make_policy
    from pals.sim.node import SimNode, SimNodeSpec
    from pals.sim.workload import LengthDistribution, PoissonWorkload

    workload = PoissonWorkload(20.0, LengthDistribution.fixed(500), LengthDistribution.fixed(100), seed=4)
    node = SimNode(SimNodeSpec("OLMoE-1B-7B", "A100-SXM4-80GB", tp=4), workload, seed=4)
    loop = ControlLoop(node, make_policy("baseline"), node.clock, interval_s=0.5)
    for t in (0.5, 1.0):
        node.clock.wait_until(t)
        loop.step()
    with Endpoint(loop, port=0) as endpoint:
        coordinator = Coordinator([HttpNodeClient(endpoint.url, name="a")], cluster_budget_w=3000.0,
                                  targets_tps={"a": 500.0})
        metrics = CoordinatorMetrics(3000.0, nodes=["a"])
        for _ in range(2):
            metrics.update(coordinator.step(), coordinator.targets_tps)
    return _sample_names(metrics.exposition().decode())


@pytest.fixture(scope="module")
def exported_names(agent_names, coordinator_names):
    """Everything PALS exports: the node agent's and the coordinator's registries."""
    return agent_names | coordinator_names


def test_metrics_documented_as_existing_are_exported(documented, exported_names):
    exists = {name for name, row in documented.items() if row.status == "exists"}
    missing = sorted(exists - exported_names)
    assert not missing, f"docs/metrics.md says these exist but neither the agent nor the coordinator exports them: {missing}"


def test_every_exported_metric_is_documented_with_its_status(documented, exported_names):
    undocumented = sorted(exported_names - set(documented))
    assert not undocumented, f"exported but not in docs/metrics.md: {undocumented}"
    flip = sorted(name for name in exported_names if documented[name].status != "exists")
    assert not flip, f"exported now: mark them 'exists' in docs/metrics.md: {flip}"


def test_each_registry_exports_only_its_own_prefix(agent_names, coordinator_names):
    assert coordinator_names and all(n.startswith("pals_coordinator_") for n in coordinator_names)
    assert agent_names and not any(n.startswith("pals_coordinator_") for n in agent_names)
