"""The node interface: what the controller sees of a serving node.

Real and simulated nodes implement the same `Node` protocol, and the
controller cannot tell them apart. Names carry their units; cumulative
counters say `_total`.

Contract (GEOPM's sample / adjust split):
- `constraints()` is static for the node's lifetime: settable ranges and the
  deployment (GPUs, TP, EP).
- `sample()` returns one immutable `Sample`. Counters are cumulative since the
  node started, so the caller takes deltas between two samples; gauges are
  values at `time_s`.
- `apply(actuation)` sets the power cap (same on every GPU) and the engine's
  batch cap. Fields left `None` are not touched; a value equal to the current
  one is not rewritten. Lowering the batch cap never drops a request: running
  requests drain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pals.errors import ConfigError


@dataclass(frozen=True)
class Constraints:
    """Settable ranges and the static deployment of one node."""

    num_gpus: int
    """GPUs the node controls."""
    power_cap_min_w: float
    """Lowest power limit the driver accepts, per GPU. Units: W."""
    power_cap_max_w: float
    """Highest power limit the driver accepts, per GPU (TDP on data-centre parts). Units: W."""
    batch_cap_max: int
    """Largest batch cap (max running sequences per engine replica) the engine was started with."""
    batch_cap_min: int = 1
    """Smallest batch cap."""
    power_cap_settable: bool = True
    """False when the process may not set limits: the controller degrades to batch-only control."""
    tp: int = 1
    """Tensor-parallel degree of each engine replica."""
    ep: int = 1
    """Expert-parallel degree (1 for dense models)."""
    gpu_name: str = "unknown"
    model_name: str = "unknown"

    def __post_init__(self) -> None:
        if self.num_gpus < 1:
            raise ConfigError(f"num_gpus must be at least 1, got {self.num_gpus}")
        if not 0 < self.power_cap_min_w <= self.power_cap_max_w:
            raise ConfigError(
                f"power-cap range {self.power_cap_min_w}-{self.power_cap_max_w} W is empty or negative"
            )
        if not 1 <= self.batch_cap_min <= self.batch_cap_max:
            raise ConfigError(f"batch-cap range {self.batch_cap_min}-{self.batch_cap_max} is empty")

    @property
    def replicas(self) -> int:
        """Engine replicas on the node (data parallel inside one node)."""
        return max(1, self.num_gpus // self.tp)

    def check(self, actuation: "Actuation") -> None:
        """Raise ConfigError if `actuation` is outside the settable ranges."""
        cap = actuation.power_cap_w
        if cap is not None and not self.power_cap_min_w <= cap <= self.power_cap_max_w:
            raise ConfigError(
                f"power cap {cap:g} W is outside this GPU's range "
                f"{self.power_cap_min_w:g}-{self.power_cap_max_w:g} W"
            )
        batch = actuation.batch_cap
        if batch is not None and not self.batch_cap_min <= batch <= self.batch_cap_max:
            raise ConfigError(
                f"batch cap {batch} is outside {self.batch_cap_min}-{self.batch_cap_max}"
            )


@dataclass(frozen=True)
class Actuation:
    """One configuration to apply. `None` leaves that knob as it is."""

    power_cap_w: float | None = None
    """Power limit for every GPU of the node. Units: W."""
    batch_cap: int | None = None
    """Max running sequences per engine replica."""


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles over the requests that finished (or got a first token) recently."""

    p50_s: float
    """Median over the window. Units: s."""
    p99_s: float
    """99th percentile over the window. Units: s."""
    count: int
    """Requests the percentiles cover."""
    p90_s: float | None = None
    """90th percentile over the window; None when the node does not report it. Units: s."""

    def quantile_s(self, quantile: float) -> float | None:
        """The percentile for `quantile` (0.5, 0.9 or 0.99); None when not reported. Units: s."""
        return {0.5: self.p50_s, 0.9: self.p90_s, 0.99: self.p99_s}.get(quantile)


@dataclass(frozen=True)
class Sample:
    """One immutable telemetry sample of a node."""

    time_s: float
    """When the sample was taken, on the node's clock (monotonic or virtual). Units: s."""
    gpu_power_w: tuple[float, ...]
    """Instantaneous (measured, noisy) power per GPU. Units: W."""
    gpu_energy_j_total: tuple[float, ...]
    """Cumulative energy per GPU since the node started. Units: J."""
    gpu_power_cap_w: tuple[float, ...]
    """Power limit in force per GPU. Units: W."""
    batch_cap: int
    """Batch cap in force (as the engine reports it back)."""
    generated_tokens_total: float
    """Output tokens generated since start (all replicas)."""
    prompt_tokens_total: float
    """Prompt tokens processed since start (all replicas)."""
    requests_running: int
    requests_waiting: int
    requests_finished_total: int
    node_power_w: float | None = None
    """Wall power of the node when measured (simulator, IPMI); None when only GPU power is known. Units: W."""
    kv_cache_usage: float | None = None
    """Fraction of KV-cache blocks in use, 0-1."""
    ttft: LatencySummary | None = None
    """Time to first token over the recent window."""
    tpot: LatencySummary | None = None
    """Time per output token over the recent window."""
    mean_prompt_tokens: float | None = None
    """Mean prompt length of recently arrived requests (workload descriptor for the predictor)."""
    mean_output_tokens: float | None = None
    """Mean output length of recently finished requests."""
    age_s: float = 0.0
    """How old the engine-side data was when the sample was taken. Units: s."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Degradations the node wants surfaced (e.g. 'power caps not settable: batch-only')."""

    @property
    def gpu_power_total_w(self) -> float:
        return float(sum(self.gpu_power_w))

    @property
    def gpu_energy_total_j(self) -> float:
        return float(sum(self.gpu_energy_j_total))


@runtime_checkable
class Node(Protocol):
    """The platform as the controller sees it."""

    def constraints(self) -> Constraints: ...

    def sample(self) -> Sample: ...

    def apply(self, actuation: Actuation) -> None: ...

