"""A Poisson load whose rate follows a repeating step pattern (peaks and lulls), for the `slo` experiment.

`StepPoissonWorkload` draws arrivals whose rate is piecewise constant: each `RatePhase` holds its
rate for its duration, and the phases repeat. Within a phase the gaps are exponential; a gap that
crosses a phase boundary is redrawn from the boundary at the next phase's rate (exact for a Poisson
process: its gaps are memoryless). Request lengths are drawn as `PoissonWorkload` draws them, all
from one `np.random.default_rng(seed)` created in `requests()`, so two iterators give the same stream.
`run_following` runs a policy on it with a throughput target that follows the phases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from pals.control.budget import ThroughputTarget
from pals.control.policies import PolicyOptions
from pals.control.slo import Slo
from pals.core.power import NodePowerModel
from pals.core.workload import WorkloadDescriptor
from pals.experiments.common import WARMUP_S, RunResult
from pals.runtime.builder import build_controller
from pals.errors import ConfigError
from pals.sim.workload import LengthDistribution, Request, Workload


@dataclass(frozen=True)
class RatePhase:
    """One step of the pattern."""

    duration_s: float
    """How long the rate holds. Units: s."""
    offered_tps: float
    """Mean offered output rate in this phase. Units: tokens/s."""


class StepPoissonWorkload(Workload):
    """Open-loop Poisson arrivals at a rate that steps through `phases`, repeating (module docstring).

    Args:
        phases: the pattern (at least one phase, every duration and rate > 0).
        prompt_tokens: prompt-length distribution.
        output_tokens: output-length distribution (its mean turns each phase's tokens/s into requests/s).
        seed: seed of the arrivals and lengths.
    """

    def __init__(self, phases: Sequence[RatePhase], prompt_tokens: LengthDistribution,
                 output_tokens: LengthDistribution, seed: int = 0) -> None:
        if not phases:
            raise ConfigError("a step load needs at least one phase (duration_s, offered_tps)")
        for p in phases:
            if not (math.isfinite(p.duration_s) and p.duration_s > 0 and math.isfinite(p.offered_tps)
                    and p.offered_tps > 0):
                raise ConfigError(f"a step-load phase needs a duration and a rate > 0, got {p!r}")
        self.phases = tuple(phases)
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.seed = int(seed)
        self.period_s = sum(p.duration_s for p in self.phases)

    def offered_tps_at(self, t_s: float) -> float:
        """The mean offered output rate in force at node time `t_s`. Units: tokens/s."""
        return self.phases[self._phase_at(t_s)[0]].offered_tps

    def _phase_at(self, t_s: float) -> tuple[int, float]:
        """(index of the phase in force at `t_s`, when it ends)."""
        cycle = math.floor(t_s / self.period_s)
        start = cycle * self.period_s
        for i, p in enumerate(self.phases):
            if t_s < start + p.duration_s:
                return i, start + p.duration_s
            start += p.duration_s
        return 0, start + self.phases[0].duration_s  # rounding at the cycle's end

    @property
    def descriptor(self) -> WorkloadDescriptor:
        mean_tps = sum(p.duration_s * p.offered_tps for p in self.phases) / self.period_s
        return WorkloadDescriptor(self.prompt_tokens.mean, self.output_tokens.mean,
                                  mean_tps / self.output_tokens.mean, "step-poisson")

    def requests(self) -> Iterator[Request]:
        rng = np.random.default_rng(self.seed)
        t_s = 0.0
        while True:
            index, end_s = self._phase_at(t_s)
            rate_rps = self.phases[index].offered_tps / self.output_tokens.mean
            gap = float(rng.exponential(1.0 / rate_rps))
            if t_s + gap >= end_s:
                t_s = end_s
                continue
            t_s += gap
            yield Request(t_s, int(self.prompt_tokens.sample(rng, 1)[0]), int(self.output_tokens.sample(rng, 1)[0]))


TARGET_SHARE = 0.9
"""The throughput target follows the offered load at this share of its phase's mean (Poisson
arrivals swing around the mean: a target at the mean itself is missed half the time by any node)."""


def run_following(lab: Any, model: str, tp: int, policy: str, workload: StepPoissonWorkload, duration_s: float, *,
                  slo: Slo | None = None, latency_model: Any = None, options: PolicyOptions = PolicyOptions(),
                  tune: Callable[[Any], None] | None = None) -> RunResult:
    """`Lab.run` on `workload` with a throughput target that follows its phases (`TARGET_SHARE` of each
    phase's offered rate, set at every interval the phase changes): the node warms up for `WARMUP_S`
    at its initial configuration, then `policy` controls it for `duration_s`. `tune` gets the built
    policy before the run (to set knobs `PolicyOptions` does not carry)."""
    node = lab.node(model, tp, workload, noise=True)

    def wanted(t_s: float) -> ThroughputTarget:
        return ThroughputTarget(TARGET_SHARE * workload.offered_tps_at(t_s))

    settings = replace(lab.settings(policy, None, wanted(WARMUP_S).target_tps, None, options), slo=slo)
    controller = build_controller(node, settings, power_model=NodePowerModel(), latency_model=latency_model,
                                  **lab.models_for(policy, model, tp))
    loop = controller.loop
    if tune is not None:
        tune(loop.policy)

    def retarget(_line: Any) -> None:
        target = wanted(node.clock.now_s())
        if loop.target is None or abs(loop.target.target_tps - target.target_tps) > 1e-6:
            loop.set_target(target)

    node.clock.wait_until(WARMUP_S)
    energy0, tokens0 = node.node_energy_j_total(), node.generated_tokens_total()
    loop.run(duration_s=duration_s, on_step=retarget)
    energy, tokens = node.node_energy_j_total() - energy0, node.generated_tokens_total() - tokens0
    summary = loop.summary()
    controller.close()
    return RunResult(model=model, policy=policy, summary=summary, records=loop.log.recent(),
                     truth_tokens_per_joule=tokens / energy if energy > 0 else 0.0,
                     truth_mean_node_power_w=energy / max(node.clock.now_s() - WARMUP_S, 1e-9))
