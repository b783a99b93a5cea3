"""GPU presets as data: the built-in JSON files, validation on load, user presets, and the clock grid."""

import json
from pathlib import Path

import pytest

from pals.errors import ConfigError
from pals.sim.hardware import GPU_PRESETS, PRESETS_DIR_ENV, GpuSpec, get_gpu, load_gpu_file
from pals.sim.physics import PhysicsParams

PRESET_DIR = Path(__file__).resolve().parents[2] / "src" / "pals" / "data" / "gpus"


def test_presets_cover_the_five_gpus():
    assert set(GPU_PRESETS) == {"A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM", "H200", "L40S"}
    for key, spec in GPU_PRESETS.items():
        assert spec.name == key


def test_lookup_is_case_insensitive():
    assert get_gpu("a100-sxm4-80gb") is GPU_PRESETS["A100-SXM4-80GB"]
    assert get_gpu("  h200 ") is GPU_PRESETS["H200"]


def test_unknown_gpu_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        get_gpu("B200")
    message = str(info.value)
    assert "B200" in message and "\n" not in message and PRESETS_DIR_ENV in message
    for key in GPU_PRESETS:
        assert key in message


def test_a100_matches_paper_and_nvml_dumps():
    a100 = get_gpu("A100-SXM4-80GB")
    # PALS section 3.1: caps settable in 100-400 W; nvidia-smi dumps: max SM clock 1410 MHz.
    assert (a100.power_limit_min_w, a100.power_limit_max_w, a100.tdp_w) == (100.0, 400.0, 400.0)
    assert a100.max_sm_clock_mhz == 1410.0
    assert a100.peak_bf16_flops == pytest.approx(312e12)
    assert a100.memory_bytes == 81920 * 1024**2


def test_vllm_defaults_follow_the_engine_rule():
    """vLLM's API server: 8192 tokens / 1024 sequences on >= 70 GiB GPUs other than A100, else 2048 / 256."""
    for name, budget, seqs in (("A100-SXM4-80GB", 2048, 256), ("H100-SXM", 8192, 1024), ("H200", 8192, 1024),
                               ("L40S", 2048, 256)):
        spec = get_gpu(name)
        assert (spec.vllm_max_num_batched_tokens, spec.vllm_max_num_seqs) == (budget, seqs)


@pytest.mark.parametrize("spec", list(GPU_PRESETS.values()), ids=list(GPU_PRESETS))
def test_preset_invariants(spec: GpuSpec):
    assert spec.idle_bare_w <= spec.idle_context_w < spec.power_limit_min_w <= spec.tdp_w <= spec.power_limit_max_w
    grid = spec.clock_grid_mhz()
    assert grid[0] == spec.min_sm_clock_mhz and grid[-1] == spec.max_sm_clock_mhz
    assert all(b > a for a, b in zip(grid, grid[1:]))
    assert 0 < spec.eta_compute <= 1 and 0 < spec.eta_memory <= 1
    assert spec.nvlink == (spec.name != "L40S")
    # Each preset names a source for every value it sets, and carries its own physics.
    data = json.loads((PRESET_DIR / f"{spec.name}.json").read_text())
    measured = set(data) - {"format", "version", "name", "description", "physics", "sources"}
    assert measured <= set(data["sources"]), measured - set(data["sources"])
    assert "physics" in data["sources"] and data["physics"]
    assert isinstance(spec.physics, PhysicsParams)


def test_allreduce_busbw_picks_nearest_tabled_size():
    a100 = get_gpu("A100-SXM4-80GB")
    assert a100.allreduce_busbw(2) == pytest.approx(172e9)
    assert a100.allreduce_busbw(3) == pytest.approx(190e9)  # next tabled size up
    assert a100.allreduce_busbw(16) == pytest.approx(198e9)  # beyond the table: largest


def test_inconsistent_spec_is_rejected():
    base = get_gpu("A100-SXM4-80GB")
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    fields["min_sm_clock_mhz"] = 2000.0
    with pytest.raises(ConfigError, match="SM clock range"):
        GpuSpec(**fields)


def _preset(tmp_path: Path, name: str = "MY-GPU", **changes) -> Path:
    data = json.loads((PRESET_DIR / "H100-SXM.json").read_text())
    data["name"] = name
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_a_user_adds_a_gpu_by_dropping_a_json_file(tmp_path, monkeypatch):
    _preset(tmp_path, "B200-TEST", tdp_w=1000, power_limit_max_w=1000, peak_bf16_tflops=2250)
    monkeypatch.setenv(PRESETS_DIR_ENV, str(tmp_path))
    spec = get_gpu("b200-test")
    assert spec.tdp_w == 1000.0 and spec.peak_bf16_flops == pytest.approx(2.25e15)
    assert get_gpu("H100-SXM") is GPU_PRESETS["H100-SXM"]  # built-ins stay
    # ... or passes the file's path.
    assert get_gpu(str(tmp_path / "B200-TEST.json")).name == "B200-TEST"


@pytest.mark.parametrize("changes, fragment", [
    ({"tdp_w": None}, 'missing "tdp_w"'),
    ({"tdp_w": "700"}, '"tdp_w" must be a number'),
    ({"nvlink": 1}, '"nvlink" must be true or false'),
    ({"memory_gb": 80}, "unknown field(s) memory_gb"),
    ({"physics": {"mem_sm_activty": 0.4}}, "unknown physics parameter(s) mem_sm_activty"),
    ({"physics": {"mem_sm_activity": 3.0}}, "mem_sm_activity"),
    ({"allreduce_busbw_gb_per_s": {"one": 3}}, "group size"),
    ({"format": "gpu"}, '"format": "pals-gpu"'),
    ({"vllm_max_num_seqs": 0}, "positive integer"),
])
def test_a_bad_preset_file_gets_one_line_naming_the_field(tmp_path, changes, fragment):
    path = _preset(tmp_path, **changes)
    with pytest.raises(ConfigError) as info:
        load_gpu_file(path)
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_bad_json_and_missing_directory(tmp_path, monkeypatch):
    bad = tmp_path / "broken.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        get_gpu(str(bad))
    monkeypatch.setenv(PRESETS_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="not a directory"):
        get_gpu("H100-SXM")
