"""What every policy is and what a model-guided policy consumes; the capacity-limited test."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from pals.control.policies.config import FULL_BATCH_FRACTION
from pals.control.types import Decision, DecisionContext, Observation


class PerfModel(Protocol):
    """What a model-guided policy needs: the predictor, or the simulator's ground truth.

    `predict_candidates(power_cap_w, batch_cap)` takes two equal-length arrays and returns an
    object with arrays `throughput_tps`, `gpu_power_total_w`, `node_power_w` and
    `tokens_per_joule` (node-level), one entry per candidate. (A third argument, the workload,
    defaults to the one the model was fitted on; the policies do not pass one yet.)
    """

    def predict_candidates(self, power_cap_w: np.ndarray, batch_cap: np.ndarray, workload: Any = None) -> Any: ...


class Policy(Protocol):
    """Maps the interval just observed (a `DecisionContext`) to a `Decision`; never sees the node."""

    name: str

    def decide(self, ctx: DecisionContext) -> Decision: ...

    def reset(self) -> None: ...


def capacity_limited(obs: Observation, replicas: int, full_fraction: float = FULL_BATCH_FRACTION) -> bool:
    """True when the node ran at capacity: requests waited AND every replica's batch was (nearly) full.

    Requests also wait for a moment under a load well below capacity (an arrival burst larger
    than one step's prefill budget), while the running batch is far from the cap; such intervals
    deliver the demand, not the capacity. A batch held below the cap by KV-cache memory is caught
    by the policies' sustained-backlog test instead (`ModelGuidedConfig.backlog_intervals`).
    """
    if obs.requests_waiting <= 0:
        return False
    return obs.requests_running >= full_fraction * obs.batch_cap * max(1, replicas)
