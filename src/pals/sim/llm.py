"""Model architectures for the simulator: presets and Hugging Face config.json loading.

Parameter counts follow docs/calibration.md §5: attention (q, o = h x heads*head_dim;
k, v = h x kv_heads*head_dim), a gated MLP of 3*h*ffn per (active) expert (2*h*ffn for GPT-2),
the router (h x experts), shared experts, and embeddings (untied: input + LM head). Biases and
norms are left out (under 0.1 % for every preset). Weights are BF16 (2 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pals.core.untrusted import parse_json, read_text_file, show, whole_in
from pals.errors import ConfigError

_BYTES_PER_PARAM = 2  # BF16

SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "num_layers": (1, 1024),
    "hidden_size": (1, 262_144),
    "num_heads": (1, 16_384),
    "num_kv_heads": (1, 16_384),
    "head_dim": (1, 16_384),
    "vocab_size": (1, 16_777_216),
    "ffn_size": (0, 4_194_304),
    "num_experts": (0, 65_536),
    "top_k": (0, 65_536),
    "expert_ffn_size": (0, 4_194_304),
    "shared_expert_ffn_size": (0, 16_777_216),
    "num_shared_experts": (0, 65_536),
    "first_dense_layers": (0, 1024),
    "learned_positions": (0, 16_777_216),
}
"""Plausible range of every size of an `LlmSpec` (the largest public models use under a tenth of
each): a config beyond it is corrupt or hostile, and sizes like 10^400 experts would overflow the
step model's float arithmetic."""
MAX_CONFIG_INT = 16_777_216
"""Largest integer accepted for any size key of a Hugging Face config.json."""
MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""Largest config.json read (real ones are ~1-5 kB). Units: bytes."""


@dataclass(frozen=True)
class LlmSpec:
    """Architecture of one decoder-only LLM (dense or MoE)."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    ffn_size: int = 0
    """FFN width of dense layers (all layers of a dense model; the first `first_dense_layers` of DeepSeek)."""
    num_experts: int = 0
    """Routed experts per MoE layer (0 for dense models)."""
    top_k: int = 0
    """Routed experts each token activates."""
    expert_ffn_size: int = 0
    """FFN width of one routed expert."""
    shared_expert_ffn_size: int = 0
    """Total FFN width of the always-active shared experts (Qwen-MoE 5632; DeepSeek 2 x 1408)."""
    num_shared_experts: int = 0
    """Shared experts counted as experts (PALS Table 2 counts DeepSeek's 64 + 2 = 66)."""
    first_dense_layers: int = 0
    """Leading layers with a dense FFN instead of experts (DeepSeek first_k_dense_replace)."""
    tied_embeddings: bool = False
    """LM head shares the input embedding matrix (GPT-2)."""
    gated_mlp: bool = True
    """SwiGLU-style MLP with 3 matrices; False for GPT-2's 2-matrix MLP."""
    learned_positions: int = 0
    """Rows of a learned position embedding (GPT-2 n_positions); 0 for rotary models."""
    sliding_window: int | None = None
    """Attention window (Mistral 4096); recorded, not modelled by the step model."""
    model_type: str = "llama"

    def __post_init__(self) -> None:
        for field_name, (low, high) in SIZE_LIMITS.items():
            whole_in(getattr(self, field_name), field_name, low, high, where=f"model '{self.name}': ")
        if self.sliding_window is not None:
            whole_in(self.sliding_window, "sliding_window", 1, MAX_CONFIG_INT, where=f"model '{self.name}': ")
        for field_name in ("tied_embeddings", "gated_mlp"):
            if not isinstance(getattr(self, field_name), bool):
                raise ConfigError(f"model '{self.name}': {field_name} must be true or false, got {show(getattr(self, field_name))}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"model '{self.name}': {self.num_kv_heads} KV heads do not divide {self.num_heads} attention heads"
            )
        if self.num_experts:
            if not 1 <= self.top_k <= self.num_experts or self.expert_ffn_size < 1:
                raise ConfigError(
                    f"model '{self.name}': an MoE model needs 1 <= top_k <= num_experts and expert_ffn_size >= 1"
                )
            if not 0 <= self.first_dense_layers <= self.num_layers:
                raise ConfigError(f"model '{self.name}': first_dense_layers must be in 0..num_layers")
            if self.first_dense_layers and self.ffn_size < 1:
                raise ConfigError(f"model '{self.name}': dense leading layers need ffn_size >= 1")
        elif self.ffn_size < 1:
            raise ConfigError(f"model '{self.name}': a dense model needs ffn_size >= 1")

    # ---- per-layer parameter groups (used by the step model too) ----

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def attention_params(self) -> int:
        """q, k, v, o projections of one layer."""
        h, q_dim, kv_dim = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return 2 * h * q_dim + 2 * h * kv_dim

    def mlp_params(self, ffn_size: int) -> int:
        """One MLP (dense FFN or one expert) of width `ffn_size`."""
        return (3 if self.gated_mlp else 2) * self.hidden_size * ffn_size

    @property
    def expert_params(self) -> int:
        """One routed expert."""
        return self.mlp_params(self.expert_ffn_size) if self.is_moe else 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.first_dense_layers if self.is_moe else 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def dense_layer_params(self) -> int:
        """All weights of one dense-FFN layer."""
        return self.attention_params + self.mlp_params(self.ffn_size) if self.num_dense_layers else 0

    @property
    def moe_always_params(self) -> int:
        """Weights of one MoE layer that every token uses: attention, router, shared experts."""
        if not self.is_moe:
            return 0
        return self.attention_params + self.hidden_size * self.num_experts + self.mlp_params(self.shared_expert_ffn_size)

    @property
    def embedding_params(self) -> int:
        """Input embedding (+ learned positions) and LM head (counted once if tied)."""
        table = self.vocab_size * self.hidden_size
        return table * (1 if self.tied_embeddings else 2) + self.learned_positions * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    # ---- the totals PALS Table 2 reports ----

    @property
    def total_params(self) -> int:
        moe = self.num_moe_layers * (self.moe_always_params + self.num_experts * self.expert_params)
        return self.num_dense_layers * self.dense_layer_params + moe + self.embedding_params

    @property
    def active_params(self) -> int:
        """Parameters one token touches (embeddings included, as in PALS Table 2)."""
        moe = self.num_moe_layers * (self.moe_always_params + self.top_k * self.expert_params)
        return self.num_dense_layers * self.dense_layer_params + moe + self.embedding_params

    @property
    def weight_bytes(self) -> int:
        """All weights in BF16. Units: B."""
        return self.total_params * _BYTES_PER_PARAM

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache of one token over all layers, whole model (BF16). Units: B."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * _BYTES_PER_PARAM


def _dense(name: str, layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, vocab: int, **kw) -> LlmSpec:
    return LlmSpec(name=name, num_layers=layers, hidden_size=hidden, num_heads=heads, num_kv_heads=kv_heads,
                   head_dim=hidden // heads, vocab_size=vocab, ffn_size=ffn, **kw)


# Values: docs/calibration.md §5 (transformers config classes whose defaults are the reference
# checkpoints; OLMoE expert FFN 1024 from the checkpoint; DeepSeek from its README / HF config.json).
LLM_PRESETS: dict[str, LlmSpec] = {
    "GPT-2": _dense("GPT-2", 12, 768, 12, 12, 3072, 50257, tied_embeddings=True, gated_mlp=False,
                    learned_positions=1024, model_type="gpt2"),
    "Llama-2-7B": _dense("Llama-2-7B", 32, 4096, 32, 32, 11008, 32000, model_type="llama"),
    "Mistral-7B": _dense("Mistral-7B", 32, 4096, 32, 8, 14336, 32000, sliding_window=4096, model_type="mistral"),
    "OLMoE-1B-7B": LlmSpec(name="OLMoE-1B-7B", num_layers=16, hidden_size=2048, num_heads=16, num_kv_heads=16,
                           head_dim=128, vocab_size=50304, num_experts=64, top_k=8, expert_ffn_size=1024,
                           model_type="olmoe"),
    "Qwen1.5-MoE-A2.7B": LlmSpec(name="Qwen1.5-MoE-A2.7B", num_layers=24, hidden_size=2048, num_heads=16,
                                 num_kv_heads=16, head_dim=128, vocab_size=151936, num_experts=60, top_k=4,
                                 expert_ffn_size=1408, shared_expert_ffn_size=5632, num_shared_experts=4,
                                 model_type="qwen2_moe"),
    "DeepSeek-MoE-16B": LlmSpec(name="DeepSeek-MoE-16B", num_layers=28, hidden_size=2048, num_heads=16,
                                num_kv_heads=16, head_dim=128, vocab_size=102400, ffn_size=10944, num_experts=64,
                                top_k=6, expert_ffn_size=1408, shared_expert_ffn_size=2 * 1408,
                                num_shared_experts=2, first_dense_layers=1, model_type="deepseek"),
    "Phi-3.5-MoE": LlmSpec(name="Phi-3.5-MoE", num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8,
                           head_dim=128, vocab_size=32064, num_experts=16, top_k=2, expert_ffn_size=6400,
                           model_type="phimoe"),
    "Mixtral-8x7B": LlmSpec(name="Mixtral-8x7B", num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8,
                            head_dim=128, vocab_size=32000, num_experts=8, top_k=2, expert_ffn_size=14336,
                            sliding_window=None, model_type="mixtral"),
}

# Hugging Face repository ids accepted as preset names.
_HF_IDS = {
    "gpt2": "GPT-2", "openai-community/gpt2": "GPT-2",
    "meta-llama/llama-2-7b-hf": "Llama-2-7B", "mistralai/mistral-7b-v0.1": "Mistral-7B",
    "allenai/olmoe-1b-7b-0924": "OLMoE-1B-7B", "qwen/qwen1.5-moe-a2.7b": "Qwen1.5-MoE-A2.7B",
    "deepseek-ai/deepseek-moe-16b-base": "DeepSeek-MoE-16B", "microsoft/phi-3.5-moe-instruct": "Phi-3.5-MoE",
    "mistralai/mixtral-8x7b-v0.1": "Mixtral-8x7B", "mistralai/mixtral-8x7b-instruct-v0.1": "Mixtral-8x7B",
}


def get_llm(name_or_path: str) -> LlmSpec:
    """A preset by name (case-insensitive, or its Hugging Face id), or a HF config.json / a directory holding one.

    Raises:
        ConfigError: neither a preset nor an existing path (lists the presets), or a bad config file.
    """
    wanted = str(name_or_path).strip()
    for key, spec in LLM_PRESETS.items():
        if key.lower() == wanted.lower():
            return spec
    if wanted.lower() in _HF_IDS:
        return LLM_PRESETS[_HF_IDS[wanted.lower()]]
    if Path(wanted).exists():
        return load_hf_config(wanted)
    raise ConfigError(
        f"unknown model '{name_or_path}'; known models: {', '.join(LLM_PRESETS)}; "
        "or pass the path of a Hugging Face config.json"
    )


_SUPPORTED_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "olmoe",
                    "deepseek", "phimoe", "gpt2")


def load_hf_config(path: str | Path) -> LlmSpec:
    """Build an `LlmSpec` from a Hugging Face config.json (or a directory that holds one).

    Raises:
        ConfigError: unreadable or malformed JSON, a missing key, or an unsupported model_type;
            one line naming the file and the problem.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    if not file.is_file():
        raise ConfigError(f"{file}: cannot read model config (no such file); give a Hugging Face config.json")
    text = read_text_file(file, "model config", max_bytes=MAX_CONFIG_BYTES)
    cfg = parse_json(text, str(file))
    if not isinstance(cfg, dict):
        raise ConfigError(f"{file}: expected a JSON object at the top level")
    model_type = cfg.get("model_type")
    if model_type not in _SUPPORTED_TYPES:
        raise ConfigError(
            f"{file}: unsupported model_type {model_type!r}; supported: {', '.join(_SUPPORTED_TYPES)}"
        )
    raw_name = cfg.get("_name_or_path")
    if not isinstance(raw_name, str) or not raw_name.strip():
        raw_name = file.parent.name or file.stem
    # The name reaches logs, file names and error lines: printable, one line, bounded.
    name = "".join(ch for ch in raw_name.rstrip("/").rsplit("/", 1)[-1] if ch.isprintable())[:128] or file.stem

    def need(key: str):
        if key not in cfg:
            raise ConfigError(f"{file}: missing key '{key}' (needed for model_type '{model_type}')")
        return whole_in(cfg[key], f"key '{key}'", 0, MAX_CONFIG_INT, where=f"{file}: ")

    def opt(key: str, default: int) -> int:
        return need(key) if cfg.get(key) is not None else default

    def flag(key: str, default: bool) -> bool:
        value = cfg.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{file}: key '{key}' must be true or false, got {show(value)}")
        return value

    try:
        if model_type == "gpt2":
            hidden, heads = need("n_embd"), need("n_head")
            return LlmSpec(name=name, num_layers=need("n_layer"), hidden_size=hidden, num_heads=heads,
                           num_kv_heads=heads, head_dim=hidden // max(heads, 1), vocab_size=need("vocab_size"),
                           ffn_size=opt("n_inner", 4 * hidden), tied_embeddings=flag("tie_word_embeddings", True),
                           gated_mlp=False, learned_positions=need("n_positions"), model_type=model_type)

        hidden, heads = need("hidden_size"), need("num_attention_heads")
        common = dict(
            name=name, num_layers=need("num_hidden_layers"), hidden_size=hidden, num_heads=heads,
            num_kv_heads=opt("num_key_value_heads", heads), head_dim=opt("head_dim", hidden // max(heads, 1)),
            vocab_size=need("vocab_size"), tied_embeddings=flag("tie_word_embeddings", False),
            model_type=model_type,
        )
        if model_type in ("llama", "mistral", "qwen2", "qwen3"):
            window = opt("sliding_window", None) if model_type == "mistral" else None
            return LlmSpec(ffn_size=need("intermediate_size"), sliding_window=window, **common)
        if model_type in ("mixtral", "phimoe"):
            return LlmSpec(num_experts=need("num_local_experts"), top_k=need("num_experts_per_tok"),
                           expert_ffn_size=need("intermediate_size"), **common)
        if model_type == "olmoe":
            return LlmSpec(num_experts=need("num_experts"), top_k=need("num_experts_per_tok"),
                           expert_ffn_size=need("intermediate_size"), **common)
        if model_type in ("qwen2_moe", "qwen3_moe"):
            shared = opt("shared_expert_intermediate_size", 0)
            expert = need("moe_intermediate_size")
            return LlmSpec(num_experts=need("num_experts"), top_k=need("num_experts_per_tok"),
                           expert_ffn_size=expert, shared_expert_ffn_size=shared,
                           num_shared_experts=shared // expert if expert else 0, **common)
        # deepseek (v1 keys)
        expert = need("moe_intermediate_size")
        n_shared = opt("n_shared_experts", 0)
        return LlmSpec(num_experts=need("n_routed_experts"), top_k=need("num_experts_per_tok"),
                       expert_ffn_size=expert, shared_expert_ffn_size=n_shared * expert, num_shared_experts=n_shared,
                       first_dense_layers=opt("first_k_dense_replace", 0), ffn_size=opt("intermediate_size", 0),
                       **common)
    except ConfigError as exc:
        message = str(exc)
        if message.startswith(str(file)):
            raise
        raise ConfigError(f"{file}: {message}") from exc
