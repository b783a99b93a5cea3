"""What a probe run measures: its settings, the power caps it tries, and which batches fit in memory.

Pure functions and frozen dataclasses (no torch): `ProbeSettings` (validated flags), `plan_caps` (the caps to
measure at, given what the GPU allows and whether this process may set limits), `MemoryShape` and
`batch_bytes` (a batch's KV cache plus its prefill activations, to skip batches that cannot fit before
allocating anything).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pals.errors import ConfigError
from pals.sim.llm import LlmSpec

DEFAULT_BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""Batch sizes probed unless told otherwise (the issue's 1-256)."""
MAX_BATCH = 1024
"""Largest batch a probe takes (vLLM deployments on H100/H200 run max_num_seqs up to 1024)."""
DTYPE_BYTES: dict[str, int] = {"bfloat16": 2, "float16": 2, "float32": 4}
"""Bytes per element of the dtypes the probe builds a model in."""
AUTO_CAP_FRACTIONS: tuple[float, ...] = (1.0, 0.7, 0.45)
"""`--caps auto`: these fractions of the default limit (clipped to the GPU's range, rounded to 10 W). Three
points span the cap tables the calibration uses (full, the knee, deep capping) in a few minutes."""
CAP_ROUND_W = 10.0
"""Auto caps are rounded to this. Units: W."""
ACTIVATION_SAFETY = 1.5
"""Margin on the prefill activation estimate (allocator rounding, temporaries the estimate does not list)."""


@dataclass(frozen=True)
class ProbeSettings:
    """The flags of one probe run, validated."""

    config_path: Path
    """The model's Hugging Face config.json (or the folder holding it)."""
    out_path: Path
    """The profile CSV to write."""
    dtype: str = "bfloat16"
    """Weights, activations and KV cache dtype (a key of DTYPE_BYTES)."""
    batches: tuple[int, ...] = DEFAULT_BATCHES
    """Batch sizes, ascending, unique."""
    prompt_tokens: int = 512
    """Prompt length of every sequence (the prefill is batch x this; the KV cache starts at this). Units: tokens."""
    decode_steps: int = 64
    """Single-token decode steps after the prefill (a row's output length is this + 1). Units: steps."""
    caps_w: tuple[float, ...] | None = None
    """Power caps to measure at, highest first; None: `--caps auto`. Units: W."""
    gpu_index: int = 0
    """The GPU (backend index, which is also torch's CUDA index: CUDA_DEVICE_ORDER=PCI_BUS_ID)."""
    device: str = "cuda"
    """'cuda' (a real GPU) or 'cpu' (tests: power then comes from the GPU test double)."""
    cuda_graphs: str = "auto"
    """'auto': capture the decode step in a CUDA graph where it can be (else eager, noted); 'off': eager."""
    min_window_s: float = 1.0
    """Shortest timed window per measurement: the work is repeated until it lasts this long, because NVML's
    energy counter and power average need about a second to be accurate. Units: s."""
    settle_s: float = 1.0
    """Wait after a cap change before the warm-up (the limiter and clocks settle). Units: s."""
    time_budget_s: float | None = None
    """Stop starting new measurements after this long (None: no budget). Units: s."""
    memory_fraction: float = 0.9
    """Share of the free device memory a batch may plan to use (the rest: allocator fragmentation)."""
    seed: int = 0
    """Seed of the random weights and token ids."""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise ConfigError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
        if not self.batches or any(b < 1 or b > MAX_BATCH for b in self.batches):
            raise ConfigError(f"--batches must be whole numbers within 1-{MAX_BATCH}, got {list(self.batches)}")
        if list(self.batches) != sorted(set(self.batches)):
            raise ConfigError("ProbeSettings.batches must be ascending and unique (parse_batches sorts them)")
        if self.prompt_tokens < 1 or self.decode_steps < 1:
            raise ConfigError(f"--prompt-tokens and --decode-steps must be at least 1, got {self.prompt_tokens} and "
                              f"{self.decode_steps}")
        if self.caps_w is not None and (not self.caps_w or any(not math.isfinite(w) or w <= 0 for w in self.caps_w)):
            raise ConfigError(f"--caps must be 'auto' or positive watts, got {self.caps_w}")
        if self.device not in ("cuda", "cpu"):
            raise ConfigError(f"--device must be cuda or cpu, got {self.device!r}")
        if self.cuda_graphs not in ("auto", "off"):
            raise ConfigError(f"--cuda-graphs must be auto or off, got {self.cuda_graphs!r}")
        if self.gpu_index < 0:
            raise ConfigError(f"--gpu-index must be >= 0, got {self.gpu_index}")
        if not (self.min_window_s > 0 and self.settle_s >= 0 and 0 < self.memory_fraction <= 1):
            raise ConfigError("--min-window-s must be > 0, --settle-s >= 0 and the memory fraction within (0, 1]")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ConfigError(f"--time-budget-s must be positive, got {self.time_budget_s}")

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def cache_tokens(self) -> int:
        """KV-cache slots per sequence: the prompt plus every decode step."""
        return self.prompt_tokens + self.decode_steps


def parse_batches(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4), sorted and unique.

    Raises:
        ConfigError: not a comma-separated list of whole numbers within 1-MAX_BATCH.
    """
    try:
        values = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"--batches takes comma-separated whole numbers (e.g. 1,8,64), got {text!r}") from None
    if not values or values[0] < 1 or values[-1] > MAX_BATCH:
        raise ConfigError(f"--batches must be whole numbers within 1-{MAX_BATCH}, got {text!r}")
    return tuple(values)


def parse_caps(text: str) -> tuple[float, ...] | None:
    """'auto' -> None; '700,500' -> (700.0, 500.0), highest first, unique.

    Raises:
        ConfigError: neither 'auto' nor comma-separated positive watts.
    """
    if text.strip().lower() == "auto":
        return None
    try:
        values = sorted({float(x) for x in text.split(",") if x.strip()}, reverse=True)
    except ValueError:
        raise ConfigError(f"--caps takes 'auto' or comma-separated watts (e.g. 700,500,300), got {text!r}") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ConfigError(f"--caps takes 'auto' or comma-separated positive watts, got {text!r}")
    return tuple(values)


# ------------------------------------------------------------------ power caps


@dataclass(frozen=True)
class CapPlan:
    """The power caps a probe measures at."""

    caps_w: tuple[float, ...]
    """Caps to measure at, highest first. Units: W."""
    writes: bool
    """Whether any cap must be written (False: everything runs at the limit in force)."""
    note: str = ""
    """One line for the user when caps could not be honoured as asked (empty: as asked)."""


def auto_caps_w(default_w: float, range_w: tuple[float, float]) -> tuple[float, ...]:
    """AUTO_CAP_FRACTIONS of the default limit, rounded to CAP_ROUND_W, clipped into the range, highest first."""
    low_w, high_w = range_w
    caps = set()
    for fraction in AUTO_CAP_FRACTIONS:
        cap = round(fraction * default_w / CAP_ROUND_W) * CAP_ROUND_W if fraction < 1 else default_w
        caps.add(float(min(high_w, max(low_w, cap))))
    return tuple(sorted(caps, reverse=True))


def plan_caps(requested_w: tuple[float, ...] | None, *, default_w: float, current_w: float,
              range_w: tuple[float, float], can_set: bool, why_not: str = "") -> CapPlan:
    """The caps to measure at.

    Args:
        requested_w: the user's caps (None: auto).
        default_w: the driver's default limit. Units: W.
        current_w: the limit in force now. Units: W.
        range_w: (min, max) limit the driver accepts. Units: W.
        can_set: whether this process may set limits.
        why_not: the fix to name when it may not.

    Raises:
        ConfigError: a requested cap outside the GPU's range (nothing is written).
    """
    low_w, high_w = range_w
    if requested_w is not None:
        outside = [w for w in requested_w if not low_w - 0.5 <= w <= high_w + 0.5]
        if outside:
            raise ConfigError(f"--caps {', '.join(f'{w:g}' for w in outside)} W outside this GPU's range "
                              f"{low_w:g}-{high_w:g} W; pick caps inside it")
    wanted = requested_w if requested_w is not None else auto_caps_w(default_w, range_w)
    if not can_set:
        note = (f"power caps are not settable here ({why_not or 'no permission'}): measuring at the current limit "
                f"{current_w:g} W only")
        asked_other = any(abs(w - current_w) > 0.5 for w in wanted)
        return CapPlan((float(current_w),), writes=False, note=note if asked_other else "")
    writes = any(abs(w - current_w) > 0.5 for w in wanted)
    return CapPlan(tuple(float(w) for w in wanted), writes=writes)


# ------------------------------------------------------------------ memory


@dataclass(frozen=True)
class MemoryShape:
    """What a batch's memory depends on, from the model's architecture."""

    num_layers: int
    hidden_size: int
    q_dim: int
    """Query width (heads x head_dim)."""
    kv_dim: int
    """Key (= value) width (KV heads x head_dim)."""
    ffn_per_token: int
    """FFN width one token passes through: the dense FFN, or top_k experts plus the shared experts."""
    routed_rows_per_token: int
    """MoE: rows each token adds to the experts' gathered input (top_k); 0 for a dense model."""
    num_experts: int
    vocab_size: int

    @classmethod
    def from_llm(cls, llm: LlmSpec) -> "MemoryShape":
        if llm.is_moe:
            ffn = llm.top_k * llm.expert_ffn_size + llm.shared_expert_ffn_size
            routed = llm.top_k
        else:
            ffn, routed = llm.ffn_size, 0
        return cls(num_layers=llm.num_layers, hidden_size=llm.hidden_size, q_dim=llm.num_heads * llm.head_dim,
                   kv_dim=llm.num_kv_heads * llm.head_dim, ffn_per_token=ffn, routed_rows_per_token=routed,
                   num_experts=llm.num_experts, vocab_size=llm.vocab_size)


def kv_cache_bytes(shape: MemoryShape, batch: int, tokens: int, dtype_bytes: int) -> int:
    """K and V of every layer for `batch` sequences of `tokens` slots. Units: B."""
    return 2 * shape.num_layers * shape.kv_dim * dtype_bytes * batch * tokens


def prefill_activation_bytes(shape: MemoryShape, batch: int, prompt_tokens: int, cache_tokens: int,
                             dtype_bytes: int) -> int:
    """Peak transient memory of one layer's prefill of batch x prompt tokens, with ACTIVATION_SAFETY. Units: B.

    Per token: the residual stream and norms (4 x hidden), q/k/v (q + 2 kv), the FFN's gate, up and product
    (3 x FFN width), for MoE the gathered rows (2 x hidden per routed copy) and fp32 router logits; per
    sequence: the boolean attention mask (prompt x cache slots) and the last token's fp32 logits.
    """
    tokens = batch * prompt_tokens
    per_token = (4 * shape.hidden_size + shape.q_dim + 2 * shape.kv_dim + 3 * shape.ffn_per_token
                 + 2 * shape.routed_rows_per_token * shape.hidden_size) * dtype_bytes + 4 * shape.num_experts
    per_sequence = prompt_tokens * cache_tokens + 4 * shape.vocab_size
    return int(ACTIVATION_SAFETY * (tokens * per_token + batch * per_sequence))


def batch_bytes(shape: MemoryShape, batch: int, prompt_tokens: int, cache_tokens: int, dtype_bytes: int) -> int:
    """What one batch needs beyond the weights: its KV cache plus the prefill's activations. Units: B."""
    return (kv_cache_bytes(shape, batch, cache_tokens, dtype_bytes)
            + prefill_activation_bytes(shape, batch, prompt_tokens, cache_tokens, dtype_bytes))


def batches_that_fit(shape: MemoryShape, settings: ProbeSettings, free_bytes: float) -> tuple[tuple[int, ...], str]:
    """(batches whose estimate fits in memory_fraction x free_bytes, a note naming those skipped or '')."""
    budget = settings.memory_fraction * free_bytes
    fits, skipped = [], []
    for batch in settings.batches:
        need = batch_bytes(shape, batch, settings.prompt_tokens, settings.cache_tokens, settings.dtype_bytes)
        (fits if need <= budget else skipped).append((batch, need))
    if not skipped:
        return tuple(b for b, _ in fits), ""
    first_batch, first_need = skipped[0]
    note = (f"skipping batch(es) {', '.join(str(b) for b, _ in skipped)}: batch {first_batch} needs ~"
            f"{first_need / 2**30:.1f} GiB (KV cache + prefill activations), {free_bytes / 2**30:.1f} GiB free after "
            "the weights")
    return tuple(b for b, _ in fits), note
