"""Drive PalsScheduler inside vLLM's real Scheduler code, without a model (run in a vLLM venv).

Run by tests/vllm/test_scheduler_real.py with the interpreter of a cached vLLM
environment; prints one JSON object with what it saw. Mirrors vLLM's own
tests/v1/core/utils.py (create_scheduler/create_requests): a fake KV-cache
config and a model directory holding only config.json, so no weights, no
tokenizer and no network are needed. The "model runner" is this loop: every
scheduled request gets one token per step once its prompt is computed.

Usage: python scheduler_check.py MODEL_DIR CHANNEL_PATH
Env: PALS_SCHEDULER_MODE=auto|active|drain (read by PalsScheduler).
     PALS_CHECK_LEGACY=1: run PalsScheduler on a LEGACY EMULATION of vLLM before the separate
     admission limit (vLLM < 0.32): `max_num_active_reqs` is no instance attribute set by
     Scheduler.__init__ but a read-only alias of `max_num_running_reqs`, so admission and the
     running-count assertion both read `max_num_running_reqs`, as in those releases. PalsScheduler
     must detect that on its own and take the drain-safe path.
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
    cls = legacy_scheduler_class(PalsScheduler) if os.environ.get("PALS_CHECK_LEGACY") == "1" else PalsScheduler
    sched = cls(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        block_size=block_size,
        log_stats=True,
        structured_output_manager=StructuredOutputManager(vllm_config),
    )
    return sched, block_size


def legacy_scheduler_class(pals_cls):
    """PalsScheduler on an emulation of vLLM without `max_num_active_reqs` (see the module docstring)."""
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler

    class LegacyAdmission(AsyncScheduler):
        # Scheduler.__init__ assigns max_num_active_reqs; here that assignment goes nowhere and
        # reading it gives max_num_running_reqs: the one limit older releases had.
        @property
        def max_num_active_reqs(self):
            return self.max_num_running_reqs

        @max_num_active_reqs.setter
        def max_num_active_reqs(self, value):
            pass

    class LegacyPalsScheduler(pals_cls, LegacyAdmission):
        pass

    assert LegacyPalsScheduler.__mro__[1:3] == (pals_cls, LegacyAdmission)
    return LegacyPalsScheduler


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
        self.generated = 0  # new token ids handed to the front end (what vllm:generation_tokens counts)
        self.after_schedule = None  # optional hook(sched), called between schedule() and the model output

    def step(self) -> int:
        sched = self.sched
        before = {r.request_id for r in sched.running}
        out = sched.schedule()
        self.steps += 1
        if self.after_schedule is not None:
            self.after_schedule(sched)
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
                self.generated += len(o.new_token_ids)
                if o.finish_reason is not None:
                    self.finished += 1
        return len(sched.running)


class Check:
    """The scenario, phase by phase; each phase adds what it saw to `result`."""

    def __init__(self, model_dir: str, channel_path: str) -> None:
        import vllm

        from pals.integrations.cap_channel import ENV_VAR, CapWriter
        from pals.integrations.engine_state import StateReader

        os.environ[ENV_VAR] = channel_path  # what `pals serve` sets for the engine process
        self.writer = CapWriter(channel_path)
        self.max_num_seqs = 8
        self.sched, block_size = build_scheduler(model_dir, self.max_num_seqs)
        self.factory = RequestFactory(block_size)
        self.drv = Driver(self.sched)
        self.state_reader = StateReader(channel_path)
        sched = self.sched
        self.result: dict = {
            "vllm_version": vllm.__version__,
            "has_active_limit": sched.pals_has_active_limit,
            "drain_safe": sched.pals_drain_safe,
            # The vLLM class under PalsScheduler (under the legacy emulation too).
            "scheduler_class": next(c.__name__ for c in type(sched).__mro__ if c.__module__.startswith("vllm.")),
            "legacy_emulation": os.environ.get("PALS_CHECK_LEGACY") == "1",
            "active_limit_attribute": "max_num_active_reqs" in vars(sched),
        }

    def add(self, n: int, prompt_len: int, max_tokens) -> None:
        for i in range(n):
            self.sched.add_request(self.factory.make(prompt_len=prompt_len, max_tokens=max_tokens(i)))

    def fill(self) -> None:
        """The cap at max; 12 long requests fill all 8 slots."""
        self.writer.write(self.max_num_seqs)
        self.add(12, 32, lambda i: 30 + 6 * i)  # staggered lengths, so running requests finish one by one
        for _ in range(6):
            self.drv.step()
        self.result["running_full"] = len(self.sched.running)

    def state_after_a_step(self) -> None:
        """The engine-state record, read right after a scheduling step at least one publish interval
        after the last record: it holds the queues that step left."""
        seen = []

        def check_state(s) -> None:
            snap = self.state_reader.read()
            seen.append(((snap.running, snap.waiting), s.get_request_counts(), snap.records[0].pid == os.getpid()))

        time.sleep(0.06)
        self.drv.after_schedule = check_state
        self.drv.step()
        self.drv.after_schedule = None
        self.result["state_after_schedule"] = seen

    def lower(self) -> None:
        """Lower the cap to 3: the running requests drain, nobody is admitted above it."""
        sched, drv = self.sched, self.drv
        rec = self.writer.write(3)
        running_at_write = len(sched.running)
        trace_lowered = []
        applied = False
        while len(sched.running) > 3 or not applied:
            trace_lowered.append(drv.step())
            applied = applied or sched.pals_seq == rec.seq
            time.sleep(0.002)  # a model step takes time; keeps the loop from spinning
            if drv.steps > 2000:
                break
        self.result["running_at_lower"] = running_at_write
        self.result["lowered_trace"] = trace_lowered
        self.result["admissions_while_over_cap"] = [a for a in drv.admissions if a[1] >= 3 and a[0] > 6]

    def admit_under_cap_then_raise(self) -> None:
        """New arrivals respect the cap; raising it to 6 admits more."""
        self.add(10, 32, lambda i: 20)
        capped = [self.drv.step() for _ in range(40)]
        self.result["max_running_under_cap3"] = max(capped)
        self.result["waiting_under_cap3"] = len(self.sched.waiting)
        self.add(10, 32, lambda i: 40)
        self.writer.write(6)
        raised = [self.drv.step() for _ in range(60) if not time.sleep(0.002)]
        self.result["max_running_after_raise"] = max(raised)

    def channel_latency(self) -> None:
        """Many writes at random phases of the poll cycle. Not a wall-clock threshold (a loaded host
        can stall any process): every step that begins a poll interval after the write must apply
        it. The latencies are reported as a figure."""
        sched, drv = self.sched, self.drv
        interval_s = sched.pals_reader.min_interval_s
        latencies, missed = [], []
        for cap in [2, 5, 3, 6, 4, 2, 6, 3, 5, 4, 2, 6, 3, 5, 4, 6, 2, 5, 3, 4]:
            self.add(3, 16, lambda i: 200)
            t0 = time.monotonic()
            r = self.writer.write(cap)
            while sched.pals_seq != r.seq:
                if time.monotonic() - t0 > 60.0:
                    raise SystemExit(f"scheduler never applied cap record {r.seq}")
                began_s = time.monotonic()
                drv.step()
                if sched.pals_seq != r.seq and began_s >= t0 + interval_s + 1e-3:
                    missed.append((r.seq, round(began_s - t0, 4)))
                time.sleep(0.002)
            latencies.append(time.monotonic() - t0)
            for _ in range(int(7 * (cap % 3 + 1))):  # vary the phase
                drv.step()
                time.sleep(0.001)
        self.result["channel_latencies_s"] = latencies
        self.result["steps_that_missed_a_due_cap"] = missed
        applied = self.writer.read_applied()
        self.result["applied_report"] = None if applied is None else [applied.seq, applied.cap, applied.effective_cap]
        self.result["last_seq_written"] = self.writer.last_seq

    def drain_all(self) -> None:
        """Every request finishes; nothing was preempted; the record's counters match the outputs."""
        self.writer.write(self.max_num_seqs)
        sched, drv = self.sched, self.drv
        while (sched.running or sched.waiting) and drv.steps < 20000:
            drv.step()
        final = self.state_reader.read()  # all finished: the engine went idle, which is published at once
        self.result.update(
            preempted=drv.preempted, finished=drv.finished, driver_generated=drv.generated,
            submitted=self.factory._next_id, steps=drv.steps,
            state_final={"idle": final.idle, "generated": final.generated_tokens_total, "finished": final.finished_total,
                         "prompt": final.prompt_tokens_total, "steps": final.records[0].steps},
        )

    def naive_lowering(self) -> None:
        """Negative control: what the drain-safe path avoids. Lowering max_num_running_reqs below
        the running count by hand trips vLLM's assertion in schedule()."""
        sched = self.sched
        sched.pals_reader = None  # PalsScheduler steps aside; plain vLLM behaviour
        self.add(4, 16, lambda i: 50)
        for _ in range(4):
            self.drv.step()
        self.result["naive_running_before"] = len(sched.running)
        sched.max_num_running_reqs = 1
        try:
            sched.schedule()
            self.result["naive_lowering_trips_assert"] = False
        except AssertionError:
            self.result["naive_lowering_trips_assert"] = True


def main() -> None:
    check = Check(sys.argv[1], sys.argv[2])
    for phase in (check.fill, check.state_after_a_step, check.lower, check.admit_under_cap_then_raise,
                  check.channel_latency, check.drain_all, check.naive_lowering):
        phase()
    print("PALS_RESULT " + json.dumps(check.result))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
