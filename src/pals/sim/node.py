"""SimNode: a simulated serving node behind the `Node` protocol.

A node has `num_gpus` GPUs split into `num_gpus // tp` engine replicas (data
parallel inside the node), each an `Engine` with its own TP group. Open-loop
arrivals go to the replica with the fewest outstanding requests. The node's
clock is virtual: `SimNode.clock.wait_until(t)` simulates up to `t`, so an
hour of control runs in seconds.

What the controller sees goes through `NoiseConfig`: noisy, quantised power
readings and engine metrics that lag (as a Prometheus scrape does). The
energy counters are exact, as NVML's energy counter is to within its mJ
resolution. Ground truth for experiments (never for the controller):
`true_gpu_power_w()`, `energy_j_total()`, `node_energy_j_total()` and
`request_stats()`.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pals.errors import ConfigError
from pals.core.node import Actuation, Constraints, LatencySummary, Sample
from pals.sim.engine import Engine
from pals.sim.hardware import GpuSpec, get_gpu
from pals.sim.llm import LlmSpec, get_llm
from pals.sim.step import Mechanisms, PhysicsParams, PowerLimiter, StepModel
from pals.sim.workload import Request, Workload


BATCH_CAP_LIMIT = 4096
"""Largest batch_cap_max a simulated node accepts (vLLM deployments run max_num_seqs up to 1024; the engine is
tested to 1024)."""


@dataclass(frozen=True)
class SimNodeSpec:
    """The static deployment of one simulated node.

    `llm` and `gpu` take preset names (see `pals.sim.llm.get_llm`,
    `pals.sim.hardware.get_gpu`) or spec objects.
    """

    llm: str | LlmSpec
    gpu: str | GpuSpec
    num_gpus: int = 4
    tp: int = 4
    """Tensor-parallel degree of each replica; replicas = num_gpus // tp."""
    ep: int = 1
    """Expert-parallel degree (1: experts are tensor-sliced)."""
    batch_cap_max: int = 64
    """vLLM's max_num_seqs: the largest batch cap the controller may set (the paper's 64 by default; H100/H200
    deployments run 256-1024, `GpuSpec.vllm_max_num_seqs`; the KV cache may hold fewer)."""
    max_num_batched_tokens: int | None = None
    """Per-step token budget for chunked prefill (decode tokens included); None: vLLM's default on this GPU
    (`GpuSpec.vllm_max_num_batched_tokens`: 2048 on A100/L40S, 8192 on H100/H200)."""
    gpu_memory_utilization: float = 0.9
    mechanisms: Mechanisms | None = None
    """Physics switches for the step model (None: its defaults)."""
    params: PhysicsParams | None = None
    """Physics constants for the step model (None: the GPU preset's; `pals.sim.physics.load_physics` reads a
    calibrated set)."""

    def __post_init__(self) -> None:
        if self.num_gpus < 1:
            raise ConfigError(f"SimNodeSpec num_gpus must be at least 1, got {self.num_gpus}")
        if self.tp < 1 or self.num_gpus % self.tp:
            raise ConfigError(
                f"the node's {self.num_gpus} GPUs are not divisible by tp={self.tp} (TP groups must fill the node); "
                f"use a tp of {', '.join(str(t) for t in range(1, self.num_gpus + 1) if self.num_gpus % t == 0)}"
            )
        if self.ep < 1:
            raise ConfigError(f"SimNodeSpec ep must be at least 1, got {self.ep}")
        if not 1 <= self.batch_cap_max <= BATCH_CAP_LIMIT:
            raise ConfigError(f"SimNodeSpec batch_cap_max must be in 1-{BATCH_CAP_LIMIT}, got {self.batch_cap_max}")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ConfigError(f"SimNodeSpec max_num_batched_tokens must be at least 1, got {self.max_num_batched_tokens}")
        if self.token_budget < self.batch_cap_max:
            raise ConfigError(
                f"SimNodeSpec max_num_batched_tokens={self.token_budget} is below "
                f"batch_cap_max={self.batch_cap_max}; vLLM needs it at least as large: raise max_num_batched_tokens"
            )
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ConfigError(
                f"SimNodeSpec gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        # Resolve names now so a typo fails here, with the preset module's message.
        self.llm_spec
        self.gpu_spec

    @property
    def llm_spec(self) -> LlmSpec:
        return get_llm(self.llm) if isinstance(self.llm, str) else self.llm

    @property
    def gpu_spec(self) -> GpuSpec:
        return get_gpu(self.gpu) if isinstance(self.gpu, str) else self.gpu

    @property
    def token_budget(self) -> int:
        """The per-step token budget in effect (max_num_batched_tokens, or the GPU's vLLM default)."""
        if self.max_num_batched_tokens is not None:
            return int(self.max_num_batched_tokens)
        return max(self.gpu_spec.vllm_max_num_batched_tokens, self.batch_cap_max)

    @property
    def replicas(self) -> int:
        return self.num_gpus // self.tp

    def step_model(self) -> StepModel:
        """The per-replica step model."""
        kwargs: dict[str, Any] = {"tp": self.tp, "ep": self.ep}
        if self.mechanisms is not None:
            kwargs["mechanisms"] = self.mechanisms
        if self.params is not None:
            kwargs["params"] = self.params
        return StepModel(self.llm_spec, self.gpu_spec, **kwargs)


@dataclass(frozen=True)
class NoiseConfig:
    """How the node's telemetry differs from ground truth.

    The defaults are meant to be realistic; `NoiseConfig.none()` gives exact
    readings with no lag.
    """

    power_rel_sd: float = 0.02
    """Relative sd of each GPU power reading (sensor and averaging noise)."""
    power_abs_sd_w: float = 2.0
    """Absolute sd added to each GPU power reading. Units: W."""
    power_quantum_w: float = 1.0
    """Readings are rounded to this step (NVML-like integer watts); 0 disables. Units: W."""
    node_power_rel_sd: float = 0.01
    """Relative sd of the node (wall) power reading."""
    metrics_lag_s: float = 0.05
    """Engine metrics (tokens, queue, latency) are this old when sampled (scrape lag). Units: s."""
    metrics_lag_jitter_s: float = 0.05
    """Extra uniform random lag in [0, jitter]; counters stay monotonic. Units: s."""

    def __post_init__(self) -> None:
        for name in (
            "power_rel_sd",
            "power_abs_sd_w",
            "power_quantum_w",
            "node_power_rel_sd",
            "metrics_lag_s",
            "metrics_lag_jitter_s",
        ):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ConfigError(f"NoiseConfig {name} must be a finite number >= 0, got {value}")

    @classmethod
    def none(cls) -> "NoiseConfig":
        """Exact telemetry: no noise, no quantisation, no lag (ground truth)."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class RequestStats:
    """Ground truth about every request the node has seen."""

    submitted: int
    finished: int
    outstanding: int
    """Running or waiting now."""
    rejected: int
    """Could never fit in the KV cache."""
    lost: int
    """submitted - finished - outstanding - rejected: 0 unless the engine is broken."""
    preemptions: int
    generated_tokens_total: int
    finished_output_tokens: int
    """Sum of output lengths of finished requests."""
    ttft_s: np.ndarray = field(repr=False)
    """Time to first token of every request that got one."""
    tpot_s: np.ndarray = field(repr=False)
    """Time per output token of every finished request with more than one output token."""
    e2e_s: np.ndarray = field(repr=False)
    """End-to-end latency of every finished request."""


class SimClock:
    """The simulated node's virtual clock (satisfies `pals.clock.Clock`)."""

    def __init__(self, node: "SimNode") -> None:
        self._node = node

    def now_s(self) -> float:
        return self._node.now_s

    def wait_until(self, t_s: float) -> None:
        """Simulate the node up to `t_s` (no-op if it is already there)."""
        self._node.advance_to(t_s)


@dataclass
class _Snapshot:
    """Engine metrics as of `time_s` (what a lagged scrape would return)."""

    time_s: float
    generated_tokens_total: int
    prompt_tokens_total: int
    running: int
    waiting: int
    finished_total: int
    kv_cache_usage: float


class SimNode:
    """A simulated node implementing the `pals.core.node.Node` protocol.

    Args:
        spec: deployment (model, GPU, parallelism, engine limits).
        workload: request source; open loop (Poisson, trace) or closed loop (saturating).
        seed: seed for telemetry noise (the workload carries its own seed).
        noise: telemetry noise; `NoiseConfig.none()` for exact readings.
        initial: power cap and batch cap at start (default: max power limit, batch_cap_max).
        latency_window_s: window for the latency and length summaries in samples.
        record_segments: keep each replica's power segments (tests only).
    """

    def __init__(
        self,
        spec: SimNodeSpec,
        workload: Workload,
        seed: int = 0,
        noise: NoiseConfig | None = None,
        initial: Actuation | None = None,
        latency_window_s: float = 30.0,
        record_segments: bool = False,
    ) -> None:
        if latency_window_s <= 0:
            raise ConfigError(f"latency_window_s must be > 0, got {latency_window_s}")
        self.spec = spec
        self.workload = workload
        self.noise = NoiseConfig() if noise is None else noise
        self.latency_window_s = float(latency_window_s)
        self._rng = np.random.default_rng(seed)
        self.llm = spec.llm_spec
        self.gpu = spec.gpu_spec
        self.step_model = spec.step_model()
        kv_tokens = int(self.step_model.kv_cache_tokens(spec.gpu_memory_utilization))
        if kv_tokens < 1:
            raise ConfigError(
                f"{self.llm.name} does not fit on {spec.tp} x {self.gpu.name} "
                f"at gpu_memory_utilization={spec.gpu_memory_utilization}; raise tp or use a larger GPU"
            )
        self._constraints = Constraints(
            num_gpus=spec.num_gpus,
            power_cap_min_w=self.gpu.power_limit_min_w,
            power_cap_max_w=self.gpu.power_limit_max_w,
            batch_cap_max=spec.batch_cap_max,
            batch_cap_min=1,
            power_cap_settable=True,
            tp=spec.tp,
            ep=spec.ep,
            gpu_name=self.gpu.name,
            model_name=self.llm.name,
        )
        initial = initial or Actuation()
        self._constraints.check(initial)
        power_cap_w = self.gpu.power_limit_max_w if initial.power_cap_w is None else initial.power_cap_w
        batch_cap = spec.batch_cap_max if initial.batch_cap is None else initial.batch_cap

        self._now_s = 0.0
        self._stream = workload.requests()
        closed = workload.closed_loop
        min_waiting = getattr(workload, "min_waiting", None) or spec.batch_cap_max
        self.engines: list[Engine] = [
            Engine(
                self.step_model,
                kv_cache_tokens=kv_tokens,
                batch_cap=batch_cap,
                batch_cap_max=spec.batch_cap_max,
                power_cap_w=power_cap_w,
                max_num_batched_tokens=spec.token_budget,
                source=self._stream if closed else None,
                min_waiting=min_waiting if closed else 0,
                record_segments=record_segments,
                cost_fn=self._cost_fn(),
            )
            for _ in range(spec.replicas)
        ]
        self._next: Request | None = None if closed else next(self._stream, None)
        self._power_cap_w = float(power_cap_w)
        self._batch_cap = int(batch_cap)
        self._snapshot = self._take_snapshot()
        self.clock = SimClock(self)

    def _cost_fn(self):
        """Per-step limiter: the step model itself; long-window limiter: one stateful limiter per replica."""
        if self.step_model.mechanisms.per_step_limiter:
            return self.step_model.cost
        return PowerLimiter(self.step_model).run

    # ------------------------------------------------------------ protocol

    def constraints(self) -> Constraints:
        return self._constraints

    def apply(self, actuation: Actuation) -> None:
        """Set the power cap (every GPU) and the batch cap (every replica) now.

        Raises:
            ConfigError: a value outside `constraints()`.
        """
        self._constraints.check(actuation)
        if actuation.power_cap_w is not None and actuation.power_cap_w != self._power_cap_w:
            self._power_cap_w = float(actuation.power_cap_w)
            for engine in self.engines:
                engine.set_power_cap_w(self._power_cap_w)
        if actuation.batch_cap is not None and actuation.batch_cap != self._batch_cap:
            self._batch_cap = int(actuation.batch_cap)
            for engine in self.engines:
                engine.set_batch_cap(self._batch_cap)

    def sample(self) -> Sample:
        """Telemetry at the current virtual time (noisy power, lagged engine metrics)."""
        noise = self.noise
        rng = self._rng
        true_w = self.true_gpu_power_w()
        if noise.power_rel_sd or noise.power_abs_sd_w:
            rel = rng.normal(0.0, noise.power_rel_sd, len(true_w)) if noise.power_rel_sd else 0.0
            abs_w = rng.normal(0.0, noise.power_abs_sd_w, len(true_w)) if noise.power_abs_sd_w else 0.0
            readings = np.maximum(np.asarray(true_w) * (1.0 + rel) + abs_w, 0.0)
        else:
            readings = np.asarray(true_w, dtype=float)
        if noise.power_quantum_w:
            readings = np.round(readings / noise.power_quantum_w) * noise.power_quantum_w
        node_w = self.step_model.node_power_w(sum(true_w))
        if noise.node_power_rel_sd:
            node_w *= 1.0 + rng.normal(0.0, noise.node_power_rel_sd)
        snap = self._snapshot
        cutoff_s = snap.time_s
        start_s = cutoff_s - self.latency_window_s
        ttft, tpot, prompt_mean, output_mean = self._window_summaries(start_s, cutoff_s)
        return Sample(
            time_s=self._now_s,
            gpu_power_w=tuple(float(x) for x in readings),
            gpu_energy_j_total=self._energy_per_gpu(),
            gpu_power_cap_w=(self._power_cap_w,) * self.spec.num_gpus,
            batch_cap=self._batch_cap,
            generated_tokens_total=float(snap.generated_tokens_total),
            prompt_tokens_total=float(snap.prompt_tokens_total),
            requests_running=snap.running,
            requests_waiting=snap.waiting,
            requests_finished_total=snap.finished_total,
            node_power_w=float(node_w),
            kv_cache_usage=snap.kv_cache_usage,
            ttft=ttft,
            tpot=tpot,
            mean_prompt_tokens=prompt_mean,
            mean_output_tokens=output_mean,
            age_s=self._now_s - snap.time_s,
        )

    # ---------------------------------------------------------------- time

    @property
    def now_s(self) -> float:
        return self._now_s

    def advance_to(self, t_s: float) -> None:
        """Simulate every replica up to `t_s`, dispatching arrivals on the way."""
        if t_s <= self._now_s:
            return
        lag_s = self.noise.metrics_lag_s
        if self.noise.metrics_lag_jitter_s:
            lag_s += float(self._rng.uniform(0.0, self.noise.metrics_lag_jitter_s))
        snap_s = t_s - lag_s
        if lag_s > 0 and snap_s > self._now_s:
            self._run_to(snap_s)
            self._snapshot = self._take_snapshot()
            self._run_to(t_s)
        else:
            self._run_to(t_s)
            if lag_s <= 0:
                self._snapshot = self._take_snapshot()

    def _run_to(self, t_s: float) -> None:
        engines = self.engines
        nxt = self._next
        while nxt is not None and nxt.arrival_s <= t_s:
            arrival_s = max(nxt.arrival_s, self._now_s)
            if len(engines) == 1:
                target = engines[0]
                target.advance_to(arrival_s)
            else:
                for engine in engines:
                    engine.advance_to(arrival_s)
                target = min(engines, key=Engine.outstanding.fget)  # first of the least loaded
            target.submit(nxt)
            nxt = next(self._stream, None)
        self._next = nxt
        for engine in engines:
            engine.advance_to(t_s)
        self._now_s = t_s

    def _take_snapshot(self) -> _Snapshot:
        engines = self.engines
        return _Snapshot(
            time_s=self._now_s,
            generated_tokens_total=sum(e.generated_tokens_total for e in engines),
            prompt_tokens_total=sum(e.prompt_tokens_total for e in engines),
            running=sum(e.running for e in engines),
            waiting=sum(e.waiting for e in engines),
            finished_total=sum(e.finished_total for e in engines),
            kv_cache_usage=sum(e.kv_cache_usage for e in engines) / len(engines),
        )

    def _window_summaries(
        self, start_s: float, end_s: float
    ) -> tuple[LatencySummary | None, LatencySummary | None, float | None, float | None]:
        ttft: list[float] = []
        tpot: list[float] = []
        prompts: list[int] = []
        outputs: list[int] = []
        for e in self.engines:
            lo, hi = bisect_right(e.first_token_log_s, start_s), bisect_right(e.first_token_log_s, end_s)
            ttft.extend(e.ttft_log_s[lo:hi])
            lo, hi = bisect_right(e.tpot_log_time_s, start_s), bisect_right(e.tpot_log_time_s, end_s)
            tpot.extend(e.tpot_log_s[lo:hi])
            lo, hi = bisect_right(e.finish_log_s, start_s), bisect_right(e.finish_log_s, end_s)
            outputs.extend(e.finish_log_output[lo:hi])
            lo, hi = bisect_left(e.arrival_log_s, start_s), bisect_right(e.arrival_log_s, end_s)
            prompts.extend(e.arrival_log_prompt[lo:hi])
        return (
            _summary(ttft),
            _summary(tpot),
            sum(prompts) / len(prompts) if prompts else None,
            sum(outputs) / len(outputs) if outputs else None,
        )

    # --------------------------------------------------------- ground truth

    def true_gpu_power_w(self) -> tuple[float, ...]:
        """Exact power per GPU now (no noise). Units: W."""
        tp = self.spec.tp
        return tuple(e.power_w for e in self.engines for _ in range(tp))

    def _energy_per_gpu(self) -> tuple[float, ...]:
        tp = self.spec.tp
        return tuple(e.energy_j for e in self.engines for _ in range(tp))

    def energy_j_total(self) -> float:
        """Exact GPU energy of the node since start (all GPUs). Units: J."""
        return self.spec.tp * sum(e.energy_j for e in self.engines)

    def node_energy_j_total(self) -> float:
        """Exact node (wall) energy since start from the node power model. Units: J."""
        # node_power_w is affine in the GPU total, so integrating it needs only the GPU energy.
        base_w = self.step_model.node_power_w(0.0)
        slope = self.step_model.node_power_w(1.0) - base_w
        return slope * self.energy_j_total() + base_w * self._now_s

    def generated_tokens_total(self) -> int:
        """Exact output tokens generated so far (no lag)."""
        return sum(e.generated_tokens_total for e in self.engines)

    def request_stats(self) -> RequestStats:
        """Every request's fate and latencies so far."""
        engines = self.engines
        submitted = sum(e.submitted_total for e in engines)
        finished = sum(e.finished_total for e in engines)
        outstanding = sum(e.outstanding for e in engines)
        rejected = sum(e.rejected_total for e in engines)
        return RequestStats(
            submitted=submitted,
            finished=finished,
            outstanding=outstanding,
            rejected=rejected,
            lost=submitted - finished - outstanding - rejected,
            preemptions=sum(e.preemptions_total for e in engines),
            generated_tokens_total=self.generated_tokens_total(),
            finished_output_tokens=sum(sum(e.finish_log_output) for e in engines),
            ttft_s=np.asarray([x for e in engines for x in e.ttft_log_s]),
            tpot_s=np.asarray([x for e in engines for x in e.tpot_log_s]),
            e2e_s=np.asarray([x for e in engines for x in e.finish_log_e2e_s]),
        )


def _summary(values: list[float]) -> LatencySummary | None:
    """p50/p90/p99 (nearest rank) of `values`, or None when empty."""
    if not values:
        return None
    values = sorted(values)
    n = len(values)
    return LatencySummary(
        p50_s=values[min(n - 1, int(0.5 * n))],
        p99_s=values[min(n - 1, int(math.ceil(0.99 * n)) - 1)],
        count=n,
        p90_s=values[min(n - 1, int(math.ceil(0.9 * n)) - 1)],
    )
