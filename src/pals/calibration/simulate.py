"""The simulator's value at a calibration point.

`estimate` uses the steady-state estimates of `pals.sim.steady` (a few step evaluations per point, so a fit
can call it thousands of times); `run_node` runs a `SimNode` under a saturating load with uniform lengths
around the point's means (what the fidelity report shows beside the estimate). tests/sim/test_steady.py
keeps the two within 5-10 % of each other.

Decode power (`Simulated.decode_power_w`, what `pals probe` measures in its decode window): the mean power of
the pure-decode steps of the static batch at the point's batch and cap (batch x one token per step, the context
growing from the prompt over output - 1 steps), i.e. the static batch's energy less its prefill's over its time
less the prefill's. A static point has it for free; a continuous point gets it only where it measured it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pals.calibration.points import CalibrationPoint
from pals.sim.hardware import GpuSpec, get_gpu
from pals.sim.physics import Mechanisms, PhysicsParams
from pals.sim.steady import SteadyState, continuous_steady_state, static_batch
from pals.sim.step import StepModel


@dataclass(frozen=True)
class Simulated:
    """The simulator's values at one point (the deployment as a whole; power per GPU)."""

    throughput_tps: float
    """Output tokens/s of all replicas. Units: tokens/s."""
    gpu_power_w: float
    """Mean power per GPU. Units: W."""
    tpot_p50_s: float
    """Time per output token (the steady-state mean; a run's median). Units: s."""
    ttft_p50_s: float
    """Time to first token (static batch only; NaN at saturation). Units: s."""
    prefill_power_w: float = math.nan
    """Mean power per GPU during a static batch's prefill (NaN otherwise). Units: W."""
    decode_power_w: float = math.nan
    """Mean power per GPU of the pure-decode steps at the point's batch and cap (module docstring; NaN for a
    continuous point that did not measure it). Units: W."""
    relative_throughput: float = math.nan
    """Throughput over that at the point's `relative_to_cap_w` (NaN without one)."""

    def value(self, quantity: str) -> float:
        return float(getattr(self, quantity))


class StepModels:
    """StepModels per (model, TP, EP) for one GPU and one physics set (built on first use)."""

    def __init__(self, gpu: GpuSpec, params: PhysicsParams, mechanisms: Mechanisms | None = None) -> None:
        self.gpu = gpu
        self.params = params
        self.mechanisms = mechanisms or Mechanisms()
        self._models: dict[tuple, StepModel] = {}
        self._kv: dict[tuple, int] = {}

    def get(self, point: CalibrationPoint, params: PhysicsParams | None = None) -> tuple[StepModel, int]:
        """(step model, KV-cache tokens) for a point; `params` overrides this set's physics for it."""
        physics = params if params is not None else self.params
        key = (point.model, point.base_dir, point.tp, point.ep, None if params is None else physics)
        model = self._models.get(key)
        if model is None:
            model = StepModel(point.llm(), self.gpu, tp=point.tp, ep=point.ep, mechanisms=self.mechanisms,
                              params=physics)
            self._models[key] = model
            self._kv[key] = model.kv_cache_tokens()
        return model, self._kv[key]


def estimate(point: CalibrationPoint, models: StepModels, params: PhysicsParams | None = None) -> Simulated:
    """The steady-state estimate at a point (static batch or continuous batching under saturation)."""
    state = _state(point, models, params, point.power_cap_w)
    relative = math.nan
    if math.isfinite(point.relative_to_cap_w):
        relative = state.throughput_tps / _state(point, models, params, point.relative_to_cap_w).throughput_tps
    decode = math.nan
    if point.batching == "static":
        decode = decode_power_w(state, point.output_tokens)
    elif math.isfinite(point.decode_power_w):
        decode = decode_power_w(_state(replace(point, batching="static"), models, params, point.power_cap_w),
                                point.output_tokens)
    replicas = point.num_gpus // point.tp
    return Simulated(state.throughput_tps * replicas, state.gpu_power_w, state.tpot_s, state.ttft_s,
                     state.prefill_power_w, decode, relative)


def decode_power_w(static: SteadyState, output_tokens: float) -> float:
    """Mean power per GPU of a static batch's decode steps: (its energy - the prefill's) / (its time - the prefill's).

    NaN when the batch has no decode step (one output token).
    """
    steps = int(round(output_tokens)) - 1
    if steps < 1 or not math.isfinite(static.tpot_s):
        return math.nan
    total_s = static.batch * int(round(output_tokens)) / static.throughput_tps
    decode_j = static.gpu_power_w * total_s - static.prefill_power_w * static.ttft_s
    return decode_j / (total_s - static.ttft_s)


def _state(point: CalibrationPoint, models: StepModels, params: PhysicsParams | None, cap_w: float):
    model, kv_tokens = models.get(point, params)
    cap = min(cap_w, models.gpu.power_limit_max_w)
    if point.batching == "static":
        return static_batch(model, batch=point.batch_cap, prompt_tokens=int(round(point.prompt_tokens)),
                            output_tokens=int(round(point.output_tokens)), power_cap_w=cap)
    budget = point.max_num_batched_tokens or max(models.gpu.vllm_max_num_batched_tokens, point.batch_cap)
    return continuous_steady_state(model, batch_cap=point.batch_cap, prompt_tokens=point.prompt_tokens,
                                   output_tokens=point.output_tokens, power_cap_w=cap,
                                   max_num_batched_tokens=budget, kv_cache_tokens=kv_tokens)


def run_node(point: CalibrationPoint, gpu: GpuSpec, params: PhysicsParams, *, warmup_s: float = 20.0,
             window_s: float = 60.0, seed: int = 0, mechanisms: Mechanisms | None = None) -> Simulated:
    """A noise-free `SimNode` run at the point under a saturating load (uniform lengths around the means:
    prompts 0.6-1.4x, outputs 0.5-1.5x). Static-batch points fall back to `estimate` (the engine batches
    continuously)."""
    if point.batching == "static":
        return estimate(point, StepModels(gpu, params, mechanisms))
    from pals.core.node import Actuation
    from pals.sim.node import NoiseConfig, SimNode, SimNodeSpec
    from pals.sim.workload import LengthDistribution, SaturatingWorkload

    spec = SimNodeSpec(point.llm(), gpu, num_gpus=point.num_gpus, tp=point.tp, ep=point.ep,
                       batch_cap_max=max(point.batch_cap, 1), max_num_batched_tokens=point.max_num_batched_tokens,
                       mechanisms=mechanisms, params=params)
    p, o = point.prompt_tokens, point.output_tokens
    prompts = LengthDistribution.uniform(max(1, int(0.6 * p)), max(1, int(math.ceil(1.4 * p))))
    outputs = LengthDistribution.uniform(max(1, int(0.5 * o)), max(1, int(math.ceil(1.5 * o))))
    node = SimNode(spec, SaturatingWorkload(prompts, outputs, seed=seed), seed=seed, noise=NoiseConfig.none(),
                   initial=Actuation(min(point.power_cap_w, gpu.power_limit_max_w), point.batch_cap))
    node.clock.wait_until(warmup_s)
    tokens0, energy0 = node.generated_tokens_total(), node.energy_j_total()
    node.clock.wait_until(warmup_s + window_s)
    tpots = [x for e in node.engines for t, x in zip(e.tpot_log_time_s, e.tpot_log_s) if t >= warmup_s]
    return Simulated(
        throughput_tps=(node.generated_tokens_total() - tokens0) / window_s,
        gpu_power_w=(node.energy_j_total() - energy0) / window_s / point.num_gpus,
        tpot_p50_s=float(np.median(tpots)) if len(tpots) else math.nan,
        ttft_p50_s=math.nan,
    )


def with_values(params: PhysicsParams, values: dict[str, Any]) -> PhysicsParams:
    """`params` with some fields replaced (no validation beyond PhysicsParams')."""
    return replace(params, **values) if values else params


def gpu_of(name_or_spec: str | GpuSpec) -> GpuSpec:
    return get_gpu(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
