"""Telemetry the controller can trust: bad readings rejected, counters rebased, a safe fallback.

A node's sample passes through `TelemetryGuard.check` before the loop computes rates from it.
What a real node (NVML, a vLLM `/metrics` scrape) has been seen to send, and what the guard does:

| reading | judged bad when | replaced by | counts as bad |
|---|---|---|---|
| `time_s` | not finite, or before the last accepted sample (a delayed sample) | - (the whole sample is dropped; the next one spans it) | yes |
| engine data age (`age_s`) | above `max_age_s` (the engine stopped answering) | - (the same) | yes |
| generated-token counter | has not moved for `max_age_s` while requests run (a metrics source that froze) | - (the same) | yes |
| GPU power reading (each GPU) | not finite, negative, or above `max_power_factor` x the highest cap | that GPU's last good reading | only if its energy counter fails too |
| GPU energy counter | goes backwards (a driver reset), stops while the GPU draws power, is not finite, or implies a power above `max_power_factor` x the highest cap | this interval's power reading x its length; the counter is rebased (one bad energy reading once sent the cap to its minimum for 40 s) | only if the reading was rejected too |
| power caps | not finite, negative or implausible | the last good caps | yes |
| token / request counters | not finite or negative | - (the whole sample is dropped: the next one counts the tokens over its whole span) | yes |
| token / request counters | go backwards (an engine restart) | counted again from the restart (rebased: no negative throughput) | no |
| queue lengths, batch cap | not finite or negative | the last good value | yes |
| wall power, KV use, latencies, mean lengths | not finite, negative or implausible | absent (None): they are optional | no |

"Bad" means no current value could stand in for a reading the controller needs: a sample whose
GPU power readings are NaN while its energy counters move is repaired, not bad (rates come from
the counters).

A repaired sample is passed on with a warning naming each repair and, for a reused value, how old
it is. After `max_bad_samples` bad samples in a row (a failed `node.sample()` counts too) the loop
moves to the safe configuration (`safe_configuration`) until `recover_good_samples` good ones in a
row have come back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from pals.control.budget import PowerBudget
from pals.control.types import Configuration
from pals.core.node import Constraints, LatencySummary, Sample
from pals.core.power import NodePowerModel
from pals.errors import ConfigError


@dataclass(frozen=True)
class TelemetryGuardConfig:
    """Limits on telemetry and the safe-mode trigger (`ControlLoop(..., telemetry=...)`)."""

    max_power_factor: float = 1.5
    """A GPU's power (read, or implied by its energy counter) above this multiple of the highest cap
    is implausible: caps are enforced by the GPU itself, so 50 % over is a broken sensor, not load."""
    max_bad_samples: int = 6
    """Bad samples in a row before the safe configuration is applied (6 x 0.5 s = 3 s without
    telemetry the controller can use). At least 1."""
    recover_good_samples: int = 2
    """Good samples in a row before control returns to the policy (two, so one observation spans
    good samples at both ends). At least 1."""
    max_age_s: float = 10.0
    """A sample whose engine data (token counters, queues) is older than this is dropped. Units: s.
    A vLLM scrape on a busy host lags by up to a few seconds; ten means the engine stopped answering."""
    min_span_frac: float = 0.5
    """Rates need two samples at least this fraction of the control interval apart; a closer sample
    is merged into the next interval (a 20 ms 'interval' after an overrun rates noise)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_power_factor) and self.max_power_factor >= 1.0):
            raise ConfigError(f"max_power_factor must be a finite number >= 1, got {self.max_power_factor}")
        for name in ("max_bad_samples", "recover_good_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if not (math.isfinite(self.max_age_s) and self.max_age_s > 0):
            raise ConfigError(f"max_age_s must be a finite number > 0 s, got {self.max_age_s}")
        if not (math.isfinite(self.min_span_frac) and 0.0 <= self.min_span_frac <= 1.0):
            raise ConfigError(f"min_span_frac must be within 0-1, got {self.min_span_frac}")


@dataclass(frozen=True)
class GuardResult:
    """What `TelemetryGuard.check` made of one sample."""

    sample: Sample | None
    """The sample to rate from (the node's own object when nothing was wrong); None when rejected."""
    bad: bool
    """Some reading had no usable current value (counts toward the safe configuration)."""
    warnings: tuple[str, ...] = ()
    """One line per rejected or repaired reading."""


def _finite(value: Any) -> bool:
    """True for a finite real number (bools and non-numbers are not)."""
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except TypeError:
        return False


def _count(value: Any) -> bool:
    """A finite number >= 0 (a counter or a queue length)."""
    return _finite(value) and value >= 0


_STALL_MIN_SPAN_S = 0.1
"""An energy counter that has not moved over this long while the GPU draws power is stuck (NVML's
counter moves every few milliseconds); over a shorter span it may just not have ticked yet."""


_FROZEN_WARN_S = 2.0
"""A generated-token counter still for this long while requests run is worth a warning (a decode
step takes tens of milliseconds); after `max_age_s` the sample is dropped as stale."""

_COUNTERS = ("generated_tokens_total", "prompt_tokens_total", "requests_finished_total")


class _Counter:
    """One cumulative counter made monotonic: resets rebased (the value is checked finite already)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.offset = 0.0
        self.raw: float | None = None
        """The node's last finite reading (None: none yet, or the next reading starts afresh)."""
        self.clean: float | None = None

    def update(self, raw: float, warnings: list[str]) -> float:
        """The cleaned value for the node's reading `raw` (finite, >= 0)."""
        if self.raw is not None and raw < self.raw:
            # Counted from zero again (engine restart): what it shows now came after the restart.
            self.offset = self.clean - raw
            warnings.append(f"{self.name} went backwards ({self.raw:g} -> {raw:g}: engine restart?): rebased")
        self.raw = raw
        self.clean = raw + self.offset if self.offset else raw
        return self.clean


class TelemetryGuard:
    """Checks and repairs each sample of one node (see the module docstring for the rules).

    Args:
        constraints: the node's constraints (GPU count and highest cap set the power limits).
        config: the limits.
        power_model: the node-power line (bounds a plausible wall-power reading).
    """

    def __init__(self, constraints: Constraints, config: TelemetryGuardConfig | None = None,
                 power_model: NodePowerModel | None = None) -> None:
        self.constraints = constraints
        self.config = config or TelemetryGuardConfig()
        self.power_model = power_model or NodePowerModel()
        self.max_gpu_w = self.config.max_power_factor * constraints.power_cap_max_w
        self._last: Sample | None = None
        """The last accepted (cleaned) sample."""
        self._power_w: list[float] | None = None
        self._power_time_s: list[float] = []
        self._energy_raw: list[float | None] = []
        self._energy_offset: list[float] = []
        self._generated = _Counter("generated-token counter")
        self._prompt = _Counter("prompt-token counter")
        self._finished = _Counter("finished-request counter")
        self._tokens_moved_s = -math.inf
        self.bad_streak = 0
        self.good_streak = 0
        self.safe = False
        """The safe configuration is in force (entered after `max_bad_samples` bad samples in a row)."""
        self.bad_total = 0
        self.repaired_total = 0

    # -- bookkeeping ------------------------------------------------------------------------------

    def _tally(self, bad: bool) -> bool:
        """Count one sample; return True when the safe state changed."""
        if bad:
            self.bad_total += 1
            self.bad_streak += 1
            self.good_streak = 0
        else:
            self.bad_streak = 0
            self.good_streak += 1
        was = self.safe
        if not self.safe and self.bad_streak >= self.config.max_bad_samples:
            self.safe = True
        elif self.safe and self.good_streak >= self.config.recover_good_samples:
            self.safe = False
        return was != self.safe

    def failed(self) -> bool:
        """A sample that never came (the node raised); True when the safe state changed."""
        return self._tally(True)

    # -- checking ---------------------------------------------------------------------------------

    def check(self, raw: Sample) -> tuple[GuardResult, bool]:
        """(result, safe state changed) for one sample from the node."""
        result = self._check(raw)
        if result.warnings and not result.bad and result.sample is not None:
            self.repaired_total += 1
        return result, self._tally(result.bad)

    def _check(self, raw: Sample) -> GuardResult:
        last = self._last
        t_s = raw.time_s
        if not _finite(t_s) or (last is not None and t_s < last.time_s):
            # (The same time again is a node sampled twice at one instant, as the simulator is when
            # a run restarts: nothing new, and the loop has nothing to rate; not an error.)
            when = "" if last is None else f" (last accepted sample at {last.time_s:.3f} s)"
            return GuardResult(None, True, (f"sample rejected: its time {t_s!r} s is before the last one{when}",))
        if _finite(raw.age_s) and raw.age_s > self.config.max_age_s:
            # The engine has not answered for a while: its counters would rate nothing, then all
            # at once. Dropped whole, the next fresh sample's interval spans the gap exactly.
            return GuardResult(None, True, (f"sample rejected: engine data {raw.age_s:.1f} s old "
                                            f"(limit {self.config.max_age_s:g} s)",))
        broken = [f"{name} {getattr(raw, name)!r}" for name in _COUNTERS if not _count(getattr(raw, name))]
        if broken:
            return GuardResult(None, True, (f"sample rejected: {', '.join(broken)}",))
        frozen_s = self._tokens_frozen_s(raw)
        if frozen_s > self.config.max_age_s:
            return GuardResult(None, True, (f"sample rejected: the generated-token counter has not moved for "
                                            f"{frozen_s:.1f} s while {raw.requests_running} requests run "
                                            "(engine data treated as stale)",))
        warnings: list[str] = []
        if frozen_s >= _FROZEN_WARN_S:
            warnings.append(f"the generated-token counter has not moved for {frozen_s:.1f} s while "
                            f"{raw.requests_running} requests run")
        n = len(raw.gpu_power_w)
        if n == 0 or len(raw.gpu_energy_j_total) != n or len(raw.gpu_power_cap_w) != n or (
            self._power_w is not None and len(self._power_w) != n
        ):
            return GuardResult(None, True, (f"sample rejected: it reports {n} GPU power readings, "
                                            f"{len(raw.gpu_energy_j_total)} energy counters and "
                                            f"{len(raw.gpu_power_cap_w)} caps",))
        changes: dict[str, Any] = {}
        rejected, caps_bad = self._check_power(raw, changes, warnings)
        failed = self._check_energy(raw, changes, warnings)
        bad = caps_bad or bool(rejected & failed)  # a GPU with neither a reading nor a counter
        bad |= self._check_engine(raw, changes, warnings)
        self._check_optional(raw, changes, warnings)
        sample = replace(raw, **changes) if changes else raw
        self._last = sample
        return GuardResult(sample, bad, tuple(warnings))

    def _tokens_frozen_s(self, raw: Sample) -> float:
        """How long the generated-token counter has stood still while requests ran (0 when it moves)."""
        value, running = raw.generated_tokens_total, raw.requests_running
        if not (_count(value) and _count(running)) or running == 0 or value != self._generated.raw:
            self._tokens_moved_s = raw.time_s
            return 0.0
        return raw.time_s - self._tokens_moved_s

    def _check_power(self, raw: Sample, changes: dict[str, Any], warnings: list[str]) -> tuple[set[int], bool]:
        """Per-GPU power readings and caps: (GPUs whose reading was rejected, caps rejected)."""
        t_s, rejected = raw.time_s, set()
        if self._power_w is None:
            # Nothing read yet: a GPU without a reading is taken at its cap (the most it can draw).
            self._power_w = [float(c) if _count(c) else self.constraints.power_cap_max_w for c in raw.gpu_power_cap_w]
            self._power_time_s = [t_s] * len(raw.gpu_power_w)
        readings = list(raw.gpu_power_w)
        for i, w in enumerate(readings):
            if _count(w) and w <= self.max_gpu_w:
                self._power_w[i], self._power_time_s[i] = float(w), t_s
                continue
            age_s = t_s - self._power_time_s[i]
            warnings.append(f"GPU {i} power reading {w!r} W rejected (limit {self.max_gpu_w:g} W): "
                            f"using {self._power_w[i]:g} W read {age_s:.1f} s ago")
            readings[i] = self._power_w[i]
            rejected.add(i)
        if rejected:
            changes["gpu_power_w"] = tuple(readings)
        caps = raw.gpu_power_cap_w
        caps_bad = not all(_count(c) and c <= self.max_gpu_w for c in caps)
        if caps_bad:
            fallback = self._last.gpu_power_cap_w if self._last is not None else (self.constraints.power_cap_max_w,) * len(caps)
            warnings.append(f"power caps {list(caps)!r} rejected: using {list(fallback)!r} W")
            changes["gpu_power_cap_w"] = tuple(fallback)
        return rejected, caps_bad

    def _check_energy(self, raw: Sample, changes: dict[str, Any], warnings: list[str]) -> set[int]:
        """Per-GPU energy counters made monotonic and plausible; returns the GPUs whose counter failed."""
        n = len(raw.gpu_energy_j_total)
        if not self._energy_raw:
            self._energy_raw = [None] * n
            self._energy_offset = [0.0] * n
        last = self._last
        power_w = changes.get("gpu_power_w", raw.gpu_power_w)
        cleaned = list(raw.gpu_energy_j_total)
        failed: set[int] = set()
        for i, e in enumerate(raw.gpu_energy_j_total):
            problem = self._energy_problem(i, e, raw.time_s)
            if problem is None:
                self._energy_raw[i] = e
                cleaned[i] = e + self._energy_offset[i] if self._energy_offset[i] else e
                continue
            # This interval's energy from the power reading; the counter carries on from there.
            dt_s = raw.time_s - last.time_s if last is not None else 0.0
            base_j = last.gpu_energy_j_total[i] if last is not None else 0.0
            cleaned[i] = base_j + float(power_w[i]) * dt_s
            if _finite(e):
                self._energy_raw[i] = e
                self._energy_offset[i] = cleaned[i] - e
            else:
                self._energy_raw[i] = None
            warnings.append(f"GPU {i} energy counter {problem}: interval energy taken from its power reading")
            failed.add(i)
        if failed or any(self._energy_offset):
            changes["gpu_energy_j_total"] = tuple(cleaned)
        return failed

    def _energy_problem(self, i: int, e: Any, t_s: float) -> str | None:
        """What is wrong with GPU `i`'s energy reading `e` (None: nothing)."""
        if not _finite(e):
            return f"reading {e!r} rejected"
        previous = self._energy_raw[i]
        last = self._last
        if last is None:
            return None
        if previous is None:
            return "restarted after a rejected reading"
        delta_j = e - previous
        dt_s = t_s - last.time_s
        if delta_j < 0:
            return f"went backwards ({previous:g} -> {e:g} J: reset?)"
        if delta_j > self.max_gpu_w * dt_s:
            return f"jumped {delta_j:g} J in {dt_s:.3f} s (over {self.max_gpu_w:g} W)"
        if delta_j == 0 and dt_s >= _STALL_MIN_SPAN_S and self._power_w is not None and self._power_w[i] > 0:
            return f"did not move in {dt_s:.3f} s while the GPU drew power"
        return None

    def _check_engine(self, raw: Sample, changes: dict[str, Any], warnings: list[str]) -> bool:
        """Counters, queues, batch cap and data age (a stale one was dropped already); True when a
        last good value had to stand in."""
        last = self._last
        age = raw.age_s
        if not _count(age):
            warnings.append(f"engine data age {age!r} s rejected: taken as fresh")
            changes["age_s"] = age = 0.0
        bad = self._check_counters(raw, changes, warnings)
        if not (_finite(raw.batch_cap) and raw.batch_cap >= 1):
            fallback = last.batch_cap if last is not None else self.constraints.batch_cap_max
            warnings.append(f"batch cap {raw.batch_cap!r} rejected: using {fallback}")
            changes["batch_cap"] = fallback
            bad = True
        return bad

    def _check_counters(self, raw: Sample, changes: dict[str, Any], warnings: list[str]) -> bool:
        """Token and request counters (rebased on a reset) and queue lengths."""
        last, bad = self._last, False
        for field, counter in zip(_COUNTERS, (self._generated, self._prompt, self._finished)):
            value = getattr(raw, field)
            clean = counter.update(value, warnings)
            if clean is not value:
                changes[field] = int(clean) if field == "requests_finished_total" else clean
        for field in ("requests_running", "requests_waiting"):
            value = getattr(raw, field)
            if not _count(value):
                fallback = getattr(last, field) if last is not None else 0
                warnings.append(f"{field.replace('_', ' ')} {value!r} rejected: using {fallback}")
                changes[field] = fallback
                bad = True
        return bad

    def _check_optional(self, raw: Sample, changes: dict[str, Any], warnings: list[str]) -> None:
        """Optional readings: a bad one is dropped (None), with a warning."""
        node_max_w = self.config.max_power_factor * self.power_model.node_w(
            self.constraints.num_gpus * self.constraints.power_cap_max_w)
        if raw.node_power_w is not None and not (_count(raw.node_power_w) and raw.node_power_w <= node_max_w):
            warnings.append(f"node power reading {raw.node_power_w!r} W rejected (limit {node_max_w:g} W)")
            changes["node_power_w"] = None
        if raw.kv_cache_usage is not None and not _count(raw.kv_cache_usage):
            warnings.append(f"KV-cache use {raw.kv_cache_usage!r} rejected")
            changes["kv_cache_usage"] = None
        for field in ("ttft", "tpot"):
            value: LatencySummary | None = getattr(raw, field)
            if value is not None and not (_count(value.p50_s) and _count(value.p99_s)):
                warnings.append(f"{field} summary {value!r} rejected")
                changes[field] = None
        for field in ("mean_prompt_tokens", "mean_output_tokens"):
            value = getattr(raw, field)
            if value is not None and not (_finite(value) and value > 0):
                warnings.append(f"{field.replace('_', ' ')} {value!r} rejected")
                changes[field] = None


def safe_configuration(
    constraints: Constraints,
    budget: PowerBudget | None,
    current: Configuration | None,
    power_model: NodePowerModel,
) -> Configuration:
    """Where the node goes when its telemetry cannot be trusted (`max_bad_samples` bad in a row).

    Without telemetry the controller cannot see power or demand, so the configuration must be safe
    whatever they are:

    - Power cap: with a budget, no higher than the budget shared equally among the GPUs (a node
      budget through the node-power line, as everywhere in PALS). The GPU enforces its own cap, so
      the node stays within its budget at worst case (every GPU at its cap) with no reading at all;
      a cap already lower stays (nothing unseen pushes power up). Never below the GPU's lowest cap
      (a budget below it is best effort, as in normal control). Without a budget the cap is left as
      it is: there is no limit to protect, and raising it blind could exceed one the operator set
      outside PALS.
    - Batch cap: the engine's maximum. A small batch cap with an unseen queue starves requests;
      the maximum serves every request the cap's power allows, and at a fixed cap a larger batch
      costs no extra power beyond the cap.

    `current` is the configuration in force (None when unknown: the cap is then the budget's, or
    the highest without a budget).
    """
    c = constraints
    cap_w = current.power_cap_w if current is not None else c.power_cap_max_w
    if budget is not None and c.power_cap_settable:
        gpu_total_w = budget.budget_w if budget.kind == "gpu" else power_model.gpu_w(budget.budget_w)
        cap_w = min(cap_w, gpu_total_w / c.num_gpus)
    if c.power_cap_settable:
        cap_w = float(min(max(cap_w, c.power_cap_min_w), c.power_cap_max_w))
    return Configuration(cap_w, c.batch_cap_max)
