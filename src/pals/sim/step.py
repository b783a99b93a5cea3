"""Cost and power of one engine step on one GPU of a tensor-parallel group, under a power cap.

The model is the one of docs/calibration.md §6 as prototyped and tuned in its §7
(docs/simulator.md has the equations in words):

- Work per GPU per layer: dense linears (attention projections, router, shared experts or the dense
  FFN), the routed experts actually touched by the step's tokens, attention over the KV cache, and
  the LM head once per step. Each operator takes max(compute time, memory time) (a roofline with
  measured efficiencies); compute time scales with the SM clock, memory time too when
  `Mechanisms.bandwidth_scales_with_clock`.
- A kernel-launch floor per layer, TP all-reduces / EP all-to-alls (independent of the clock), and a
  CPU overhead per step.
- Power: always-on + SM dynamic power x g(f) x activity + HBM power x bytes moved + NCCL spin
  power during collectives. g(f) = x * v(x)^2 with a flat voltage floor below a knee.
- A power cap picks the two supported clocks around it and mixes them so that the step's mean power equals the cap
  (the limiter dithers between clock states).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pals.errors import ConfigError
from pals.core.power import NodePowerModel
from pals.sim.hardware import GpuSpec
from pals.sim.llm import LlmSpec
from pals.sim.physics import Mechanisms, PhysicsParams

__all__ = ["Mechanisms", "PhysicsParams", "PowerLimiter", "StepCost", "StepModel", "StepShape"]

_BF16 = 2
_CACHE_MAX_ENTRIES = 500_000


@dataclass(frozen=True)
class StepShape:
    """What one engine step processes (per TP group, i.e. per engine replica)."""

    decode_seqs: int
    """Sequences producing one token this step."""
    decode_context_tokens: int
    """Sum over decoding sequences of their context length (KV entries read)."""
    prefill_tokens: int
    """Prompt tokens processed this step (chunked prefill)."""
    prefill_context_tokens: int
    """Sum over those prefill tokens of the context each attends to (attention FLOPs)."""

    @property
    def tokens(self) -> int:
        """Tokens through the linear layers this step."""
        return self.decode_seqs + self.prefill_tokens


@dataclass(frozen=True)
class StepCost:
    """Duration and power of one step, per GPU of the TP group."""

    time_s: float
    gpu_power_w: float
    """Average power of each GPU over the step. Units: W."""
    sm_clock_mhz: float
    compute_s: float
    """Time in compute-bound operators."""
    memory_s: float
    """Time in memory-bound operators."""
    comm_s: float
    """Time in collectives (TP all-reduce, EP all-to-all)."""
    overhead_s: float
    """CPU overhead plus kernel-launch-floor time beyond the operators' roofline time."""
    cap_binding: bool
    """True when the cap lowered the clock below its maximum."""
    throttled: bool = False
    """True when even the lowest clock did not fit under the cap: time was stretched so power equals the cap."""

    @property
    def energy_j(self) -> float:
        """Energy of one GPU over the step. Units: J."""
        return self.gpu_power_w * self.time_s


def _bucket(value: int, bits: int) -> int:
    """Quantize a count to `bits` significant bits (exact below 2**bits), returning the bucket's middle."""
    if value < (1 << bits):
        return value
    shift = value.bit_length() - bits
    return ((value >> shift) << shift) | (1 << (shift - 1))


def _small_divisors(n: int, limit: int = 8) -> list[int]:
    return [d for d in range(1, limit + 1) if n % d == 0]


class StepModel:
    """Per-step time and power of one GPU in a TP group of `tp` GPUs serving `llm`.

    Results are memoized per instance on a quantized shape (decode context to 6 significant bits,
    prefill tokens 8, prefill context 5: under 1 % error in step time) and the cap floored to 0.25 W,
    so the returned power never exceeds the cap given.

    Args:
        llm: the model.
        gpu: the GPU.
        tp: tensor-parallel degree; must divide the attention heads.
        ep: expert-parallel degree; 1, or a multiple of `tp` dividing the routed experts. With ep > 1 the
            routed experts are spread whole over `ep` GPUs (ep / tp replicas exchanging tokens by all-to-all).
        mechanisms: switches, see `Mechanisms`.
        params: tunables, see `PhysicsParams` (None: the GPU preset's `gpu.physics`; `load_physics` gives a
            calibrated set).

    Raises:
        ConfigError: TP/EP that do not divide the model, or weights that do not fit.
    """

    def __init__(self, llm: LlmSpec, gpu: GpuSpec, tp: int = 1, ep: int = 1,
                 mechanisms: Mechanisms = Mechanisms(), params: PhysicsParams | None = None) -> None:
        self.llm = llm
        self.gpu = gpu
        self.tp = tp
        self.ep = ep
        self.mechanisms = mechanisms
        self.params = params if params is not None else gpu.physics
        self._validate()
        self.idle_power_w: float = gpu.idle_context_w
        """Per GPU, context and weights loaded, no work. Units: W."""
        self._setup_constants()
        self._cache: dict[tuple, StepCost] = {}
        self._clock_cache: dict[tuple, StepCost] = {}

    # ------------------------------------------------------------------ validation

    def _validate(self) -> None:
        llm, gpu, tp, ep = self.llm, self.gpu, self.tp, self.ep
        heads_hint = ", ".join(map(str, _small_divisors(llm.num_heads)))
        if not isinstance(tp, int) or tp < 1:
            raise ConfigError(f"TP must be a positive integer, got {tp!r}; use {heads_hint}")
        if llm.num_heads % tp:
            raise ConfigError(f"TP {tp} does not divide {llm.name}'s {llm.num_heads} attention heads; use {heads_hint}")
        if not isinstance(ep, int) or ep < 1:
            raise ConfigError(f"EP must be a positive integer, got {ep!r}")
        if ep > 1:
            if not llm.is_moe:
                raise ConfigError(f"EP {ep} needs an MoE model; {llm.name} is dense, use EP 1")
            if llm.num_experts % ep:
                hint = ", ".join(str(d) for d in range(1, llm.num_experts + 1) if llm.num_experts % d == 0 and d <= 16)
                raise ConfigError(f"EP {ep} does not divide {llm.name}'s {llm.num_experts} routed experts; use {hint}")
            if ep % tp:
                raise ConfigError(f"EP {ep} must be a multiple of TP {tp} (an EP group is whole TP groups)")
        usable = 0.9 * gpu.memory_bytes - self.params.activation_reserve_bytes
        if self._weights_per_gpu(tp, ep) > usable:
            fitting = [t for t in _small_divisors(llm.num_heads, 64)
                       if t > tp and self._weights_per_gpu(t, max(ep, t) if ep > 1 else 1) <= usable]
            fix = f"use TP {fitting[0]} or more" if fitting else "it does not fit at any TP; use a larger GPU"
            raise ConfigError(
                f"{llm.name} ({llm.weight_bytes / 1e9:.1f} GB of BF16 weights) does not fit on {tp} x {gpu.name} "
                f"at TP {tp}, EP {ep} ({self._weights_per_gpu(tp, ep) / 1e9:.1f} GB per GPU, "
                f"{usable / 1e9:.1f} GB usable); {fix}"
            )

    def _weights_per_gpu(self, tp: int, ep: int) -> float:
        llm = self.llm
        expert_bytes = llm.num_moe_layers * llm.num_experts * llm.expert_params * _BF16
        other_bytes = llm.weight_bytes - expert_bytes
        return other_bytes / tp + expert_bytes / (ep if ep > 1 else tp)

    # ------------------------------------------------------------------ constants

    def _setup_constants(self) -> None:
        gpu, p, m = self.gpu, self.params, self.mechanisms
        eta_c = p.eta_compute if p.eta_compute is not None else gpu.eta_compute
        eta_m = p.eta_memory if p.eta_memory is not None else gpu.eta_memory
        self._sec_per_flop = 1.0 / (eta_c * gpu.peak_bf16_flops)
        self._sec_per_attn_flop = 1.0 / (p.eta_attention * gpu.peak_bf16_flops)
        self._sec_per_byte = 1.0 / (eta_m * gpu.hbm_bandwidth_bytes_per_s)
        self._p_sm_w = p.sm_power_frac_tdp * gpu.tdp_w
        # Always-on power while steps run at full clock: the busy floor (or, switched off, the idle-with-context
        # level). Between steps the engine draws idle_context_w (`idle_power_w`).
        self._p_busy_w = max(p.busy_floor_frac_tdp * gpu.tdp_w, gpu.idle_bare_w) if m.busy_floor else gpu.idle_context_w
        self._p_hbm_w = p.hbm_power_frac_tdp * gpu.tdp_w
        self._k_m = p.mem_sm_activity
        self._spin = p.spin_power_frac if m.collective_spin_power else 0.0
        self._ar_latency_s = p.allreduce_latency_s if p.allreduce_latency_s is not None else gpu.allreduce_latency_s
        self._clock_grid_mhz = gpu.clock_grid_mhz()
        self._grid = [self._clock_terms(c) for c in self._clock_grid_mhz]

    def _clock_terms(self, clock_mhz: float) -> tuple[float, float, float, float, float]:
        """(clock_mhz, x, g(x), b(x), always-on W) for one clock."""
        p = self.params
        x = clock_mhz / self.gpu.max_sm_clock_mhz
        if x <= p.voltage_knee:
            v = p.voltage_floor
        else:
            v = p.voltage_floor + (1.0 - p.voltage_floor) * (x - p.voltage_knee) / (1.0 - p.voltage_knee)
        g = x * v * v
        b = min(1.0, x / p.bandwidth_knee) if self.mechanisms.bandwidth_scales_with_clock else 1.0
        always_on_w = self.gpu.idle_bare_w + (self._p_busy_w - self.gpu.idle_bare_w) * g
        return clock_mhz, x, g, b, always_on_w

    # ------------------------------------------------------------------ work of one step

    def _work(self, decode_seqs: int, decode_ctx: int, prefill: int, prefill_ctx: int):
        """Clock-independent description of a step: layer groups of (count, [(C, M)], floor_s), the LM head's
        (C, M), HBM bytes-time, collective time and CPU time. C and M are seconds at full clock / bandwidth."""
        llm, tp, ep, p = self.llm, self.tp, self.ep, self.params
        spf, spa, spb = self._sec_per_flop, self._sec_per_attn_flop, self._sec_per_byte
        n = decode_seqs + prefill
        n_logits = decode_seqs + (1 if prefill else 0)
        q_dim_gpu = llm.num_heads * llm.head_dim / tp
        kv_dim_gpu = max(1.0, llm.num_kv_heads / tp) * llm.head_dim
        # Attention: decode reads each context token's K and V; prefill is compute (flash attention) plus KV writes.
        attn_flops = 4.0 * q_dim_gpu * (decode_ctx + prefill_ctx)
        attn_bytes = 2.0 * kv_dim_gpu * _BF16 * (decode_ctx + n)
        attention = (attn_flops * spa, attn_bytes * spb)

        groups = []
        hbm_time = attention[1] * llm.num_layers
        if llm.num_dense_layers:
            params = llm.dense_layer_params
            lin = (2.0 * n * params / tp * spf, _BF16 * params / tp * spb)
            floor = p.kernels_per_dense_layer * p.kernel_floor_s if self.mechanisms.kernel_launch_floor else 0.0
            groups.append((llm.num_dense_layers, (lin, attention), floor))
            hbm_time += lin[1] * llm.num_dense_layers
        if llm.num_moe_layers:
            always = llm.moe_always_params
            lin = (2.0 * n * always / tp * spf, _BF16 * always / tp * spb)
            e, k = llm.num_experts, llm.top_k
            group_tokens = n * ep / tp if ep > 1 else n
            touched = e * (1.0 - (1.0 - k / e) ** group_tokens)
            expert_flops = 2.0 * n * k * llm.expert_params / tp
            expert_bytes = _BF16 * touched * llm.expert_params / (ep if ep > 1 else tp)
            experts = (expert_flops * spf, expert_bytes * spb)
            floor = p.kernels_per_moe_layer * p.kernel_floor_s if self.mechanisms.kernel_launch_floor else 0.0
            groups.append((llm.num_moe_layers, (lin, experts, attention), floor))
            hbm_time += (lin[1] + experts[1]) * llm.num_moe_layers
        head = (2.0 * n_logits * llm.lm_head_params / tp * spf, _BF16 * llm.lm_head_params / tp * spb)
        hbm_time += head[1]

        comm = self._comm_s(n, n_logits)
        cpu = 0.0
        if self.mechanisms.cpu_overhead:
            cpu = p.step_overhead_s + p.seq_overhead_s * n_logits
        return groups, head, hbm_time, comm, cpu

    def _comm_s(self, n: int, n_logits: int) -> float:
        """Collective time of one step (does not scale with the SM clock)."""
        llm, tp, ep, p = self.llm, self.tp, self.ep, self.params
        total = 0.0
        h = llm.hidden_size
        if tp > 1:
            busbw = self.gpu.allreduce_busbw(tp)
            act_bytes = n * h * _BF16
            allreduce = self._ar_latency_s + 2.0 * (tp - 1) / tp * act_bytes / busbw
            per_moe_layer = 1 if ep > 1 else 2  # with EP the MoE output is combined by the all-to-all
            total += allreduce * (2 * llm.num_dense_layers + per_moe_layer * llm.num_moe_layers)
            # Logits all-gather (vocab-parallel LM head).
            total += self._ar_latency_s + (tp - 1) / tp * n_logits * llm.vocab_size * _BF16 / busbw
        if ep > 1:
            sent_bytes = n * llm.top_k * h * _BF16 / tp  # this GPU's share of the dispatched tokens
            local = min(ep, p.gpus_per_node)
            on_node = sent_bytes * (local - 1) / ep
            off_node = sent_bytes * (ep - local) / ep
            latency = self._ar_latency_s + (p.internode_latency_s if off_node else 0.0)
            a2a = latency + max(on_node / self.gpu.allreduce_busbw(local) if local > 1 else 0.0,
                                off_node / p.internode_bandwidth_bytes_per_s)
            total += 2 * a2a * llm.num_moe_layers  # dispatch + combine
        return total

    # ------------------------------------------------------------------ evaluation at one clock

    def _eval(self, work, terms) -> tuple[float, float, float, float, float, float]:
        """(time_s, power_w, compute_s, memory_s, comm_s, overhead_s) of a step at one clock."""
        groups, head, hbm_time, comm, cpu = work
        _, x, g, b, always_on_w = terms
        k_m = self._k_m
        compute = memory = extra = sm_time = 0.0
        floor_scale = self.params.kernel_floor_fixed_frac + (1.0 - self.params.kernel_floor_fixed_frac) / x
        for count, ops, floor in groups:
            layer = layer_sm = layer_c = layer_m = 0.0
            for c_full, m_full in ops:
                tc = c_full / x
                tm = m_full / b
                if tc >= tm:
                    layer_c += tc
                    layer += tc
                    layer_sm += tc
                else:
                    layer_m += tm
                    layer += tm
                    busy = tc + k_m * tm
                    layer_sm += busy if busy < tm else tm
            compute += count * layer_c
            memory += count * layer_m
            sm_time += count * layer_sm
            floor_s = floor * floor_scale
            if floor_s > layer:
                extra += count * (floor_s - layer)
        tc = head[0] / x
        tm = head[1] / b
        if tc >= tm:
            compute += tc
            sm_time += tc
        else:
            memory += tm
            busy = tc + k_m * tm
            sm_time += busy if busy < tm else tm
        overhead = extra + cpu
        time_s = compute + memory + comm + overhead
        sm_w = self._p_sm_w * g
        energy_j = time_s * always_on_w + sm_w * (sm_time + self._spin * comm) + self._p_hbm_w * hbm_time
        return time_s, energy_j / time_s, compute, memory, comm, overhead

    # ------------------------------------------------------------------ public API

    def _shape_key(self, shape: StepShape) -> tuple[int, int, int, int]:
        d, dc, pf, pc = (shape.decode_seqs, shape.decode_context_tokens, shape.prefill_tokens,
                         shape.prefill_context_tokens)
        if d < 0 or dc < 0 or pf < 0 or pc < 0:
            raise ConfigError(f"step shape has a negative count: {shape}")
        return d, _bucket(dc, 6), _bucket(pf, 8), _bucket(pc, 5)

    def _idle_cost(self, clock_mhz: float) -> StepCost:
        return StepCost(0.0, self.idle_power_w, clock_mhz, 0.0, 0.0, 0.0, 0.0, False)

    def cost(self, shape: StepShape, power_cap_w: float) -> StepCost:
        """Step time and per-GPU power under a power cap (per-step limiter).

        The clock is the highest supported one whose step-average power fits under the cap; caps above the
        natural draw change nothing. If even the lowest clock does not fit, the step is stretched (duty-cycle
        throttling) so that power equals the cap, and `throttled` is set. Caps above the GPU's maximum
        limit act as the maximum.

        Raises:
            ConfigError: a cap below the GPU's lowest settable limit, or a negative count in the shape.
        """
        dc, pf, pc = shape.decode_context_tokens, shape.prefill_tokens, shape.prefill_context_tokens
        # Inline _bucket (hot path): decode context to 6 significant bits, prefill 8, prefill context 5.
        if dc >= 64:
            s = dc.bit_length() - 6
            dc = ((dc >> s) << s) | (1 << (s - 1))
        if pf >= 256:
            s = pf.bit_length() - 8
            pf = ((pf >> s) << s) | (1 << (s - 1))
        if pc >= 32:
            s = pc.bit_length() - 5
            pc = ((pc >> s) << s) | (1 << (s - 1))
        key = (shape.decode_seqs, dc, pf, pc, power_cap_w)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        result = self._cost_uncached(self._shape_key(shape), power_cap_w)
        self._remember(self._cache, key, result)
        return result

    @staticmethod
    def _remember(cache: dict, key: tuple, value: StepCost) -> None:
        if len(cache) >= _CACHE_MAX_ENTRIES:
            cache.clear()
        cache[key] = value

    def _cost_uncached(self, qshape: tuple[int, int, int, int], power_cap_w: float) -> StepCost:
        gpu = self.gpu
        if not power_cap_w >= gpu.power_limit_min_w:
            raise ConfigError(
                f"power cap {power_cap_w} W is below {gpu.name}'s lowest limit; use "
                f"{gpu.power_limit_min_w:g}-{gpu.power_limit_max_w:g} W"
            )
        cap = min(power_cap_w, gpu.power_limit_max_w)
        cap = math.floor(cap * 4.0) * 0.25  # never report power above the cap the caller gave
        grid = self._grid
        if qshape[0] + qshape[2] == 0:
            return self._idle_cost(grid[-1][0])
        work = self._work(*qshape)
        top = len(grid) - 1
        at_top = self._eval(work, grid[top])
        if at_top[1] <= cap:
            return self._make(at_top, grid[top][0], False)
        at_min = self._eval(work, grid[0])
        if at_min[1] > cap:
            bare = gpu.idle_bare_w
            stretch = (at_min[1] - bare) / max(cap - bare, 1e-9)
            t, _, c, mem, com, over = at_min
            return StepCost(t * stretch, cap, grid[0][0], c * stretch, mem * stretch, com * stretch,
                            over * stretch, True, True)
        lo, hi, best, above = 0, top, at_min, at_top  # invariant: power(lo) <= cap < power(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            at_mid = self._eval(work, grid[mid])
            if at_mid[1] <= cap:
                lo, best = mid, at_mid
            else:
                hi, above = mid, at_mid
        return self._dither(best, above, grid[lo][0], grid[hi][0], cap)

    @staticmethod
    def _dither(low, high, low_mhz: float, high_mhz: float, cap: float) -> StepCost:
        """The limiter alternates between the two clocks around the cap so that the step's mean power equals it:
        a share a of the work runs at the higher clock, a = t_lo (cap - P_lo) / (t_hi (P_hi - cap) + t_lo (cap - P_lo)).
        This makes time and power continuous in the cap and in the physics (a fit needs that)."""
        t_lo, p_lo = low[0], low[1]
        t_hi, p_hi = high[0], high[1]
        slack, excess = t_lo * (cap - p_lo), t_hi * (p_hi - cap)
        share = slack / (slack + excess) if slack + excess > 0 else 0.0
        mix = [(1.0 - share) * a + share * b for a, b in zip(low, high)]
        time_s = mix[0]
        power_w = ((1.0 - share) * t_lo * p_lo + share * t_hi * p_hi) / time_s if time_s > 0 else p_lo
        clock_mhz = ((1.0 - share) * t_lo * low_mhz + share * t_hi * high_mhz) / time_s if time_s > 0 else low_mhz
        return StepCost(time_s, min(power_w, cap), clock_mhz, mix[2], mix[3], mix[4], mix[5], True)

    @staticmethod
    def _make(ev, clock_mhz: float, binding: bool) -> StepCost:
        t, pw, c, mem, com, over = ev
        return StepCost(t, pw, clock_mhz, c, mem, com, over, binding)

    def cost_at_clock(self, shape: StepShape, sm_clock_mhz: float) -> StepCost:
        """Step time and per-GPU power at a fixed SM clock (no cap; clock locked, e.g. nvidia-smi -lgc).

        Raises:
            ConfigError: a clock outside the GPU's supported range.
        """
        qshape = self._shape_key(shape)
        key = qshape + (sm_clock_mhz,)
        hit = self._clock_cache.get(key)
        if hit is not None:
            return hit
        gpu = self.gpu
        if not gpu.min_sm_clock_mhz <= sm_clock_mhz <= gpu.max_sm_clock_mhz:
            raise ConfigError(
                f"SM clock {sm_clock_mhz} MHz is outside {gpu.name}'s range; use "
                f"{gpu.min_sm_clock_mhz:g}-{gpu.max_sm_clock_mhz:g} MHz"
            )
        if qshape[0] + qshape[2] == 0:
            result = self._idle_cost(sm_clock_mhz)
        else:
            result = self._make(self._eval(self._work(*qshape), self._clock_terms(sm_clock_mhz)), sm_clock_mhz,
                                sm_clock_mhz < gpu.max_sm_clock_mhz)
        self._remember(self._clock_cache, key, result)
        return result

    @property
    def clock_grid_mhz(self) -> list[float]:
        """Supported SM clocks, lowest first."""
        return list(self._clock_grid_mhz)

    def weights_per_gpu_bytes(self) -> float:
        """BF16 weights each GPU holds at this TP/EP. Units: B."""
        return self._weights_per_gpu(self.tp, self.ep)

    def kv_cache_tokens(self, gpu_memory_utilization: float = 0.9) -> int:
        """KV-cache capacity of one TP group after weights and the activation reserve, in tokens.

        Raises:
            ConfigError: utilization outside (0, 1], or no memory left for the KV cache.
        """
        if not 0 < gpu_memory_utilization <= 1:
            raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        llm = self.llm
        free = (gpu_memory_utilization * self.gpu.memory_bytes - self.weights_per_gpu_bytes()
                - self.params.activation_reserve_bytes)
        per_token = 2 * llm.num_layers * max(1.0, llm.num_kv_heads / self.tp) * llm.head_dim * _BF16
        tokens = int(free // per_token)
        if tokens < 1:
            raise ConfigError(
                f"no memory left for the KV cache of {llm.name} at TP {self.tp} on {self.gpu.name} with "
                f"gpu_memory_utilization {gpu_memory_utilization}; raise it or the TP degree"
            )
        return tokens

    def node_power_w(self, gpu_power_total_w: float) -> float:
        """Wall power of a node from the sum of its GPUs' power: 1.05 x sum + 345 W (PALS section 3.1)."""
        return NodePowerModel().node_w(gpu_power_total_w)


class PowerLimiter:
    """The GPU's power limiter, stepping through `run` for both limiter variants.

    With `Mechanisms.per_step_limiter` (default) every step gets its own clock: `run` is `StepModel.cost`.
    Otherwise one clock is held and corrected once per `window_s` of simulated time from the average
    power over the window (a long-window limiter), so power can exceed the cap between corrections.
    """

    def __init__(self, model: StepModel, window_s: float = 0.1) -> None:
        if window_s <= 0:
            raise ConfigError(f"window_s must be positive, got {window_s}")
        self.model = model
        self.window_s = window_s
        self._grid = model.clock_grid_mhz
        self._index = len(self._grid) - 1
        self._window_time_s = 0.0
        self._window_energy_j = 0.0

    @property
    def sm_clock_mhz(self) -> float:
        return self._grid[self._index]

    def run(self, shape: StepShape, power_cap_w: float) -> StepCost:
        """Cost of one step under the cap, advancing the limiter's state."""
        model = self.model
        if model.mechanisms.per_step_limiter:
            return model.cost(shape, power_cap_w)
        result = model.cost_at_clock(shape, self._grid[self._index])
        self._window_time_s += result.time_s
        self._window_energy_j += result.energy_j
        if self._window_time_s >= self.window_s:
            self._correct(self._window_energy_j / self._window_time_s, power_cap_w)
            self._window_time_s = self._window_energy_j = 0.0
        return result

    def _correct(self, mean_power_w: float, power_cap_w: float) -> None:
        """Move the clock so that dynamic power scales by (cap - bare) / (mean - bare), at most halfway."""
        bare = self.model.gpu.idle_bare_w
        cap = min(power_cap_w, self.model.gpu.power_limit_max_w)
        top = len(self._grid) - 1
        if mean_power_w > cap:
            ratio = max(cap - bare, 1.0) / max(mean_power_w - bare, 1.0)
            target = self._grid[self._index] * ratio
            new = max(i for i, c in enumerate(self._grid) if c <= max(target, self._grid[0]))
            self._index = min(self._index - 1, (self._index + new) // 2) if self._index > 0 else 0
        elif self._index < top and mean_power_w < 0.97 * cap:
            ratio = max(cap - bare, 1.0) / max(mean_power_w - bare, 1.0)
            target = self._grid[self._index] * min(ratio, 2.0)
            new = max(i for i, c in enumerate(self._grid) if c <= target)
            self._index = max(self._index + 1, (self._index + new + 1) // 2) if new > self._index else self._index
            self._index = min(self._index, top)
