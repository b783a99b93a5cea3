"""LLM presets (PALS Table 2) and Hugging Face config.json loading."""

import json

import pytest

from pals.errors import ConfigError
from pals.sim.llm import LLM_PRESETS, get_llm, load_hf_config

# PALS Table 2 (paper summary): total and active parameters, in billions, as printed (3 significant digits).
TABLE_2 = {
    "GPT-2": (0.12, 0.12),
    "Llama-2-7B": (6.74, 6.74),
    "Mistral-7B": (7.25, 7.25),
    "OLMoE-1B-7B": (6.92, 1.30),
    "Qwen1.5-MoE-A2.7B": (14.3, 2.70),
    "DeepSeek-MoE-16B": (16.4, 2.80),
    "Phi-3.5-MoE": (41.9, 6.60),
    "Mixtral-8x7B": (46.7, 12.9),
}


def _close_to_table(ours: float, printed: float) -> bool:
    """Within 2 %, or within the rounding of the printed figure (GPT-2's 0.124 B is printed as 0.12)."""
    return abs(ours - printed) <= max(0.02 * printed, 0.005)


@pytest.mark.parametrize("name", list(TABLE_2))
def test_param_counts_match_paper_table_2(name):
    spec = LLM_PRESETS[name]
    total, active = TABLE_2[name]
    assert _close_to_table(spec.total_params / 1e9, total), spec.total_params
    assert _close_to_table(spec.active_params / 1e9, active), spec.active_params
    assert spec.is_moe == (total != active)
    assert spec.weight_bytes == 2 * spec.total_params


def test_kv_bytes_per_token():
    # Mixtral: 2 (K, V) x 32 layers x 8 KV heads x 128 x 2 bytes = 128 KiB.
    assert LLM_PRESETS["Mixtral-8x7B"].kv_bytes_per_token == 131072
    assert LLM_PRESETS["Llama-2-7B"].kv_bytes_per_token == 2 * 32 * 32 * 128 * 2


def test_get_llm_by_name_and_hf_id():
    assert get_llm("mixtral-8x7b") is LLM_PRESETS["Mixtral-8x7B"]
    assert get_llm("allenai/OLMoE-1B-7B-0924") is LLM_PRESETS["OLMoE-1B-7B"]


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        get_llm("Llama-9-1T")
    message = str(info.value)
    assert "Llama-9-1T" in message and "\n" not in message
    for key in LLM_PRESETS:
        assert key in message


# Values copied from the checkpoints' config.json files (docs/calibration.md §5).
REAL_CONFIGS = {
    "Mixtral-8x7B": {
        "model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
        "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8,
        "sliding_window": None, "tie_word_embeddings": False, "vocab_size": 32000, "rope_theta": 1e6,
    },
    "OLMoE-1B-7B": {
        "model_type": "olmoe", "hidden_size": 2048, "intermediate_size": 1024, "num_attention_heads": 16,
        "num_experts": 64, "num_experts_per_tok": 8, "num_hidden_layers": 16, "num_key_value_heads": 16,
        "vocab_size": 50304, "tie_word_embeddings": False,
    },
    "Qwen1.5-MoE-A2.7B": {
        "model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632, "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632, "num_experts": 60, "num_experts_per_tok": 4,
        "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": 151936,
        "decoder_sparse_step": 1, "tie_word_embeddings": False,
    },
    "DeepSeek-MoE-16B": {
        "model_type": "deepseek", "hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408,
        "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1,
        "moe_layer_freq": 1, "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
        "vocab_size": 102400,
    },
    "Phi-3.5-MoE": {
        "model_type": "phimoe", "hidden_size": 4096, "intermediate_size": 6400, "num_local_experts": 16,
        "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32064,
    },
    "GPT-2": {
        "model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024,
        "vocab_size": 50257, "n_inner": None,
    },
    "Llama-2-7B": {
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    },
    "Mistral-7B": {
        "model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
        "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 32000, "sliding_window": 4096,
    },
}


def _write(tmp_path, cfg, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("preset", list(REAL_CONFIGS))
def test_real_configs_reproduce_the_presets(tmp_path, preset):
    spec = load_hf_config(_write(tmp_path, REAL_CONFIGS[preset]))
    ref = LLM_PRESETS[preset]
    assert spec.total_params == ref.total_params
    assert spec.active_params == ref.active_params
    assert spec.kv_bytes_per_token == ref.kv_bytes_per_token
    assert (spec.num_experts, spec.top_k) == (ref.num_experts, ref.top_k)


def test_directory_and_get_llm_path(tmp_path):
    _write(tmp_path, REAL_CONFIGS["OLMoE-1B-7B"])
    assert get_llm(str(tmp_path)).total_params == LLM_PRESETS["OLMoE-1B-7B"].total_params


def test_qwen3_moe_and_dense_types(tmp_path):
    # Qwen3-30B-A3B-like: explicit head_dim (128) differs from hidden/heads (2048/32 = 64), no shared expert.
    qwen3_moe = {
        "model_type": "qwen3_moe", "hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 4,
        "head_dim": 128, "num_hidden_layers": 48, "num_experts": 128, "num_experts_per_tok": 8,
        "moe_intermediate_size": 768, "vocab_size": 151936, "tie_word_embeddings": False,
    }
    spec = load_hf_config(_write(tmp_path, qwen3_moe))
    assert spec.head_dim == 128 and spec.shared_expert_ffn_size == 0
    assert 29e9 < spec.total_params < 32e9  # Qwen3-30B-A3B: 30.5 B total
    assert 3.0e9 < spec.active_params < 3.6e9  # 3.3 B active
    for model_type in ("qwen2", "qwen3"):
        dense = {"model_type": model_type, "hidden_size": 1024, "num_attention_heads": 16,
                 "num_hidden_layers": 4, "intermediate_size": 3072, "vocab_size": 1000, "tie_word_embeddings": True}
        spec = load_hf_config(_write(tmp_path, dense, f"{model_type}.json"))
        assert not spec.is_moe and spec.num_kv_heads == 16
        assert spec.total_params == 4 * (4 * 1024 * 1024 + 3 * 1024 * 3072) + 1000 * 1024


def test_malformed_json_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama", ')
    with pytest.raises(ConfigError) as info:
        load_hf_config(path)
    assert str(path) in str(info.value) and "not valid JSON" in str(info.value) and "\n" not in str(info.value)


def test_missing_key_names_it(tmp_path):
    cfg = dict(REAL_CONFIGS["Mixtral-8x7B"])
    del cfg["num_local_experts"]
    with pytest.raises(ConfigError, match="missing key 'num_local_experts'") as info:
        load_hf_config(_write(tmp_path, cfg))
    assert str(tmp_path) in str(info.value)


def test_unsupported_model_type(tmp_path):
    with pytest.raises(ConfigError, match="unsupported model_type 'bert'"):
        load_hf_config(_write(tmp_path, {"model_type": "bert", "hidden_size": 768}))


def test_bad_value_and_missing_file(tmp_path):
    cfg = dict(REAL_CONFIGS["Llama-2-7B"], num_hidden_layers="32")
    with pytest.raises(ConfigError, match="num_hidden_layers"):
        load_hf_config(_write(tmp_path, cfg))
    with pytest.raises(ConfigError, match="cannot read"):
        load_hf_config(tmp_path / "nope" / "config.json")
    cfg = dict(REAL_CONFIGS["Mixtral-8x7B"], num_experts_per_tok=9)
    with pytest.raises(ConfigError, match="top_k"):
        load_hf_config(_write(tmp_path, cfg))


# -- hostile or careless configs: one line naming the file, the key and the limit ------------------


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("num_local_experts", 10**400, "key 'num_local_experts' must be a whole number from 0 to 16,777,216, got 1000"),
        ("num_local_experts", 1e400, "not valid JSON (Infinity is not a JSON number)"),
        ("num_local_experts", 8.5, "key 'num_local_experts' must be a whole number"),
        ("num_local_experts", 1_000_000, "num_experts must be a whole number from 0 to 65,536"),
        ("num_local_experts", -8, "key 'num_local_experts' must be a whole number"),
        ("num_local_experts", 8.0, "key 'num_local_experts' must be a whole number"),
        ("num_local_experts", True, "key 'num_local_experts' must be a whole number"),
        ("num_local_experts", "8", "key 'num_local_experts' must be a whole number"),
        ("num_local_experts", None, "missing key 'num_local_experts'"),
        ("hidden_size", 0, "hidden_size must be a whole number from 1 to 262,144"),
        ("hidden_size", 10_000_000, "hidden_size must be a whole number from 1 to 262,144"),
        ("hidden_size", 10**20, "key 'hidden_size' must be a whole number from 0 to 16,777,216"),
        ("num_hidden_layers", 100_000, "num_layers must be a whole number from 1 to 1,024"),
        ("num_attention_heads", 0, "num_heads must be a whole number from 1 to 16,384"),
        ("vocab_size", [32000], "key 'vocab_size' must be a whole number"),
        ("tie_word_embeddings", "false", "key 'tie_word_embeddings' must be true or false, got 'false'"),
        ("num_experts_per_tok", 0, "top_k"),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_absurd_sizes_are_refused_with_the_limit(tmp_path, key, value, needle):
    cfg = dict(REAL_CONFIGS["Mixtral-8x7B"], **{key: value})
    if value is None:
        del cfg[key]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError) as info:
        load_hf_config(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message and len(message) < 300


@pytest.mark.parametrize(
    "content, needle",
    [
        (bytes(range(256)) * 16, "is not UTF-8 text"),
        (b'{"model_type": "llama"\x00}', "NUL bytes"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 64 levels"),
        (b'{"model_type": "mixtral", "hidden_size": 1' + b"0" * 5000 + b"}", "not valid JSON (Exceeds the limit"),
        (b'{"model_type": "mixtral", "hidden_size": NaN}', "NaN is not a JSON number"),
        (b'{"model_type": "mixtral", "hidden_size": Infinity}', "Infinity is not a JSON number"),
        (b"", "not valid JSON"),
        (b'"mixtral"', "expected a JSON object"),
        (b'{"model_type": ["mixtral"]}', "unsupported model_type"),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_garbage_config_files_are_one_line(tmp_path, content, needle):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_hf_config(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message and len(message) < 300


def test_mistral_sliding_window_is_checked_and_names_are_made_printable(tmp_path):
    cfg = dict(REAL_CONFIGS["Mistral-7B"], sliding_window="4096")
    with pytest.raises(ConfigError, match="key 'sliding_window' must be a whole number"):
        load_hf_config(_write(tmp_path, cfg))
    cfg = dict(REAL_CONFIGS["Mistral-7B"], sliding_window=None, _name_or_path="org/evil\nname" + "x" * 500)
    spec = load_hf_config(_write(tmp_path, cfg))
    assert spec.sliding_window is None and "\n" not in spec.name and len(spec.name) == 128
    cfg = dict(REAL_CONFIGS["Mistral-7B"], _name_or_path={"a": 1})
    assert load_hf_config(_write(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else tmp_path, cfg)).name == "sub"


def test_spec_built_in_code_is_checked_too():
    with pytest.raises(ConfigError, match="num_layers must be a whole number from 1 to 1,024, got '4'"):
        LLM_PRESETS["GPT-2"].__class__(name="x", num_layers="4", hidden_size=8, num_heads=1, num_kv_heads=1,
                                        head_dim=8, vocab_size=10, ffn_size=8)
