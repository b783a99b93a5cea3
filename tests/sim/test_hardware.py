"""GPU presets: lookup, sources' numbers, and the clock grid."""

import pytest

from pals.errors import ConfigError
from pals.sim.hardware import GPU_PRESETS, GpuSpec, get_gpu


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
    assert "B200" in message and "\n" not in message
    for key in GPU_PRESETS:
        assert key in message


def test_a100_matches_paper_and_nvml_dumps():
    a100 = get_gpu("A100-SXM4-80GB")
    # PALS section 3.1: caps settable in 100-400 W; nvidia-smi dumps: max SM clock 1410 MHz.
    assert (a100.power_limit_min_w, a100.power_limit_max_w, a100.tdp_w) == (100.0, 400.0, 400.0)
    assert a100.max_sm_clock_mhz == 1410.0
    assert a100.peak_bf16_flops == pytest.approx(312e12)


@pytest.mark.parametrize("spec", list(GPU_PRESETS.values()), ids=list(GPU_PRESETS))
def test_preset_invariants(spec: GpuSpec):
    assert spec.idle_bare_w <= spec.idle_context_w < spec.power_limit_min_w <= spec.tdp_w <= spec.power_limit_max_w
    grid = spec.clock_grid_mhz()
    assert grid[0] == spec.min_sm_clock_mhz and grid[-1] == spec.max_sm_clock_mhz
    assert all(b > a for a, b in zip(grid, grid[1:]))
    assert 0 < spec.eta_compute <= 1 and 0 < spec.eta_memory <= 1
    assert spec.nvlink == (spec.name != "L40S")


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
