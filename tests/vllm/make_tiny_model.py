"""Write a tiny random-weight model for vLLM on CPU (run in the cpu-0.32 venv).

Usage: python make_tiny_model.py OUT_DIR [llama|mixtral|qwen3moe]
Random weights (seeded): the text is noise, but every kernel, the scheduler,
the KV cache and /metrics run for real. head_dim 64, because vLLM's CPU
attention rejects head_dim 16 on AVX2.
"""

import json
import sys
from pathlib import Path


def main() -> None:
    out, arch = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "llama")
    import torch
    import transformers

    torch.manual_seed(0)
    common = dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                  num_hidden_layers=2, vocab_size=1000, max_position_embeddings=1024,
                  intermediate_size=256)
    if arch == "llama":
        cfg = transformers.LlamaConfig(**common)
        model = transformers.LlamaForCausalLM(cfg)
    elif arch == "mixtral":
        cfg = transformers.MixtralConfig(**common, num_local_experts=4, num_experts_per_tok=2)
        model = transformers.MixtralForCausalLM(cfg)
    elif arch == "qwen3moe":
        cfg = transformers.Qwen3MoeConfig(**common, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=128,
                                          decoder_sparse_step=1, mlp_only_layers=[])
        model = transformers.Qwen3MoeForCausalLM(cfg)
    else:
        raise SystemExit(f"unknown architecture {arch!r}")
    model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    params = sum(p.numel() for p in model.parameters())
    print("PALS_RESULT " + json.dumps({"architecture": type(model).__name__, "params": params, "dir": str(out)}))


if __name__ == "__main__":
    main()
