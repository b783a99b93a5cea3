"""Code that runs inside, or talks to, a serving engine (vLLM).

`cap_channel` uses the standard library and `pals.core.io` only, because vLLM's
engine-core process imports it;
`vllm_scheduler` needs vLLM installed and is loaded by vLLM through
`--scheduler-cls pals.integrations.vllm_scheduler.PalsScheduler`.
"""
