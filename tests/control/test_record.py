"""The typed per-interval record: JSON round trip, the decisions.jsonl schema, and its readers."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json

from types import SimpleNamespace

import numpy as np
import pytest

from pals.control.budget import PowerBudget, ThroughputTarget
from pals.control.decision_log import DecisionLog
from pals.control.loop import ControlLoop
from pals.control.metrics import ControllerMetrics
from pals.control.policies import Baseline, make_policy
from pals.control.record import IntervalRecord, IntervalSample, Measured, Prediction
from pals.control.summary import summarize
from pals.control.types import Configuration, Decision
from pals.core.io import dumps_json
from pals.core.power import NodePowerModel
from pals.errors import ConfigError
from pals.sim.node import SimNode, SimNodeSpec
from pals.sim.workload import LengthDistribution, PoissonWorkload


class _Table:
    """A synthetic predictor (throughput and GPU power rising with cap and batch), enough for the
    model-guided policy to select, hold and write its `extra` figures."""

    caps_ = np.array((150.0, 200.0, 250.0, 300.0, 350.0, 400.0))
    batches_ = np.array((1, 4, 8, 16, 32, 64))

    def predict_candidates(self, power_cap_w, batch_cap, workload=None):
        cap, batch = np.asarray(power_cap_w, float), np.asarray(batch_cap, float)
        natural_w = 4 * (80 + 30 * batch ** 0.8)
        gpu_w = np.minimum(natural_w, 4 * cap)
        thr = 60 * batch ** 0.85 * (gpu_w / natural_w) ** 0.6
        node_w = NodePowerModel().node_w(gpu_w)
        return SimpleNamespace(throughput_tps=thr, gpu_power_total_w=gpu_w, node_power_w=node_w,
                               tokens_per_joule=thr / node_w)


def _run(path, policy, seconds_per_budget=4.0):
    """A short run under a budget that steps down (so the governor trims) and a target."""
    workload = PoissonWorkload(6.0, LengthDistribution.fixed(300), LengthDistribution.fixed(100), seed=2)
    node = SimNode(SimNodeSpec("Qwen1.5-MoE-A2.7B", "A100-SXM4-80GB"), workload, seed=2)
    loop = ControlLoop(node, policy, node.clock, decision_log=path,
                       budget=PowerBudget(1400.0), target=ThroughputTarget(300.0))
    loop.run(duration_s=seconds_per_budget)
    loop.set_budget(PowerBudget(900.0, "gpu"))
    loop.run(duration_s=seconds_per_budget)
    loop.close()
    return loop


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """Baseline's run (`_run`): the log file and the loop."""
    path = tmp_path_factory.mktemp("record") / "d.jsonl"
    return path, _run(path, Baseline())


# -- a checker for the subset of JSON Schema the decisions schema uses (jsonschema is not a dependency) --


def _type_ok(value, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "array":
        return isinstance(value, list)
    if name == "object":
        return isinstance(value, dict)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return name == "number" or isinstance(value, int) or float(value).is_integer()


def _errors(value, schema, root, path="$") -> list[str]:
    """Violations of `schema` by `value` (subset: type, enum, minimum, exclusiveMinimum, required,
    properties, additionalProperties, maxProperties, items, $ref, oneOf, if/then/else, boolean schemas)."""
    if schema is True:
        return []
    if schema is False:
        return [f"{path}: not allowed"]
    if "$ref" in schema:
        ref = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            ref = ref[part]
        return _errors(value, ref, root, path)
    out: list[str] = []
    types = schema.get("type")
    if types is not None and not any(_type_ok(value, t) for t in ([types] if isinstance(types, str) else types)):
        return [f"{path}: {value!r} is not of type {types}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in {schema['enum']}")
    if _type_ok(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: {value} < {schema['minimum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(f"{path}: {value} <= {schema['exclusiveMinimum']}")
    if isinstance(value, dict):
        out += [f"{path}: missing {key!r}" for key in schema.get("required", ()) if key not in value]
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            out.append(f"{path}: more than {schema['maxProperties']} keys")
        props = schema.get("properties", {})
        for key, item in value.items():
            sub = props.get(key, schema.get("additionalProperties", True))
            out += _errors(item, sub, root, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += _errors(item, schema["items"], root, f"{path}[{i}]")
    if "oneOf" in schema:
        passing = sum(not _errors(value, sub, root, path) for sub in schema["oneOf"])
        if passing != 1:
            out.append(f"{path}: matches {passing} of oneOf, not exactly one")
    if "if" in schema:
        branch = schema.get("then" if not _errors(value, schema["if"], root, path) else "else", True)
        out += _errors(value, branch, root, path)
    return out


def _schema() -> dict:
    return json.loads(importlib.resources.files("pals").joinpath("data/decisions.schema.json").read_text())


# -- tests ---------------------------------------------------------------------------------------


def test_every_logged_line_matches_the_schema(logged):
    path, _ = logged
    schema = _schema()
    lines = DecisionLog.read(path)
    assert len(lines) >= 17
    for line in lines:
        assert _errors(line, schema, schema) == [], line["interval"]
    # The run exercised both shapes: the first line has no measurement, nor has the second run's
    # first (at the same instant as the first run's last: nothing to rate); the others have one.
    assert [line["interval"] for line in lines if "measured" not in line] == [0, 9]


def test_the_model_guided_policys_lines_match_the_schema_and_read_back(tmp_path):
    path = tmp_path / "d.jsonl"
    loop = _run(path, make_policy("pals", predictor=_Table()))
    schema = _schema()
    lines = DecisionLog.read(path)
    for line in lines:
        assert _errors(line, schema, schema) == [], line["interval"]
    assert any(line["decision"]["extra"].get("power_bias_w") is not None for line in lines)
    assert any(line["predicted"] for line in lines[1:])
    assert DecisionLog.read_records(path) == loop.log.records()


def test_the_checker_rejects_what_the_schema_forbids(logged):
    path, _ = logged
    schema = _schema()
    first, second = DecisionLog.read(path)[:2]
    assert _errors({k: v for k, v in second.items() if k != "measured"}, schema, schema)
    assert _errors(dict(first, measured=second["measured"]), schema, schema)
    assert _errors(dict(second, surprise=1), schema, schema)
    assert _errors(dict(second, budget={"budget_w": 5, "kind": "rack"}), schema, schema)
    assert _errors(dict(second, interval=1.5), schema, schema)


def test_lines_read_back_write_the_same_bytes_and_equal_the_live_records(logged):
    path, loop = logged
    with path.open(encoding="utf-8") as handle:
        text_lines = [line.rstrip("\n") for line in handle]
    typed = DecisionLog.read_records(path)
    for text, record in zip(text_lines, typed):
        assert dumps_json(record.to_json(), separators=(",", ":")) == text
    assert typed == loop.log.records()
    assert [r.to_json() for r in typed] == loop.log.recent()


def test_summary_is_the_same_from_typed_records_and_from_log_lines(logged):
    path, loop = logged
    from_lines = summarize(DecisionLog.read(path))
    from_records = summarize(loop.log.records())
    assert json.dumps(from_lines) == json.dumps(from_records)
    # The summary counts changes after the initial configuration (record 0 sets it).
    later = loop.log.records()[1:]
    assert from_records["governor_trims"] == sum(r.config_changed and r.governor_trim for r in later) > 0


def test_round_trip_of_a_hand_built_record():
    decision = Decision(Configuration(250.123456, 32), "why", predicted_throughput_tps=1234.567891,
                        predicted_gpu_power_w=900.0, extra={"pid_margin": 0.01}).as_logged()
    record = IntervalRecord(
        t_s=1.5, time_s=101.5, interval=3, interval_s=0.5, policy="pals",
        sample=IntervalSample(100.0, 800.5, 1185.0, 2, 16, 250.0, 32, mean_prompt_tokens=300.0),
        budget=PowerBudget(1200), target=None, decision=decision, config_changed=True, governor_trim=False,
        at_max_config=False, decide_ms=0.25, warnings=("w",),
        predicted=Prediction(1234.567891, 900.0, None),
        measured=Measured(100.0, 800.5, 1185.0, 1185.0, 98.5), capacity_limited=True, qos_violation=True,
    )
    data = record.to_json()
    assert data["decision"]["config"] == {"power_cap_w": 250.123, "batch_cap": 32}
    assert data["decision"]["predicted_throughput_tps"] == 1234.5679
    assert data["budget"] == {"budget_w": 1200, "kind": "node"}
    assert "mean_output_tokens" not in data["sample"]
    assert IntervalRecord.from_json(json.loads(json.dumps(data))) == record
    first = dataclasses.replace(record, sample=None, predicted=None, measured=None, capacity_limited=None,
                                qos_violation=False)
    assert not {"predicted", "measured", "capacity_limited", "qos_violation"} & set(first.to_json())
    assert IntervalRecord.from_json(first.to_json()) == first


def test_non_finite_numbers_are_written_as_null():
    decision = Decision(Configuration(250.0, 32), "why", extra={"x": float("nan")})
    record = IntervalRecord(t_s=0.0, time_s=0.0, interval=0, interval_s=0.0, policy="p", sample=None,
                            budget=None, target=None, decision=decision, config_changed=False,
                            governor_trim=False, at_max_config=True, decide_ms=float("inf"))
    data = record.to_json()
    assert data["decide_ms"] is None and data["decision"]["extra"] == {"x": None}
    assert "NaN" not in dumps_json(data)


def test_a_malformed_line_names_the_missing_key():
    with pytest.raises(ConfigError, match="'t_s'"):
        IntervalRecord.from_json({"interval": 0})
    with pytest.raises(ConfigError, match="config"):
        Decision.from_json({"reason": "x"})


def test_metrics_count_governor_trims_apart_from_configuration_changes(logged):
    _, loop = logged
    metrics = ControllerMetrics()
    records = loop.log.records()
    for record in records:
        metrics.update(record)
    # As the summary counts them: the first record applies the initial configuration, not a change.
    trims = sum(r.config_changed and r.governor_trim for r in records[1:])
    changes = sum(r.config_changed and not r.governor_trim for r in records[1:])
    assert trims > 0  # the budget step made the governor move the cap
    assert metrics.sample_value("pals_governor_trims_total") == trims
    assert metrics.sample_value("pals_config_changes_total") == changes
    summary = loop.summary()
    assert (summary["config_changes"], summary["governor_trims"]) == (changes, trims)


def test_status_reads_the_last_record(logged):
    _, loop = logged
    status = loop.status()
    last = loop.log.recent(1)[0]
    assert status["configuration"] == last["decision"]["config"]
    assert status["last_sample"] == last["sample"]
    assert status["time_s"] == last["time_s"] and status["reason"] == last["decision"]["reason"]
