"""Run inside the cached vLLM environment (torch + transformers): `pals_probe` attention equals transformers'
sdpa on a prefill and four StaticCache decode steps, for a dense and an MoE model with grouped-query heads, and
its decode never expands the KV heads (repeat_kv is not called). Prints `PALS_RESULT {json}`."""

import json
import sys

import torch
import transformers.integrations.sdpa_attention as sdpa_module
from transformers import AutoConfig, AutoModelForCausalLM, StaticCache

from pals.probe.attention import register

calls = {"repeat_kv": 0}
original = sdpa_module.repeat_kv


def counting_repeat_kv(hidden, n_rep):
    if n_rep > 1:
        calls["repeat_kv"] += 1
    return original(hidden, n_rep)


sdpa_module.repeat_kv = counting_repeat_kv
name = register()
result = {}
for folder in sys.argv[1:]:
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    prompt = torch.randint(0, config.vocab_size, (3, 10))
    steps = torch.randint(0, config.vocab_size, (4, 3, 1))
    logits, expansions = {}, {}
    for impl in ("sdpa", name):
        model.set_attn_implementation(impl)
        cache = StaticCache(config=model.config, max_cache_len=16)
        with torch.inference_mode():
            out = [model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1).logits]
            calls["repeat_kv"] = 0
            for k in range(4):
                out.append(model(input_ids=steps[k], past_key_values=cache, use_cache=True, logits_to_keep=1).logits)
        expansions[impl] = calls["repeat_kv"]
        logits[impl] = torch.cat(out, 1)
    result[folder] = {"max_abs_diff": (logits["sdpa"] - logits[name]).abs().max().item(),
                      "scale": logits["sdpa"].abs().max().item(), "decode_repeat_kv": expansions}
print("PALS_RESULT " + json.dumps(result))
