"""Pure parts of `pals probe`: flags, the cap plan, the memory estimate (no torch needed)."""

from pathlib import Path

import pytest

from pals.errors import ConfigError
from pals.probe.plan import (
    MemoryShape,
    ProbeSettings,
    auto_caps_w,
    batch_bytes,
    batches_that_fit,
    kv_cache_bytes,
    parse_batches,
    parse_caps,
    plan_caps,
)
from pals.sim.llm import get_llm

MODELS = Path(__file__).resolve().parents[2] / "src" / "pals" / "data" / "measurements" / "models"


def _settings(**kw) -> ProbeSettings:
    return ProbeSettings(config_path=Path("cfg"), out_path=Path("out.csv"), **kw)


def test_batches_parse_sorted_unique_and_bad_input_is_one_error():
    assert parse_batches("8, 1,2,8") == (1, 2, 8)
    for bad in ("", "0,1", "1,x", "2048"):
        with pytest.raises(ConfigError, match="--batches"):
            parse_batches(bad)


def test_caps_parse_auto_or_watts_highest_first():
    assert parse_caps("auto") is None and parse_caps(" AUTO ") is None
    assert parse_caps("300,700,500,700") == (700.0, 500.0, 300.0)
    for bad in ("", "-5", "700,abc", "inf"):
        with pytest.raises(ConfigError, match="--caps"):
            parse_caps(bad)


@pytest.mark.parametrize("field,value", [("dtype", "int8"), ("prompt_tokens", 0), ("decode_steps", 0),
                                         ("device", "tpu"), ("cuda_graphs", "on"), ("gpu_index", -1),
                                         ("min_window_s", 0.0), ("time_budget_s", 0.0), ("batches", (4, 2))])
def test_settings_refuse_bad_values(field, value):
    with pytest.raises(ConfigError):
        _settings(**{field: value})


def test_auto_caps_are_fractions_of_the_default_inside_the_range():
    assert auto_caps_w(700.0, (200.0, 700.0)) == (700.0, 490.0, 320.0)
    # A narrow range clips (and merges) the low caps.
    assert auto_caps_w(400.0, (300.0, 400.0)) == (400.0, 300.0)


def test_plan_without_permission_measures_at_the_current_limit_and_says_so():
    plan = plan_caps(None, default_w=700.0, current_w=650.0, range_w=(200.0, 700.0), can_set=False,
                     why_not="run as root")
    assert plan.caps_w == (650.0,) and not plan.writes
    assert "not settable here (run as root)" in plan.note and "650 W only" in plan.note
    # Asking for exactly the limit in force needs no permission and no note.
    same = plan_caps((650.0,), default_w=700.0, current_w=650.0, range_w=(200.0, 700.0), can_set=False)
    assert same.caps_w == (650.0,) and not same.writes and same.note == ""


def test_plan_with_permission_writes_the_requested_caps():
    plan = plan_caps((700.0, 350.0), default_w=700.0, current_w=700.0, range_w=(200.0, 700.0), can_set=True)
    assert plan.caps_w == (700.0, 350.0) and plan.writes and plan.note == ""
    auto = plan_caps(None, default_w=700.0, current_w=700.0, range_w=(200.0, 700.0), can_set=True)
    assert auto.caps_w == (700.0, 490.0, 320.0) and auto.writes


def test_plan_refuses_caps_outside_the_range_before_anything_is_written():
    with pytest.raises(ConfigError, match="150 W outside this GPU's range 200-700 W"):
        plan_caps((700.0, 150.0), default_w=700.0, current_w=700.0, range_w=(200.0, 700.0), can_set=True)


def test_kv_cache_bytes_of_llama_3_1_8b():
    shape = MemoryShape.from_llm(get_llm(str(MODELS / "Llama-3.1-8B")))
    # 32 layers x 8 KV heads x 128 x (K and V) x 2 bytes = 128 KiB per token.
    assert kv_cache_bytes(shape, 1, 1, 2) == 128 * 1024
    assert kv_cache_bytes(shape, 256, 576, 2) == 256 * 576 * 128 * 1024


def test_moe_shape_counts_routed_experts_not_all_experts():
    moe = MemoryShape.from_llm(get_llm(str(MODELS / "Qwen3-30B-A3B")))
    assert moe.ffn_per_token == 8 * 768 and moe.routed_rows_per_token == 8 and moe.num_experts == 128
    dense = MemoryShape.from_llm(get_llm(str(MODELS / "Llama-3.1-8B")))
    assert dense.ffn_per_token == 14336 and dense.routed_rows_per_token == 0


def test_batches_that_do_not_fit_are_skipped_with_one_note():
    shape = MemoryShape.from_llm(get_llm(str(MODELS / "Llama-3.1-8B")))
    settings = _settings(batches=(1, 64, 256))
    need_64 = batch_bytes(shape, 64, 512, 576, 2)
    need_256 = batch_bytes(shape, 256, 512, 576, 2)
    assert need_64 < need_256
    fits, note = batches_that_fit(shape, settings, free_bytes=(need_64 + need_256) / 2 / settings.memory_fraction)
    assert fits == (1, 64)
    assert note.startswith("skipping batch(es) 256: batch 256 needs ~")
    everything, none = batches_that_fit(shape, settings, free_bytes=1e15)
    assert everything == (1, 64, 256) and none == ""


def test_an_h200_holds_every_default_batch_of_both_shipped_probe_models():
    """The device script's plan: batch 256 x (512 + 64) fits beside the weights on a 141 GB GPU."""
    for name, weights_gib in (("Llama-3.1-8B", 15), ("Qwen3-30B-A3B", 57)):
        llm = get_llm(str(MODELS / name))
        assert abs(llm.weight_bytes / 2**30 - weights_gib) < 2
        free = 139 * 2**30 - llm.weight_bytes
        fits, note = batches_that_fit(MemoryShape.from_llm(llm), _settings(), free)
        assert fits[-1] == 256 and note == "", name
