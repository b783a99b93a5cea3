"""Every user-file loader and every validated numeric field, fed garbage: a `PalsError` with one line
naming the file or the field (and its range), never a traceback of another type.

The per-module tests (tests/model/test_profile_io.py, test_predictor_file.py, tests/sim/test_llm.py,
test_workload.py, tests/control/test_budget.py) check the exact wording; this file sweeps the
cross product, so a new loader or field that forgets a case fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pals.control.budget import BudgetSchedule, BudgetStep, PowerBudget, ThroughputTarget
from pals.core.workload import WorkloadDescriptor
from pals.errors import PalsError
from pals.model.predictor import PowerPerfPredictor
from pals.model.profile import read_profile
from pals.model.syspower import SysPowerFit
from pals.sim.llm import LLM_PRESETS, LlmSpec, load_hf_config
from pals.sim.workload import LengthDistribution, PoissonWorkload, SaturatingWorkload, TraceWorkload, load_trace

LOADERS = {
    "profile": (read_profile, "p.csv"),
    "predictor": (PowerPerfPredictor.load, "m.pals"),
    "hf-config": (load_hf_config, "config.json"),
    "trace": (load_trace, "t.csv"),
    "schedule-csv": (BudgetSchedule.load, "s.csv"),
    "schedule-json": (BudgetSchedule.load, "s.json"),
}

GARBAGE_FILES = {
    "binary": bytes(range(256)) * 64,
    "nul-bytes": b"\x00" * 1000,
    "invalid-utf8": b"\xc3\x28\xa0\xa1" * 100,
    "empty": b"",
    "whitespace": b" \n\t\n",
    "nested-100k": b"[" * 100_000 + b"]" * 100_000,
    "nested-objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "long-integer": b"1" * 10_000,
    "json-scalar": b"true",
    "csv-one-field": b"x\n1\n",
    "long-line": b"a," * 200_000 + b"\n",
    "pickle": b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04open\x94\x93\x94.",
}


def _one_line_error(call, path: Path) -> str:
    with pytest.raises(PalsError) as info:
        call(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    assert len(message) < 400, message
    return message


@pytest.mark.parametrize("garbage", list(GARBAGE_FILES))
@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_loader_refuses_garbage_files_in_one_line(tmp_path, loader, garbage):
    call, name = LOADERS[loader]
    path = tmp_path / name
    path.write_bytes(GARBAGE_FILES[garbage])
    _one_line_error(call, path)


@pytest.mark.parametrize("loader", list(LOADERS))
def test_every_loader_refuses_a_directory_and_a_missing_file(tmp_path, loader):
    call, name = LOADERS[loader]
    directory = tmp_path / name
    directory.mkdir()
    if loader != "hf-config":  # a directory is where a config.json is looked for
        _one_line_error(call, directory)
    _one_line_error(call, tmp_path / "missing" / name)


# -- numeric fields ----------------------------------------------------------------------------------

BAD_VALUES = {
    "zero": 0,
    "negative": -1,
    "negative-float": -0.5,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "huge-float": 1e308,
    "huge-int": 10**400,
    "tiny": 1e-300,
    "string": "12",
    "bool": True,
    "none": None,
    "list": [1],
}

MIXTRAL = LLM_PRESETS["Mixtral-8x7B"]
SPEC_FIELDS = dict(name="x", num_layers=4, hidden_size=64, num_heads=4, num_kv_heads=4, head_dim=16, vocab_size=100,
                   num_experts=8, top_k=2, expert_ffn_size=128, ffn_size=128)
ONE = LengthDistribution.fixed(1)

FIELDS = {
    # field name in the message -> (constructor taking the value, values that are in range)
    "budget_w": (lambda v: PowerBudget(v), {}),
    "target_tps": (lambda v: ThroughputTarget(v), {}),
    "time_s": (lambda v: BudgetStep(v, 900.0), {"zero", "tiny"}),
    "Poisson rate_rps": (lambda v: PoissonWorkload(v, ONE, ONE), {}),
    "Poisson duration_s": (lambda v: PoissonWorkload(1.0, ONE, ONE, duration_s=v), {"zero", "tiny", "none"}),
    "seed": (lambda v: PoissonWorkload(1.0, ONE, ONE, seed=v), {"zero"}),
    "trace rate_scale": (lambda v: TraceWorkload([0.0, 1.0], [1, 1], [1, 1], rate_scale=v), {}),
    "fixed length": (lambda v: LengthDistribution.fixed(v), {}),
    "lognormal mean length": (lambda v: LengthDistribution.lognormal(v), {}),
    "lognormal cv": (lambda v: LengthDistribution.lognormal(100, v), {"zero", "tiny"}),
    "min_waiting": (lambda v: SaturatingWorkload(ONE, ONE, min_waiting=v), {"none"}),
    "num_experts": (lambda v: LlmSpec(**dict(SPEC_FIELDS, num_experts=v)), {"zero"}),  # 0: a dense model
    "hidden_size": (lambda v: LlmSpec(**dict(SPEC_FIELDS, hidden_size=v)), {}),
    "num_layers": (lambda v: LlmSpec(**dict(SPEC_FIELDS, num_layers=v)), {}),
    "alpha": (lambda v: SysPowerFit(alpha=v), {"zero", "negative", "negative-float", "tiny"}),
    "mean_prompt_tokens": (lambda v: WorkloadDescriptor(v, 100.0), {"tiny", "huge-float"}),
}


@pytest.mark.parametrize("value", list(BAD_VALUES))
@pytest.mark.parametrize("field", list(FIELDS))
def test_every_numeric_field_refuses_garbage_naming_itself(field, value):
    build, accepted = FIELDS[field]
    if value in accepted:
        build(BAD_VALUES[value])  # in range for this field: must simply work
        return
    with pytest.raises(PalsError) as info:
        build(BAD_VALUES[value])
    message = str(info.value)
    assert field in message and "\n" not in message and len(message) < 300, message


@pytest.mark.parametrize("field", [f for f in FIELDS if f not in ("alpha", "mean_prompt_tokens", "seed")])
def test_range_errors_state_the_limit(field):
    build, _ = FIELDS[field]
    with pytest.raises(PalsError) as info:
        build(1e308 if field not in ("num_experts", "hidden_size", "num_layers", "min_waiting") else 10**12)
    assert " from " in str(info.value) and " to " in str(info.value)


def test_a_json_true_is_never_a_number(tmp_path):
    """JSON `true` was taken as 1 W; every JSON loader must refuse it where a number belongs."""
    schedule = tmp_path / "s.json"
    schedule.write_text(json.dumps([{"time_s": 0, "budget_w": True}]))
    assert "budget_w must be a number" in _one_line_error(BudgetSchedule.load, schedule)
    config = tmp_path / "config.json"
    cfg = {"model_type": "mixtral", "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
           "num_hidden_layers": True, "num_local_experts": 8, "num_experts_per_tok": 2,
           "intermediate_size": 14336, "vocab_size": 32000}
    config.write_text(json.dumps(cfg))
    assert "num_hidden_layers" in _one_line_error(load_hf_config, config)
