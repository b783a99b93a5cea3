"""A test double for the Node protocol: an analytic node on a virtual clock.

`AnalyticFakeNode` is NOT the simulator: it stands in for a node where a test
needs exact, closed-form counters (throughput and power are smooth functions of
cap and batch) and a hook to fail after N configuration changes. Tests that
want the real physics use `pals.sim.node.SimNode`.
"""

from __future__ import annotations

import math

import numpy as np

from pals.node.base import Actuation, Constraints, LatencySummary, Sample


class VirtualClock:
    """A clock whose `wait_until` advances the fake node's counters."""

    def __init__(self, node: "AnalyticFakeNode") -> None:
        self._node = node
        self.t_s = 0.0

    def now_s(self) -> float:
        return self.t_s

    def wait_until(self, t_s: float) -> None:
        if t_s > self.t_s:
            self._node._advance(t_s - self.t_s)
            self.t_s = t_s


class AnalyticFakeNode:
    """Throughput ~ batch/(1+batch/40) * clock speed; GPU power = min(cap, natural draw(batch))."""

    def __init__(self, model: str = "fake-llm", num_gpus: int = 4, tp: int = 4, noise: float = 0.0,
                 seed: int = 0, node_power: bool = True, fail_after_applies: int | None = None) -> None:
        self.model = model
        self.num_gpus = num_gpus
        self.tp = tp
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.node_power = node_power
        self.fail_after_applies = fail_after_applies
        self.applies: list[Actuation] = []
        self.cap_w = 400.0
        self.batch = 64
        self.clock = VirtualClock(self)
        self.energy_j = [0.0] * num_gpus
        self.generated = 0.0
        self.prompt = 0.0

    def constraints(self) -> Constraints:
        return Constraints(num_gpus=self.num_gpus, power_cap_min_w=100.0, power_cap_max_w=400.0,
                           batch_cap_max=64, tp=self.tp, ep=1, gpu_name="fake-gpu", model_name=self.model)

    def _rates(self) -> tuple[float, float]:
        natural_w = 140.0 + 120.0 * math.log2(self.batch) / 6.0
        power_w = min(self.cap_w, natural_w)
        speed = (power_w / natural_w) ** 0.7
        throughput = self.num_gpus * self.batch * 60.0 / (1.0 + self.batch / 40.0) * speed
        return throughput, power_w

    def _advance(self, dt_s: float) -> None:
        throughput, power_w = self._rates()
        jitter = 1.0 + self.noise * float(self.rng.standard_normal())
        self.generated += throughput * dt_s * jitter
        self.prompt += 5.0 * throughput * dt_s
        for i in range(self.num_gpus):
            self.energy_j[i] += power_w * dt_s * (1.0 + self.noise * float(self.rng.standard_normal()))

    def sample(self) -> Sample:
        _, power_w = self._rates()
        return Sample(
            time_s=self.clock.t_s,
            gpu_power_w=(power_w,) * self.num_gpus,
            gpu_energy_j_total=tuple(self.energy_j),
            gpu_power_cap_w=(self.cap_w,) * self.num_gpus,
            batch_cap=self.batch,
            generated_tokens_total=self.generated,
            prompt_tokens_total=self.prompt,
            requests_running=self.batch,
            requests_waiting=10,
            requests_finished_total=0,
            node_power_w=(1.05 * power_w * self.num_gpus + 345.0) if self.node_power else None,
            ttft=LatencySummary(0.1, 0.3, 10),
            tpot=LatencySummary(0.02, 0.05, 10),
            mean_prompt_tokens=1000.0,
            mean_output_tokens=200.0,
        )

    def apply(self, actuation: Actuation) -> None:
        self.constraints().check(actuation)
        if self.fail_after_applies is not None and len(self.applies) >= self.fail_after_applies:
            raise KeyboardInterrupt("simulated kill of the profiler")
        self.applies.append(actuation)
        if actuation.power_cap_w is not None:
            self.cap_w = actuation.power_cap_w
        if actuation.batch_cap is not None:
            self.batch = actuation.batch_cap
