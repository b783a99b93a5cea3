"""A test and benchmark tool: a `Node` wrapper that injects the faults real telemetry has.

    node = FaultyNode(SimNode(...), faults=[Fault("nan_power", probability=0.05),
                                            Fault("sample_error", start_s=60, end_s=65)], seed=1)

Wraps any `Node` (the simulator, a real node) and passes everything through, except that while a
`Fault` is active (its window on the node's clock) each call injects it with the fault's
probability. Every other attribute (`clock`, the simulator's ground truth) is the wrapped node's.
`injected` counts what was injected, by kind.

It is no GPU stand-in: it only corrupts what another node reports, to show that the controller
survives it (`tests/control/test_faults.py`, `benchmarks/bench_soak.py`).
"""

from __future__ import annotations

import collections
import math
import random
from dataclasses import dataclass, replace
from typing import Any

from pals.core.node import Actuation, Constraints, Node, Sample
from pals.errors import ConfigError

FAULT_KINDS = {
    "sample_error": "node.sample() raises RuntimeError",
    "apply_error": "node.apply() raises OSError (the setting is not applied)",
    "nan_power": "every GPU power reading is NaN",
    "inf_power": "every GPU power reading is +inf",
    "negative_power": "GPU 0 reads -50 W",
    "huge_power": "GPU 0 reads 20x its highest cap",
    "nan_energy": "GPU 0's energy counter reads NaN",
    "energy_reset": "every GPU energy counter restarts from zero (a driver reload); it counts on from there",
    "energy_jump": "GPU 0's energy counter reads 1e9 J high for one sample",
    "frozen_energy": "the energy counters stay at the value they had when the fault began",
    "token_reset": "the engine's counters restart from zero (an engine restart); they count on from there",
    "frozen_tokens": "the engine's counters and queues stay as they were when the fault began",
    "nan_tokens": "the generated-token counter reads NaN",
    "stale": "the engine data is 60 s old (age_s)",
    "delayed": "a sample from two calls back is returned again (a time_s before the last one's)",
    "nan_time": "time_s is NaN",
    "malformed": "the GPU power readings are None instead of a tuple (a parser that went wrong)",
}
"""Fault kind -> what it does."""

_APPLY_FAULTS = {"apply_error"}


@dataclass(frozen=True)
class Fault:
    """One fault and when it strikes."""

    kind: str
    """One of `FAULT_KINDS`."""
    probability: float = 1.0
    """Chance it is injected at each call while active, 0-1."""
    start_s: float = 0.0
    """Active from this time on the node's clock (the wrapped sample's `time_s`). Units: s."""
    end_s: float = math.inf
    """Active until this time (exclusive). Units: s."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"unknown fault {self.kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"fault probability must be within 0-1, got {self.probability}")
        if not self.start_s <= self.end_s:
            raise ConfigError(f"fault window {self.start_s}-{self.end_s} s is empty")

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s


class FaultyNode:
    """A `Node` that injects `faults` into what `node` reports (see the module docstring).

    Args:
        node: the node to wrap.
        faults: the faults and their schedules.
        seed: seed of the injection draws (equal seeds inject equally).
    """

    def __init__(self, node: Node, faults: list[Fault] | tuple[Fault, ...] = (), seed: int = 0) -> None:
        self.inner = node
        self.faults = tuple(faults)
        self._rng = random.Random(seed)
        self.injected: collections.Counter[str] = collections.Counter()
        self._time_s = 0.0
        self._returned: collections.deque[Sample] = collections.deque(maxlen=2)
        """The last two samples returned fresh (a delayed one is the older)."""
        self._energy_offset_j: list[float] | None = None
        self._engine_offset = (0.0, 0.0, 0)
        self._frozen_energy: tuple[float, ...] | None = None
        self._frozen_engine: Sample | None = None

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes FaultyNode lacks: the wrapped node's clock, ground truth, ...
        return getattr(self.inner, name)

    def constraints(self) -> Constraints:
        return self.inner.constraints()

    def _strikes(self, kind: str, t_s: float) -> bool:
        """Whether `kind` is injected now (one draw per active fault of that kind)."""
        hit = False
        for fault in self.faults:
            if fault.kind == kind and fault.active(t_s) and self._rng.random() < fault.probability:
                hit = True
        if hit:
            self.injected[kind] += 1
        return hit

    def apply(self, actuation: Actuation) -> None:
        if self._strikes("apply_error", self._time_s):
            raise OSError(5, "injected fault: could not set the power limit")
        self.inner.apply(actuation)

    def sample(self) -> Sample:
        clean = self.inner.sample()
        t_s = clean.time_s
        self._time_s = t_s
        if self._strikes("sample_error", t_s):
            raise RuntimeError("injected fault: telemetry read failed")
        if self._strikes("delayed", t_s) and len(self._returned) == 2:
            return self._returned[0]
        out = self._counters(clean, t_s)
        out = self._readings(out, t_s)
        self._returned.append(out)
        return out

    def _counters(self, s: Sample, t_s: float) -> Sample:
        """Resets and stalls of the energy and engine counters (they persist across samples)."""
        n = len(s.gpu_energy_j_total)
        if self._energy_offset_j is None:
            self._energy_offset_j = [0.0] * n
        if self._strikes("energy_reset", t_s):
            self._energy_offset_j = [-e for e in s.gpu_energy_j_total]
        if self._strikes("token_reset", t_s):
            self._engine_offset = (-s.generated_tokens_total, -s.prompt_tokens_total, -s.requests_finished_total)
        energy = tuple(e + o for e, o in zip(s.gpu_energy_j_total, self._energy_offset_j))
        gen_o, prompt_o, fin_o = self._engine_offset
        s = replace(s, gpu_energy_j_total=energy, generated_tokens_total=s.generated_tokens_total + gen_o,
                    prompt_tokens_total=s.prompt_tokens_total + prompt_o,
                    requests_finished_total=s.requests_finished_total + fin_o)
        if self._strikes("frozen_energy", t_s):
            self._frozen_energy = self._frozen_energy or s.gpu_energy_j_total
            s = replace(s, gpu_energy_j_total=self._frozen_energy)
        else:
            self._frozen_energy = None
        if self._strikes("frozen_tokens", t_s):
            f = self._frozen_engine = self._frozen_engine or s
            s = replace(s, generated_tokens_total=f.generated_tokens_total, prompt_tokens_total=f.prompt_tokens_total,
                        requests_finished_total=f.requests_finished_total, requests_running=f.requests_running,
                        requests_waiting=f.requests_waiting)
        else:
            self._frozen_engine = None
        return s

    def _readings(self, s: Sample, t_s: float) -> Sample:
        """One-sample corruptions of the readings."""
        cap_max_w = self.inner.constraints().power_cap_max_w
        power = list(s.gpu_power_w)
        energy = list(s.gpu_energy_j_total)
        if self._strikes("nan_power", t_s):
            power = [math.nan] * len(power)
        if self._strikes("inf_power", t_s):
            power = [math.inf] * len(power)
        if self._strikes("negative_power", t_s):
            power[0] = -50.0
        if self._strikes("huge_power", t_s):
            power[0] = 20.0 * cap_max_w
        if self._strikes("nan_energy", t_s):
            energy[0] = math.nan
        if self._strikes("energy_jump", t_s):
            energy[0] += 1e9
        changes: dict[str, Any] = {"gpu_power_w": tuple(power), "gpu_energy_j_total": tuple(energy)}
        if self._strikes("nan_tokens", t_s):
            changes["generated_tokens_total"] = math.nan
        if self._strikes("stale", t_s):
            changes["age_s"] = 60.0
        if self._strikes("nan_time", t_s):
            changes["time_s"] = math.nan
        if self._strikes("malformed", t_s):
            changes["gpu_power_w"] = None
        return replace(s, **changes)
