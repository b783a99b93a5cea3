"""Drive PalsScheduler inside vLLM's real Scheduler code, without a model (run in a vLLM venv).

Run by tests/vllm/test_scheduler_real.py with the interpreter of a cached vLLM
environment; prints one JSON object with what it saw. Mirrors vLLM's own
tests/v1/core/utils.py (create_scheduler/create_requests): a fake KV-cache
config and a model directory holding only config.json, so no weights, no
tokenizer and no network are needed. The "model runner" is this loop: every
scheduled request gets one token per step once its prompt is computed.

Usage: python scheduler_check.py MODEL_DIR CHANNEL_PATH
Env: PALS_SCHEDULER_MODE=auto|active|drain (read by PalsScheduler).
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time


def build_scheduler(model_dir: str, max_num_seqs: int):
    import torch
    from vllm.config import (
        CacheConfig,
        DeviceConfig,
        ModelConfig,
        ParallelConfig,
        SchedulerConfig,
        VllmConfig,
    )
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    from pals.integrations.vllm_scheduler import PalsScheduler

    block_size = 16
    model_config = ModelConfig(model=model_dir, dtype="float16", seed=42, skip_tokenizer_init=True)
    scheduler_config = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=512,
        max_model_len=2048,
        enable_chunked_prefill=True,
        is_encoder_decoder=False,
    )
    cache_config = CacheConfig(
        block_size=block_size, gpu_memory_utilization=0.9, cache_dtype="auto", enable_prefix_caching=False
    )
    vllm_config = VllmConfig(
        scheduler_config=scheduler_config,
        model_config=model_config,
        cache_config=cache_config,
        parallel_config=ParallelConfig(),
        device_config=DeviceConfig(device="cpu"),
    )
    kv_cache_config = KVCacheConfig(
        num_blocks=1000,
        kv_cache_tensors=[],
        kv_cache_groups=[
            KVCacheGroupSpec(["layer"], FullAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=1, dtype=torch.float32))
        ],
    )
    cache_config.num_gpu_blocks = 1000
    sched = PalsScheduler(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        block_size=block_size,
        log_stats=True,
        structured_output_manager=StructuredOutputManager(vllm_config),
    )
    return sched, block_size


class RequestFactory:
    def __init__(self, block_size: int) -> None:
        from vllm.sampling_params import SamplingParams
        from vllm.utils.hashing import sha256
        from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
        from vllm.v1.request import Request

        init_none_hash(sha256)
        self._hasher = get_request_block_hasher(block_size, sha256)
        self._Request = Request
        self._SamplingParams = SamplingParams
        self._takes_eos = "eos_token_id" in inspect.signature(Request.__init__).parameters
        self._next_id = 0

    def make(self, prompt_len: int, max_tokens: int):
        kwargs = dict(
            request_id=str(self._next_id),
            prompt_token_ids=[(self._next_id * 7 + i) % 900 + 1 for i in range(prompt_len)],
            sampling_params=self._SamplingParams(max_tokens=max_tokens, ignore_eos=True),
            pooling_params=None,
            block_hasher=self._hasher,
        )
        if self._takes_eos:  # removed in vLLM 0.33
            kwargs["eos_token_id"] = None
        self._next_id += 1
        return self._Request(**kwargs)


class Driver:
    """A fake model runner around the real scheduler; records what happens per step."""

    def __init__(self, sched) -> None:
        from vllm.v1.outputs import ModelRunnerOutput

        self.sched = sched
        self._MRO = ModelRunnerOutput
        self.ever_running: set[str] = set()
        self.admissions: list[tuple[int, int, int]] = []  # (step, running before, limit)
        self.preempted = 0
        self.steps = 0
        self.finished = 0

    def step(self) -> int:
        sched = self.sched
        before = {r.request_id for r in sched.running}
        out = sched.schedule()
        self.steps += 1
        after = {r.request_id for r in sched.running}
        new = after - before - self.ever_running
        limit = sched.pals_effective_cap
        for _ in new:
            self.admissions.append((self.steps, len(before), limit))
        self.ever_running |= after
        self.preempted += len(getattr(out, "preempted_req_ids", None) or ())
        ids = list(out.num_scheduled_tokens)
        sampled = []
        for rid in ids:
            req = sched.requests[rid]
            done_prefill = req.num_computed_tokens + out.num_scheduled_tokens[rid] >= req.num_prompt_tokens
            sampled.append([5] if done_prefill else [])
        mro = self._MRO(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)}, sampled_token_ids=sampled)
        engine_outputs = sched.update_from_output(out, mro)
        for eo in engine_outputs.values():
            for o in eo.outputs:
                if o.finish_reason is not None:
                    self.finished += 1
        return len(sched.running)


def main() -> None:
    model_dir, channel_path = sys.argv[1], sys.argv[2]
    import vllm

    from pals.integrations.cap_channel import ENV_VAR, CapWriter

    os.environ[ENV_VAR] = channel_path  # what `pals serve` sets for the engine process
    writer = CapWriter(channel_path)
    max_num_seqs = 8
    sched, block_size = build_scheduler(model_dir, max_num_seqs)
    factory = RequestFactory(block_size)
    drv = Driver(sched)
    result: dict = {
        "vllm_version": vllm.__version__,
        "has_active_limit": sched.pals_has_active_limit,
        "drain_safe": sched.pals_drain_safe,
        "scheduler_class": type(sched).__mro__[1].__name__,
    }

    # Phase 1: the cap at max; 12 long requests fill all 8 slots.
    writer.write(max_num_seqs)
    for i in range(12):  # staggered lengths, so running requests finish one by one
        sched.add_request(factory.make(prompt_len=32, max_tokens=30 + 6 * i))
    for _ in range(6):
        drv.step()
    result["running_full"] = len(sched.running)

    # Phase 2: lower the cap to 3 and measure how soon the scheduler applies it.
    t_write = time.monotonic()
    rec = writer.write(3)
    running_at_write = len(sched.running)
    trace_lowered = []
    apply_latency_s = None
    while len(sched.running) > 3 or apply_latency_s is None:
        trace_lowered.append(drv.step())
        if apply_latency_s is None and sched.pals_seq == rec.seq:
            apply_latency_s = time.monotonic() - t_write
        time.sleep(0.002)  # a model step takes time; keeps the loop from spinning
        if drv.steps > 2000:
            break
    result["running_at_lower"] = running_at_write
    result["lowered_trace"] = trace_lowered
    result["lower_apply_latency_s"] = apply_latency_s
    result["admissions_while_over_cap"] = [a for a in drv.admissions if a[1] >= 3 and a[0] > 6]
    # Phase 3: new arrivals respect the cap.
    for _ in range(10):
        sched.add_request(factory.make(prompt_len=32, max_tokens=20))
    capped = [drv.step() for _ in range(40)]
    result["max_running_under_cap3"] = max(capped)
    result["waiting_under_cap3"] = len(sched.waiting)

    # Phase 4: raise the cap to 6: more are admitted.
    for _ in range(10):
        sched.add_request(factory.make(prompt_len=32, max_tokens=40))
    writer.write(6)
    raised = [drv.step() for _ in range(60) if not time.sleep(0.002)]
    result["max_running_after_raise"] = max(raised)

    # Channel latency, many trials: write at a random phase of the poll cycle.
    latencies = []
    for cap in [2, 5, 3, 6, 4, 2, 6, 3, 5, 4, 2, 6, 3, 5, 4, 6, 2, 5, 3, 4]:
        for _ in range(3):
            sched.add_request(factory.make(prompt_len=16, max_tokens=200))
        t0 = time.monotonic()
        r = writer.write(cap)
        while sched.pals_seq != r.seq:
            if time.monotonic() - t0 > 5.0:
                raise SystemExit(f"scheduler never applied cap record {r.seq}")
            drv.step()
            time.sleep(0.002)
        latencies.append(time.monotonic() - t0)
        for _ in range(int(7 * (cap % 3 + 1))):  # vary the phase
            drv.step()
            time.sleep(0.001)
    result["channel_latencies_s"] = latencies

    applied = writer.read_applied()
    result["applied_report"] = None if applied is None else [applied.seq, applied.cap, applied.effective_cap]
    result["last_seq_written"] = writer.last_seq

    # Drain everything: every request finishes; nothing was preempted.
    writer.write(max_num_seqs)
    while (sched.running or sched.waiting) and drv.steps < 20000:
        drv.step()
    result["preempted"] = drv.preempted
    result["finished"] = drv.finished
    result["submitted"] = factory._next_id
    result["steps"] = drv.steps

    # Negative control: what the drain-safe path avoids. Lowering max_num_running_reqs
    # below the running count by hand trips vLLM's assertion in schedule().
    sched.pals_reader = None  # PalsScheduler steps aside; plain vLLM behaviour
    for _ in range(4):
        sched.add_request(factory.make(prompt_len=16, max_tokens=50))
    for _ in range(4):
        drv.step()
    running_before = len(sched.running)
    sched.max_num_running_reqs = 1
    try:
        sched.schedule()
        result["naive_lowering_trips_assert"] = False
    except AssertionError:
        result["naive_lowering_trips_assert"] = True
    result["naive_running_before"] = running_before
    print("PALS_RESULT " + json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
