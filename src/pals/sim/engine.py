"""A vLLM-like continuous-batching engine on a virtual clock (one replica).

What it copies from vLLM's V1 scheduler (0.33; docs/calibration.md §9):

- FIFO waiting queue. Each step first serves the running requests (one token
  per decoding sequence, then prefill chunks of requests still prefilling),
  then admits waiting requests while the token budget, the batch cap and the
  KV cache allow.
- Chunked prefill with a per-step token budget (`max_num_batched_tokens`);
  decode tokens count against it.
- The batch cap (max running sequences) can change at any moment. Lowering it
  only stops admissions (like `max_num_active_reqs`): running requests drain,
  none is preempted or lost.
- KV cache in tokens. A request is admitted only if its whole prompt fits
  beside what running requests hold and still have to prefill. When decode
  growth would overflow the cache, the newest running request is preempted
  back to the front of the queue and later recomputed (prompt plus the tokens
  it already generated); its generated tokens are kept, never produced twice.

Time and energy: a step is costed by `StepModel.cost(shape, power_cap_w)` when
it is scheduled; its tokens appear when it ends. Power is piecewise constant
(one value per step, idle power between steps), and energy is accumulated
exactly as power x time per segment. A power-cap change in the middle of a
step re-costs the rest of that step at the new cap.

Speed: the hot loop uses plain Python lists and ints (numpy slot arrays were
3-4x slower in the feasibility prototype, docs/calibration.md §7). Aggregates (decoding sequences,
their summed context, KV use) are kept incrementally, and each decoding
request's finishing step is known when its decode starts (one token per step,
every step), so a step costs O(prefilling + admitted + finishing requests),
not O(batch).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterator

from pals.errors import ConfigError
from pals.sim.step import StepShape
from pals.sim.workload import Request


def _check_sizes(kv_cache_tokens: int, batch_cap_max: int, max_num_batched_tokens: int) -> None:
    """Raise ConfigError for an engine that could not run (vLLM refuses the same settings)."""
    if batch_cap_max < 1:
        raise ConfigError(f"batch_cap_max must be at least 1, got {batch_cap_max}")
    if max_num_batched_tokens < batch_cap_max:
        raise ConfigError(
            f"max_num_batched_tokens ({max_num_batched_tokens}) must be >= batch_cap_max "
            f"({batch_cap_max}), as vLLM requires; raise max_num_batched_tokens"
        )
    if kv_cache_tokens < 1:
        raise ConfigError(
            f"KV cache holds {kv_cache_tokens} tokens: the model does not fit; use a larger TP degree or GPU"
        )


class Engine:
    """One engine replica (one TP group) with continuous batching.

    Args:
        step_model: object with `cost(StepShape, power_cap_w) -> StepCost` and
            `idle_power_w` (pals.sim.step.StepModel).
        kv_cache_tokens: KV-cache capacity of this replica, tokens.
        batch_cap: initial max running sequences.
        batch_cap_max: largest batch cap accepted (vLLM's `max_num_seqs`).
        power_cap_w: initial power limit per GPU, W.
        max_num_batched_tokens: per-step token budget (decode + prefill).
        start_s: virtual time the engine starts at, s.
        source: closed-loop request source (an iterator of `Request`); when
            given, the engine pulls from it to keep `min_waiting` requests queued.
        min_waiting: queue depth kept in closed loop.
        record_segments: keep a log of (start_s, end_s, gpu_power_w) power
            segments (for tests; costs memory on long runs).
        cost_fn: what costs a step, `(shape, power_cap_w) -> StepCost`
            (default `step_model.cost`; e.g. `PowerLimiter(step_model).run`
            for the long-window limiter).
    """

    def __init__(
        self,
        step_model: Any,
        *,
        kv_cache_tokens: int,
        batch_cap: int,
        batch_cap_max: int,
        power_cap_w: float,
        max_num_batched_tokens: int = 2048,
        start_s: float = 0.0,
        source: Iterator[Request] | None = None,
        min_waiting: int = 0,
        record_segments: bool = False,
        cost_fn: Callable[[StepShape, float], Any] | None = None,
    ) -> None:
        _check_sizes(kv_cache_tokens, batch_cap_max, max_num_batched_tokens)
        self._model = step_model
        self._cost = step_model.cost if cost_fn is None else cost_fn
        self._idle_w = float(step_model.idle_power_w)
        self._kv_cap = int(kv_cache_tokens)
        self.batch_cap_max = int(batch_cap_max)
        self._max_tokens = int(max_num_batched_tokens)
        self._batch_cap = 1
        self.set_batch_cap(batch_cap)
        self._power_cap_w = float(power_cap_w)
        self._source = source
        self._min_waiting = int(min_waiting) if source is not None else 0
        self._init_request_state()
        self._init_step_state(start_s, record_segments)
        self._init_counters_and_logs()
        if source is not None:
            self._try_start(self._now_s)

    def _init_request_state(self) -> None:
        """Per-request state, the queues, and the aggregates kept incrementally over them."""
        # Per-request state, indexed by request id (plain lists: fast in CPython).
        self._r_arrival: list[float] = []
        self._r_prompt: list[int] = []
        self._r_output: list[int] = []
        self._r_target: list[int] = []  # tokens to prefill (prompt, or prompt+generated after preemption)
        self._r_computed: list[int] = []  # prefill progress
        self._r_gen: list[int] = []  # generated tokens (exact unless decoding: see _gen_now)
        self._r_first: list[float] = []  # first-token time, -1 before
        self._r_dref: list[int] = []  # step count when decode started
        self._r_gbase: list[int] = []  # generated tokens when decode started
        self._r_epoch: list[int] = []  # bumped on preemption: stale finish events are ignored

        self._waiting: deque[int] = deque()
        self._running: list[int] = []  # admission order: the last one is the newest
        self._prefilling: list[int] = []  # running requests still prefilling, admission order
        self._finish_at: dict[int, list[tuple[int, int]]] = {}  # step index -> [(rid, epoch)]

        self._n_decode = 0  # running requests in decode
        self._dec_ctx = 0  # sum of their KV lengths
        self._kv_used = 0  # KV tokens held by running requests
        self._kv_reserved = 0  # prompt tokens admitted but not yet prefilled

    def _init_step_state(self, start_s: float, record_segments: bool) -> None:
        """The in-flight step, the virtual clock and the power segments (needs the knobs set)."""
        self._steps = 0
        self._busy = False
        self._step_end_s = 0.0
        self._pace_start_s = 0.0  # when the in-flight step last (re)started its pace
        self._step_left = 1.0  # fraction of the in-flight step left at _pace_start_s
        self._shape: StepShape | None = None
        self._step_ndec = 0
        self._step_chunks: list[int] = []  # rids whose chunk completes their prefill in this step
        self.last_cost: Any = None

        self._now_s = float(start_s)
        self._energy_j = 0.0  # per GPU, up to _seg_start_s
        self._seg_start_s = float(start_s)
        self._seg_power_w = min(self._idle_w, self._power_cap_w)
        self.segments: list[tuple[float, float, float]] | None = [] if record_segments else None

    def _init_counters_and_logs(self) -> None:
        """Cumulative counters and the time-ordered event logs the node computes windows over."""
        # Counters (cumulative).
        self.generated_tokens_total = 0
        self.prompt_tokens_total = 0
        self.prefill_tokens_total = 0  # prefill work done, recomputation included
        self.finished_total = 0
        self.preemptions_total = 0
        self.rejected_total = 0
        self.submitted_total = 0

        # Event logs, in time order (the node computes windows over them).
        self.arrival_log_s: list[float] = []
        self.arrival_log_prompt: list[int] = []
        self.first_token_log_s: list[float] = []
        self.ttft_log_s: list[float] = []
        self.finish_log_s: list[float] = []
        self.finish_log_e2e_s: list[float] = []
        self.tpot_log_time_s: list[float] = []  # finish times of requests with > 1 output token
        self.tpot_log_s: list[float] = []  # their time per output token after the first
        self.finish_log_output: list[int] = []
        self.finish_log_prompt: list[int] = []

    # ------------------------------------------------------------------ knobs

    @property
    def batch_cap(self) -> int:
        """Max running sequences; admissions stop while running >= this."""
        return self._batch_cap

    def set_batch_cap(self, batch_cap: int) -> None:
        """Change the batch cap now. Lowering it lets running requests drain."""
        if not 1 <= batch_cap <= self.batch_cap_max:
            raise ConfigError(f"batch cap {batch_cap} is outside 1-{self.batch_cap_max}")
        self._batch_cap = int(batch_cap)

    @property
    def power_cap_w(self) -> float:
        return self._power_cap_w

    def set_power_cap_w(self, power_cap_w: float) -> None:
        """Change the per-GPU power limit now; the rest of an in-flight step is re-costed."""
        power_cap_w = float(power_cap_w)
        if power_cap_w == self._power_cap_w:
            return
        self._power_cap_w = power_cap_w
        now = self._now_s
        if self._busy:
            span = self._step_end_s - self._pace_start_s
            done = (now - self._pace_start_s) / span if span > 0 else 1.0
            left = self._step_left * max(0.0, 1.0 - done)
            cost = self._cost(self._shape, power_cap_w)
            self.last_cost = cost
            self._pace_start_s = now
            self._step_left = left
            self._step_end_s = now + left * cost.time_s
            self._switch(now, cost.gpu_power_w)
        else:
            self._switch(now, min(self._idle_w, power_cap_w))

    # --------------------------------------------------------------- readings

    @property
    def now_s(self) -> float:
        return self._now_s

    @property
    def power_w(self) -> float:
        """True power per GPU at `now_s`. Units: W."""
        return self._seg_power_w

    @property
    def energy_j(self) -> float:
        """Exact energy per GPU since start, up to `now_s`. Units: J."""
        return self._energy_j + self._seg_power_w * (self._now_s - self._seg_start_s)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def outstanding(self) -> int:
        """Requests admitted to the engine and not finished (running + waiting)."""
        return len(self._running) + len(self._waiting)

    @property
    def kv_cache_tokens(self) -> int:
        return self._kv_cap

    @property
    def kv_cache_usage(self) -> float:
        """Fraction of KV-cache tokens held by running requests (0-1)."""
        return self._kv_used / self._kv_cap

    @property
    def steps_total(self) -> int:
        return self._steps

    def generated_of(self, rid: int) -> int:
        """Tokens generated so far by request `rid` (as of the last finished step)."""
        if self._r_dref[rid] >= 0:
            return self._r_gbase[rid] + self._steps - self._r_dref[rid]
        return self._r_gen[rid]

    def output_of(self, rid: int) -> int:
        return self._r_output[rid]

    # ------------------------------------------------------------------ input

    def submit(self, request: Request, arrival_s: float | None = None) -> int:
        """Queue a request at the engine's current time; returns its id (-1 if rejected).

        A request whose prompt plus output can never fit in the KV cache is
        rejected (counted in `rejected_total`), as vLLM rejects requests over
        its maximum model length.
        """
        t = self._now_s if arrival_s is None else arrival_s
        self.submitted_total += 1
        self.arrival_log_s.append(t)
        self.arrival_log_prompt.append(request.prompt_tokens)
        if request.prompt_tokens + request.output_tokens > self._kv_cap:
            self.rejected_total += 1
            return -1
        rid = len(self._r_prompt)
        self._r_arrival.append(t)
        self._r_prompt.append(request.prompt_tokens)
        self._r_output.append(request.output_tokens)
        self._r_target.append(request.prompt_tokens)
        self._r_computed.append(0)
        self._r_gen.append(0)
        self._r_first.append(-1.0)
        self._r_dref.append(-1)
        self._r_gbase.append(0)
        self._r_epoch.append(0)
        self._waiting.append(rid)
        if not self._busy and arrival_s is None:
            self._try_start(self._now_s)
        return rid

    # ------------------------------------------------------------------- time

    def advance_to(self, t_s: float) -> None:
        """Run every step that ends by `t_s`; the clock then reads `t_s`.

        The step in flight at `t_s` (if any) has started and its energy is
        counted pro rata; its tokens appear when it ends.
        """
        if t_s <= self._now_s:
            return
        while self._busy and self._step_end_s <= t_s:
            end_s = self._step_end_s
            self._commit(end_s)
            self._busy = False
            if not self._try_start(end_s):
                self._switch(end_s, min(self._idle_w, self._power_cap_w))
        self._now_s = t_s

    # -------------------------------------------------------------- internals

    def _switch(self, t_s: float, power_w: float) -> None:
        """Close the current power segment at `t_s` and open one at `power_w`."""
        if self.segments is not None and t_s > self._seg_start_s:
            self.segments.append((self._seg_start_s, t_s, self._seg_power_w))
        self._energy_j += self._seg_power_w * (t_s - self._seg_start_s)
        self._seg_start_s = t_s
        self._seg_power_w = power_w

    def _preempt_newest(self) -> None:
        """Send the newest running request back to the queue front, to be recomputed."""
        rid = self._running.pop()
        if self._r_dref[rid] >= 0:  # decoding
            elapsed = self._steps - self._r_dref[rid]
            kv = self._r_target[rid] + elapsed
            gen = self._r_gbase[rid] + elapsed
            self._n_decode -= 1
            self._dec_ctx -= kv
            self._kv_used -= kv
            self._r_gen[rid] = gen
            self._r_dref[rid] = -1
            self._r_target[rid] = self._r_prompt[rid] + gen
        else:  # still prefilling
            self._prefilling.remove(rid)
            self._kv_used -= self._r_computed[rid]
            self._kv_reserved -= self._r_target[rid] - self._r_computed[rid]
            self._r_target[rid] = self._r_prompt[rid] + self._r_gen[rid]
        self._r_computed[rid] = 0
        self._r_epoch[rid] += 1
        self._waiting.appendleft(rid)
        self.preemptions_total += 1

    def _try_start(self, start_s: float) -> bool:
        """Schedule one step at `start_s`; False when there is no work."""
        waiting = self._waiting
        if self._source is not None:
            source = self._source
            while len(waiting) < self._min_waiting:
                self.submit(next(source), arrival_s=start_s)
        running = self._running
        if not running and not waiting:
            return False
        kv_cap = self._kv_cap
        n_dec = self._n_decode
        # Decode growth: every decoding sequence needs one more KV slot this step.
        while self._kv_used + self._kv_reserved + n_dec > kv_cap and running:
            self._preempt_newest()
            n_dec = self._n_decode
        budget = self._max_tokens - n_dec
        comp = self._r_computed
        target = self._r_target
        completing = []
        pf_tokens = 0
        pf_ctx = 0
        for rid in self._prefilling:
            if budget <= 0:
                break
            c = comp[rid]
            n = target[rid] - c
            if n > budget:
                n = budget
            else:
                completing.append(rid)
            comp[rid] = c + n
            pf_tokens += n
            pf_ctx += n * c + (n * (n + 1) >> 1)
            budget -= n
        if budget > 0 and waiting:
            cap = self._batch_cap
            prefilling = self._prefilling
            reserved = self._kv_reserved
            held = self._kv_used + n_dec
            while waiting and budget > 0 and len(running) < cap:
                rid = waiting[0]
                need = target[rid]
                if held + reserved + need > kv_cap:
                    break
                waiting.popleft()
                running.append(rid)
                prefilling.append(rid)
                reserved += need
                n = need if need <= budget else budget
                if n == need:
                    completing.append(rid)
                comp[rid] = n
                pf_tokens += n
                pf_ctx += n * (n + 1) >> 1
                budget -= n
            self._kv_reserved = reserved
            if self._source is not None:  # top up again so the queue never looks short
                source = self._source
                while len(waiting) < self._min_waiting:
                    self.submit(next(source), arrival_s=start_s)
        if pf_tokens:
            self._kv_used += pf_tokens
            self._kv_reserved -= pf_tokens
            self.prefill_tokens_total += pf_tokens
        shape = StepShape(n_dec, self._dec_ctx + n_dec, pf_tokens, pf_ctx)
        cost = self._cost(shape, self._power_cap_w)
        self.last_cost = cost
        self._shape = shape
        self._step_ndec = n_dec
        self._step_chunks = completing
        self._busy = True
        self._pace_start_s = start_s
        self._step_left = 1.0
        self._step_end_s = start_s + cost.time_s
        self._switch(start_s, cost.gpu_power_w)
        return True

    def _commit(self, t_s: float) -> None:
        """Finish the in-flight step at `t_s`: emit tokens, start decodes, retire requests."""
        step = self._steps
        self._steps = step + 1
        n_dec = self._step_ndec
        if n_dec:
            self._kv_used += n_dec
            self._dec_ctx += n_dec
            self.generated_tokens_total += n_dec
        events = self._finish_at.pop(step, None)
        if events:
            epoch = self._r_epoch
            for rid, ep in events:
                if epoch[rid] == ep:
                    kv = self._r_target[rid] + step + 1 - self._r_dref[rid]
                    self._n_decode -= 1
                    self._dec_ctx -= kv
                    self._finish(rid, t_s, kv)
        if self._step_chunks:
            for rid in self._step_chunks:
                self._prefilling.remove(rid)
                gen = self._r_gen[rid] + 1
                self._r_gen[rid] = gen
                self.generated_tokens_total += 1
                if self._r_first[rid] < 0.0:
                    self._r_first[rid] = t_s
                    self.prompt_tokens_total += self._r_prompt[rid]
                    self.first_token_log_s.append(t_s)
                    self.ttft_log_s.append(t_s - self._r_arrival[rid])
                out = self._r_output[rid]
                kv = self._r_target[rid]
                if gen >= out:
                    self._finish(rid, t_s, kv)
                else:
                    self._n_decode += 1
                    self._dec_ctx += kv
                    self._r_dref[rid] = step + 1
                    self._r_gbase[rid] = gen
                    key = step + out - gen
                    bucket = self._finish_at.get(key)
                    if bucket is None:
                        self._finish_at[key] = [(rid, self._r_epoch[rid])]
                    else:
                        bucket.append((rid, self._r_epoch[rid]))

    def _finish(self, rid: int, t_s: float, kv: int) -> None:
        self._running.remove(rid)
        self._kv_used -= kv
        out = self._r_output[rid]
        self._r_gen[rid] = out
        self._r_dref[rid] = -1
        self.finished_total += 1
        first = self._r_first[rid]
        self.finish_log_s.append(t_s)
        self.finish_log_e2e_s.append(t_s - self._r_arrival[rid])
        if out > 1:
            self.tpot_log_time_s.append(t_s)
            self.tpot_log_s.append((t_s - first) / (out - 1))
        self.finish_log_output.append(out)
        self.finish_log_prompt.append(self._r_prompt[rid])
