"""`PalsScheduler`: vLLM's async scheduler with a batch cap set from outside.

Load it in vLLM with::

    PALS_CAP_CHANNEL=/path/to/cap \\
    python -m vllm.entrypoints.openai.api_server --model ... \\
        --scheduler-cls pals.integrations.vllm_scheduler.PalsScheduler \\
        --max-num-seqs <largest batch cap in the grid>

vLLM imports this class inside its engine-core process. Before each
`schedule()` it polls the cap channel (at most every 50 ms; it costs one clock
read in between) and sets the admission limit:

- vLLM 0.33 and later have `max_num_active_reqs`, an admission limit separate
  from the runner's slot count: lowering it stops admissions and never
  preempts; running requests finish normally.
- Older versions only have `max_num_running_reqs`, which `schedule()` also
  asserts against the running count. The drain-safe path never sets it below
  the running count: it steps down as requests finish, so nothing is preempted
  and the assertion cannot trip.

The scheduler writes back what it applied (the command's sequence number, the
target, the limit set this step, the running and waiting counts) next to the
command file, so the controller can tell the cap took effect. It reports when
a command is applied, when the drain-safe limit steps, and once per command
when the running count has followed the cap (`CapRecord.settled`), stamped with
the engine's own clock: that is the follow time, free of any scrape delay.

It also publishes the engine's true running and waiting queues, KV-cache use
and output counters (`pals.integrations.engine_state`, the file
`<channel>.state`) after each scheduling step and each model output, at most
every poll interval and at once when the engine goes idle or wakes up: vLLM's
own gauges read 0 in most scrapes of a saturated server, and /metrics answers
late on a busy host, while the controller needs the real queues and a token
count it can date.

Environment:
    PALS_CAP_CHANNEL: the command file; unset means a plain AsyncScheduler.
    PALS_SCHEDULER_MODE: auto (default), active or drain; drain forces the
        older path on new vLLM (used by the tests of both paths).
    PALS_CAP_POLL_INTERVAL_S: how often to read the channel (default 0.05).
"""

from __future__ import annotations

import os

from vllm.logger import init_logger
from vllm.v1.core.sched.async_scheduler import AsyncScheduler

from pals.integrations.cap_channel import CapReader, effective_cap, reader_from_env
from pals.integrations.engine_state import StatePublisher, state_path_for

# Under vLLM's logger namespace, so the lines land in vLLM's own log output.
logger = init_logger("vllm.pals_scheduler")

MODE_ENV_VAR = "PALS_SCHEDULER_MODE"
POLL_ENV_VAR = "PALS_CAP_POLL_INTERVAL_S"


class PalsScheduler(AsyncScheduler):
    """AsyncScheduler whose batch cap follows the PALS cap channel."""

    def __init__(self, *args, **kwargs) -> None:
        # vLLM passes keywords that change between releases: forward them all.
        super().__init__(*args, **kwargs)
        self.pals_max_num_seqs = int(self.max_num_running_reqs)
        # vLLM 0.32+ sets this admission limit in Scheduler.__init__; an engine without it
        # (older vLLM, or one that only aliases it) gets the drain-safe path.
        self.pals_has_active_limit = "max_num_active_reqs" in vars(self)
        mode = os.environ.get(MODE_ENV_VAR, "auto").strip().lower()
        if mode not in ("auto", "active", "drain"):
            raise ValueError(f"{MODE_ENV_VAR}={mode!r}: use auto, active or drain")
        if mode == "active" and not self.pals_has_active_limit:
            raise RuntimeError(
                f"{MODE_ENV_VAR}=active needs vLLM 0.33+ (max_num_active_reqs); "
                "this vLLM is older: unset it to use the drain-safe path"
            )
        self.pals_drain_safe = mode == "drain" or not self.pals_has_active_limit
        interval_s = float(os.environ.get(POLL_ENV_VAR, "0.05"))
        self.pals_reader: CapReader | None = reader_from_env(min_interval_s=interval_s)
        self.pals_target_cap = self.pals_max_num_seqs
        self.pals_seq = 0
        self.pals_effective_cap = self.pals_max_num_seqs
        self._pals_last_report: tuple[int, int, int, bool] | None = None
        self._pals_channel_failed = False
        self._pals_running_at_apply = 0
        self._pals_state_failed = False
        self.pals_state: StatePublisher | None = None
        if self.pals_reader is not None:
            parallel = getattr(getattr(self, "vllm_config", None), "parallel_config", None)
            dp_rank = int(getattr(parallel, "data_parallel_rank", 0) or 0)
            dp_size = max(1, int(getattr(parallel, "data_parallel_size", 1) or 1))
            self.pals_state = StatePublisher(state_path_for(self.pals_reader.path, dp_rank), min_interval_s=interval_s,
                                             dp_rank=dp_rank, dp_size=dp_size)
        if self.pals_reader is None:
            logger.warning("PalsScheduler: $PALS_CAP_CHANNEL is unset; the batch cap stays at max_num_seqs")
        else:
            # Apply (and report) at once: a cap written before the engine started
            # holds from the first step, and the report tells the controller
            # max_num_seqs even before any request arrives.
            self.pals_reader.min_interval_s, interval_s = 0.0, self.pals_reader.min_interval_s
            self.pals_update_cap()
            self.pals_reader.min_interval_s = interval_s
            self.pals_publish_state()  # an engine idle from the start says so
            logger.info(
                "PalsScheduler: cap channel %s, %s path, max_num_seqs %d, poll every %.3f s (pid %d)",
                self.pals_reader.path,
                "drain-safe max_num_running_reqs" if self.pals_drain_safe else "max_num_active_reqs",
                self.pals_max_num_seqs,
                interval_s,
                os.getpid(),
            )

    def schedule(self, *args, **kwargs):
        if self.pals_reader is not None:
            self.pals_update_cap()
        out = super().schedule(*args, **kwargs)
        if self.pals_state is not None:
            self.pals_state.step()
            self.pals_publish_state()
        return out

    def update_from_output(self, *args, **kwargs):
        out = super().update_from_output(*args, **kwargs)
        if self.pals_state is not None:
            self.pals_count_outputs(out)
            self.pals_publish_state()  # requests finish here: an engine going idle says so at once
        return out

    def pals_count_outputs(self, engine_outputs) -> None:
        """Count what this step hands to vLLM's front end, as vLLM's own counters do there:
        new token ids (vllm:generation_tokens), the prompt of each finished prefill
        (vllm:prompt_tokens) and requests finished other than by abort or error."""
        generated = prompt = finished = 0
        try:
            for batch in (engine_outputs or {}).values():
                for output in batch.outputs:
                    generated += len(output.new_token_ids or ())
                    stats = getattr(output, "prefill_stats", None)
                    if stats is not None:
                        prompt += int(stats.num_prompt_tokens)
                    reason = output.finish_reason
                    if reason is not None and str(reason) not in ("abort", "error"):
                        finished += 1
        except Exception as exc:  # noqa: BLE001 - counting must never stop the engine
            if not self._pals_state_failed:
                logger.error("PalsScheduler: cannot count this step's outputs (%s)", exc)
                self._pals_state_failed = True
            return
        self.pals_state.count_outputs(generated, prompt, finished)

    def finish_requests(self, *args, **kwargs):
        out = super().finish_requests(*args, **kwargs)
        if self.pals_state is not None:
            self.pals_publish_state()  # aborts (a client gone) can empty the queues without a step
        return out

    def pals_publish_state(self) -> None:
        """Publish the queues and KV use (rate-limited by the publisher); never stops the engine."""
        try:
            kv = float(self.kv_cache_manager.usage)
        except Exception:  # noqa: BLE001 - KV use is optional; the queues matter more
            kv = None
        counts = getattr(self, "get_request_counts", None)  # includes requests waiting on KV transfers
        running, waiting = counts() if counts is not None else (len(self.running), len(self.waiting))
        try:
            self.pals_state.publish(running, waiting, kv, self.pals_effective_cap, self.pals_max_num_seqs)
        except OSError as exc:
            if not self._pals_state_failed:
                logger.error("PalsScheduler: cannot write the engine-state record (%s)", exc)
                self._pals_state_failed = True

    def pals_update_cap(self) -> int:
        """Read the channel (rate-limited), set this step's limit, report it; return the limit."""
        try:
            record = self.pals_reader.poll()
        except OSError as exc:  # a broken channel must never stop the engine
            if not self._pals_channel_failed:
                logger.error("PalsScheduler: cannot read the cap channel (%s); keeping cap %d", exc, self.pals_target_cap)
                self._pals_channel_failed = True
            record = None
        running = len(self.running)
        if record is not None:
            self.pals_target_cap = record.cap
            self.pals_seq = record.seq
            self._pals_running_at_apply = running
        limit = effective_cap(self.pals_target_cap, running, self.pals_max_num_seqs, self.pals_drain_safe)
        if self.pals_drain_safe:
            # Older vLLM admits against max_num_running_reqs and asserts
            # len(running) <= it; limit >= running keeps that true.
            self.max_num_running_reqs = limit
            if self.pals_has_active_limit:
                # On 0.33+ forced into this path, admission reads max_num_active_reqs.
                self.max_num_active_reqs = limit
        else:
            self.max_num_active_reqs = limit
        self.pals_effective_cap = limit
        waiting = len(self.waiting)
        settled = running <= self.pals_target_cap and (running == self.pals_target_cap or waiting == 0)
        last = self._pals_last_report
        # Once settled for this command, later flips (a request finishing) are not news.
        if last is not None and last[:3] == (self.pals_seq, self.pals_target_cap, limit) and last[3]:
            settled = True
        report = (self.pals_seq, self.pals_target_cap, limit, settled)
        if report != last:
            try:
                self.pals_reader.report_applied(
                    self.pals_seq, self.pals_target_cap, limit, running, self.pals_max_num_seqs, waiting,
                    self._pals_running_at_apply,
                )
                self._pals_last_report = report
            except OSError as exc:
                if not self._pals_channel_failed:
                    logger.error("PalsScheduler: cannot write the applied report (%s)", exc)
                    self._pals_channel_failed = True
        return limit
