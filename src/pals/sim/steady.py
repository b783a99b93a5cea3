"""Steady-state estimates of a deployment from the step model alone (no engine run): fast enough to fit.

Two regimes, each the mean of a few step shapes (docs/simulator.md, "Steady-state estimates"):

- `continuous_steady_state`: vLLM-style continuous batching under a saturating load (requests always
  waiting), batch cap B, mean prompt P and output O tokens, per-step token budget T. In steady state
  a = B / (O - 1 + s_p) requests are admitted per step (s_p: steps a prompt spans), so each step
  decodes d = a (O - 1) sequences of mean context P + O/2, and a share f of the steps also carries a
  prefill chunk of L = min(T - d, max(P, a P)) tokens (f = a P / L). Time, energy and tokens are the
  f-weighted mix of a decode-only and a prefill-carrying step; throughput = a O / mean step time,
  TPOT = mean step time. Compared with `SimNode` runs in tests/sim/test_steady.py (within 5-10 %).
- `static_batch`: one prefill of B x P tokens, then O - 1 decode steps at batch B with the context
  growing from P (what Splitwise's profiling did). TTFT = prefill time, TPOT = mean decode step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pals.errors import ConfigError
from pals.sim.step import StepModel, StepShape

_DECODE_SAMPLES = 8
"""Decode steps evaluated per static batch (midpoints of equal context segments; step time is near-linear in
the context, so 8 points are exact to well under 1 %)."""


@dataclass(frozen=True)
class SteadyState:
    """Mean behaviour of one replica (TP group) at one configuration."""

    throughput_tps: float
    """Output tokens per second of the replica. Units: tokens/s."""
    gpu_power_w: float
    """Mean power of each GPU of the replica. Units: W."""
    tpot_s: float
    """Mean time per output token after the first (inter-token latency). Units: s."""
    ttft_s: float
    """Time to first token (static batch: the batch's prefill; NaN under a saturating queue). Units: s."""
    batch: float
    """Sequences running on average (continuous: min(batch cap, what the KV cache holds))."""
    prefill_step_share: float
    """Share of steps carrying a prefill chunk (static: 1 / steps)."""
    prefill_power_w: float = math.nan
    """Static batch: mean power of each GPU during the prefill. Units: W."""


def _interp_cost(model: StepModel, decode: float, context_per_seq: float, prefill: int, prefill_ctx: int,
                 cap_w: float) -> tuple[float, float]:
    """(time_s, energy_j) of a step with a fractional number of decoding sequences (linear between integers)."""
    lo = math.floor(decode)
    frac = decode - lo
    points = [(lo, 1.0 - frac)] + ([(lo + 1, frac)] if frac > 1e-9 else [])
    time_s = energy_j = 0.0
    for count, weight in points:
        if count == 0 and prefill == 0:
            continue  # an empty step takes no time
        cost = model.cost(StepShape(count, int(round(count * context_per_seq)), prefill, prefill_ctx), cap_w)
        time_s += weight * cost.time_s
        energy_j += weight * cost.energy_j
    return time_s, energy_j


def continuous_steady_state(model: StepModel, *, batch_cap: int, prompt_tokens: float, output_tokens: float,
                            power_cap_w: float, max_num_batched_tokens: int,
                            kv_cache_tokens: int | None = None) -> SteadyState:
    """Continuous batching under a saturating load (see the module docstring).

    Raises:
        ConfigError: non-positive lengths or batch cap, or a budget below the batch cap.
    """
    if batch_cap < 1 or prompt_tokens < 1 or output_tokens < 1:
        raise ConfigError(f"steady state needs batch_cap, prompt and output tokens >= 1, got {batch_cap}, "
                          f"{prompt_tokens}, {output_tokens}")
    if max_num_batched_tokens < batch_cap:
        raise ConfigError(f"max_num_batched_tokens {max_num_batched_tokens} is below the batch cap {batch_cap}")
    p, o, budget = float(prompt_tokens), float(output_tokens), float(max_num_batched_tokens)
    kv = model.kv_cache_tokens() if kv_cache_tokens is None else kv_cache_tokens
    running = float(min(batch_cap, max(1.0, kv / (p + 0.5 * o))))
    # Fixed point for the steps a prompt spans (1 unless the prompt exceeds the budget left by decodes).
    spans = 1.0
    for _ in range(20):
        admitted = min(running / (o - 1.0 + spans), budget / (p + o - 1.0))
        decode = admitted * (o - 1.0)
        room = max(budget - decode, 1.0)
        new_spans = max(1.0, p / room)
        if abs(new_spans - spans) < 1e-6:
            break
        spans = new_spans
    chunk = min(room, max(p, admitted * p))
    share = min(1.0, admitted * p / chunk)
    context = p + 0.5 * o
    chunk_tokens = max(1, int(round(chunk)))
    chunk_ctx = int(round(chunk_tokens * (p + 1.0) / 2.0))  # a prompt token attends to (P + 1) / 2 on average
    t_pf, e_pf = _interp_cost(model, decode, context, chunk_tokens, chunk_ctx, power_cap_w)
    t_dec, e_dec = _interp_cost(model, decode, context, 0, 0, power_cap_w)
    step_s = share * t_pf + (1.0 - share) * t_dec
    energy_j = share * e_pf + (1.0 - share) * e_dec
    return SteadyState(
        throughput_tps=admitted * o / step_s,
        gpu_power_w=energy_j / step_s,
        tpot_s=step_s,
        ttft_s=math.nan,
        batch=decode + admitted * spans,
        prefill_step_share=share,
    )


def static_batch(model: StepModel, *, batch: int, prompt_tokens: int, output_tokens: int,
                 power_cap_w: float) -> SteadyState:
    """One prefill of batch x prompt tokens, then output - 1 decode steps at that batch (see the module docstring).

    Raises:
        ConfigError: non-positive batch or lengths.
    """
    if batch < 1 or prompt_tokens < 1 or output_tokens < 1:
        raise ConfigError(f"static batch needs batch, prompt and output tokens >= 1, got {batch}, "
                          f"{prompt_tokens}, {output_tokens}")
    b, p, o = int(batch), int(prompt_tokens), int(output_tokens)
    prefill = model.cost(StepShape(0, 0, b * p, b * (p * (p + 1) // 2)), power_cap_w)
    time_s, energy_j = prefill.time_s, prefill.energy_j
    steps = o - 1
    decode_s = 0.0
    if steps > 0:
        samples = min(_DECODE_SAMPLES, steps)
        width = steps / samples
        for k in range(samples):
            generated = 1 + (k + 0.5) * width  # mean tokens generated so far in this segment
            cost = model.cost(StepShape(b, int(round(b * (p + generated))), 0, 0), power_cap_w)
            decode_s += width * cost.time_s
            energy_j += width * cost.energy_j
    time_s += decode_s
    return SteadyState(
        throughput_tps=b * o / time_s,
        gpu_power_w=energy_j / time_s,
        tpot_s=decode_s / steps if steps > 0 else math.nan,
        ttft_s=prefill.time_s,
        batch=float(b),
        prefill_step_share=1.0 / (steps + 1),
        prefill_power_w=prefill.gpu_power_w,
    )
