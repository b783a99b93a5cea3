"""Physics files: what `pals calibrate` writes and `load_physics` reads back for a GPU."""

import json

import pytest

from pals.errors import ConfigError
from pals.sim.hardware import get_gpu
from pals.sim.physics import PhysicsParams, load_physics, physics_file_text, read_physics_file
from pals.sim.step import StepModel, StepShape
from pals.sim.llm import get_llm


def test_round_trip_applies_the_overrides_to_the_gpu_preset(tmp_path):
    path = tmp_path / "physics.json"
    path.write_text(physics_file_text("H100-SXM", {"mem_sm_activity": 0.5, "kernel_floor_s": 6e-6}, {"cost": 1.0}))
    params = load_physics(path, "h100-sxm")
    h100 = get_gpu("H100-SXM")
    assert params.mem_sm_activity == 0.5 and params.kernel_floor_s == 6e-6
    assert params.hbm_power_frac_tdp == h100.physics.hbm_power_frac_tdp  # the rest is the preset's
    assert load_physics(path) == params  # the file names its GPU
    # What a StepModel / SimNodeSpec takes: a calibrated set changes the step's power.
    shape = StepShape(32, 32 * 1000, 0, 0)
    llm = get_llm("Llama-2-7B")
    assert StepModel(llm, h100, params=params).cost(shape, 700).gpu_power_w != \
        StepModel(llm, h100).cost(shape, 700).gpu_power_w


def test_a_file_for_another_gpu_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "physics.json"
    path.write_text(physics_file_text("H100-SXM", {"mem_sm_activity": 0.5}))
    with pytest.raises(ConfigError) as info:
        load_physics(path, "A100-SXM4-80GB")
    assert "fitted for H100-SXM, not A100-SXM4-80GB" in str(info.value) and "--gpu H100-SXM" in str(info.value)


@pytest.mark.parametrize("content, fragment", [
    ("{", "not valid JSON"),
    ('{"format": "other"}', "not a PALS physics file"),
    ('{"format": "pals-physics", "version": 9, "gpu": "H200"}', "version 9"),
    ('{"format": "pals-physics", "version": 1}', 'names no "gpu"'),
    ('{"format": "pals-physics", "version": 1, "gpu": "H200", "params": {"floor": 1}}', "unknown physics parameter(s) floor"),
    ('{"format": "pals-physics", "version": 1, "gpu": "H200", "params": {"eta_memory": 2}}', "eta_memory"),
])
def test_bad_physics_files_get_one_line(tmp_path, content, fragment):
    path = tmp_path / "physics.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        read_physics_file(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist; write it with `pals calibrate"):
        load_physics("/nonexistent/physics.json")


def test_defaults_are_the_a100_fit():
    a100 = get_gpu("A100-SXM4-80GB").physics
    defaults = PhysicsParams()
    for name in ("sm_power_frac_tdp", "busy_floor_frac_tdp", "hbm_power_frac_tdp", "mem_sm_activity",
                 "voltage_floor", "voltage_knee"):
        assert getattr(defaults, name) == getattr(a100, name), name
    with pytest.raises(ConfigError, match="fractions of TDP"):
        PhysicsParams(busy_floor_frac_tdp=1.5)
    json.dumps(defaults.to_dict())  # serialisable
