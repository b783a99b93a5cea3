"""A decode attention that reads each KV head once, as serving engines do (imported only with torch present).

transformers' `sdpa` attention, given a mask (which a `StaticCache` decode always has), expands every KV head to
its query heads (`repeat_kv`) before calling PyTorch's SDPA, because SDPA's masked kernels lack grouped-query
support. For a decode step that copies the whole KV cache G times (G = query heads per KV head: 4 for
Llama-3.1-8B, 8 for Qwen3-30B-A3B) and reads the copies: roughly 2G + 1 times the KV traffic vLLM's paged
attention moves, which would make large-batch decode look far more memory-bound than serving is.

`probe_attention` keeps transformers' SDPA path for everything but a masked single-token decode, where it folds
the G query heads of each KV head into SDPA's query-length axis ([B, H, 1, D] -> [B, KV, G, D]): every query
head of a group sits at the same position, so the decode mask ([B, 1, 1, L]) broadcasts unchanged, and each K/V
element is read once. Registered as attention implementation `pals_probe` (with sdpa's mask function), so
prefill and masks are exactly transformers' sdpa.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

NAME = "pals_probe"
"""The attention implementation name the probe builds its model with."""


def probe_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                    **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-interface signature: query [B, H, q, D], key/value [B, KV, L, D] ->
    ([B, q, H, D], None)."""
    batch, heads, q_length, head_dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    grouped_decode = (q_length == 1 and groups > 1 and attention_mask is not None and dropout == 0.0
                      and kwargs.get("position_bias") is None and key.shape[-1] == value.shape[-1] == head_dim)
    if not grouped_decode:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    # Head h belongs to KV head h // groups (repeat_kv's layout), so a view groups them without a copy.
    grouped = query.reshape(batch, kv_heads, groups, head_dim)
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask,
                                                           scale=scaling)
    return out.reshape(batch, heads, 1, head_dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register `pals_probe` with transformers (idempotent); returns its name."""
    AttentionInterface.register(NAME, probe_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    return NAME
