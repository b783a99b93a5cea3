"""Values that flow through one control interval: observation in, decision out.

`observe(previous, current)` turns two node `Sample`s into one `Observation` (rates and mean
powers over the interval between them). A policy receives a `DecisionContext` and returns a
`Decision`; the loop applies `Decision.config` and logs both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pals.control.budget import PowerBudget, ThroughputTarget
from pals.control.slo import Slo
from pals.core.node import Constraints, LatencySummary, Sample
from pals.core.power import NodePowerModel
from pals.errors import ConfigError


@dataclass(frozen=True, order=True)
class Configuration:
    """One point of the runtime knob space."""

    power_cap_w: float
    """Power limit of every GPU. Units: W."""
    batch_cap: int
    """Max running sequences per engine replica."""

    def as_dict(self) -> dict[str, Any]:
        return {"power_cap_w": round(float(self.power_cap_w), 3), "batch_cap": int(self.batch_cap)}


@dataclass(frozen=True)
class Observation:
    """What happened over one control interval (between two samples)."""

    time_s: float
    """End of the interval on the node's clock. Units: s."""
    interval_s: float
    """Length of the interval (between the two samples). Units: s."""
    throughput_tps: float
    """Generated (output) tokens per second over the interval, whole node."""
    prompt_tps: float
    """Prompt tokens per second over the interval."""
    gpu_power_w: float
    """Mean total GPU power over the interval (energy counters), falling back to the instant reading. Units: W."""
    node_power_w: float
    """Mean wall power over the interval, estimated from the mean GPU power with the node-power line
    (the paper's method: instantaneous wall readings are one noisy point per interval). Units: W."""
    node_power_reading_w: float | None
    """The node's own instantaneous wall-power reading at the end of the interval, when it has one. Units: W."""
    generated_tokens: float
    """Output tokens generated over the interval: the counter's own delta, so intervals add up to the
    counter (its span is `age_s`-shifted from the interval's; `throughput_tps` rates it over that span)."""
    gpu_energy_j: float
    """GPU energy over the interval. Units: J."""
    node_energy_j: float
    """Node energy over the interval (from `node_power_w`). Units: J."""
    requests_waiting: int
    """Requests waiting in the queue at the end of the interval."""
    requests_running: int
    """Requests running at the end of the interval."""
    power_cap_w: float
    """Mean power cap in force per GPU at the end of the interval. Units: W."""
    batch_cap: int
    """Batch cap in force at the end of the interval."""
    mean_prompt_tokens: float | None = None
    """Mean prompt length of recent requests, when the node reports it."""
    mean_output_tokens: float | None = None
    """Mean output length of recent requests, when the node reports it."""
    notes: tuple[str, ...] = ()
    """The node's notes on its sample (stale telemetry and the like), logged as warnings."""
    ttft: LatencySummary | None = None
    """Time to first token over the node's recent window, when it reports it."""
    tpot: LatencySummary | None = None
    """Time per output token over the node's recent window, when it reports it."""

    @property
    def demand_limited(self) -> bool:
        """True when nothing was waiting: the node served all the load it was offered."""
        return self.requests_waiting == 0


def observe(previous: Sample, current: Sample, power_model: NodePowerModel | None = None) -> Observation:
    """Rates and mean powers over the interval between two samples of the same node."""
    power_model = power_model or NodePowerModel()
    dt_s = max(current.time_s - previous.time_s, 1e-9)
    # Engine counters are `age_s` old when sampled (a scrape lags): rate them over their own span.
    counter_dt_s = (current.time_s - current.age_s) - (previous.time_s - previous.age_s)
    counter_dt_s = counter_dt_s if counter_dt_s > 0.2 * dt_s else dt_s
    generated = max(0.0, current.generated_tokens_total - previous.generated_tokens_total)
    prompt = max(0.0, current.prompt_tokens_total - previous.prompt_tokens_total)
    energy_j = current.gpu_energy_total_j - previous.gpu_energy_total_j
    # Energy counters give the true mean over the interval; instant readings are one noisy point.
    gpu_power_w = energy_j / dt_s if energy_j > 0 else current.gpu_power_total_w
    node_power_w = power_model.node_w(gpu_power_w)
    caps = current.gpu_power_cap_w
    return Observation(
        time_s=current.time_s,
        interval_s=dt_s,
        throughput_tps=generated / counter_dt_s,
        prompt_tps=prompt / counter_dt_s,
        gpu_power_w=gpu_power_w,
        node_power_w=node_power_w,
        node_power_reading_w=None if current.node_power_w is None else float(current.node_power_w),
        generated_tokens=generated,
        gpu_energy_j=gpu_power_w * dt_s,
        node_energy_j=node_power_w * dt_s,
        requests_waiting=int(current.requests_waiting),
        requests_running=int(current.requests_running),
        power_cap_w=float(sum(caps) / len(caps)) if caps else 0.0,
        batch_cap=int(current.batch_cap),
        mean_prompt_tokens=current.mean_prompt_tokens,
        mean_output_tokens=current.mean_output_tokens,
        notes=tuple(current.notes),
        ttft=current.ttft,
        tpot=current.tpot,
    )


@dataclass(frozen=True)
class DecisionContext:
    """Everything a policy may look at. Policies never see the node itself."""

    constraints: Constraints
    current: Configuration
    """Configuration in force now."""
    observation: Observation | None
    """The interval that just ended (None on the first decision)."""
    budget: PowerBudget | None
    """Power budget in force (None: unconstrained)."""
    target: ThroughputTarget | None
    """Throughput target in force (None: maximise tokens/J)."""
    constraints_changed: bool
    """True when the budget, the target or the SLO changed since the previous decision: act at once."""
    interval_index: int
    """Index of the interval being decided, from 0."""
    power_model: NodePowerModel = field(default_factory=NodePowerModel)
    """Node-power line relating GPU power to wall power."""
    slo: Slo | None = None
    """Latency SLO in force (None: none); a change sets `constraints_changed` too."""

    def budget_gpu_total_w(self) -> float | None:
        """The budget expressed as a total-GPU-power limit (None without a budget)."""
        if self.budget is None:
            return None
        if self.budget.kind == "gpu":
            return self.budget.budget_w
        return self.power_model.gpu_w(self.budget.budget_w)

    def measured_budget_power_w(self) -> float | None:
        """Measured power of the interval in the budget's own kind."""
        if self.observation is None or self.budget is None:
            return None
        return self.observation.gpu_power_w if self.budget.kind == "gpu" else self.observation.node_power_w


@dataclass(frozen=True)
class Decision:
    """A policy's answer for one interval."""

    config: Configuration
    reason: str
    """Why, in words (logged)."""
    candidates_considered: int = 1
    """Configurations the policy evaluated (0 when it held or followed the governor)."""
    candidates_feasible: int = 1
    """Candidates that fit under the budget."""
    candidates_meeting_target: int | None = None
    """Feasible candidates predicted to meet the target (None without a target or a selection)."""
    predicted_throughput_tps: float | None = None
    """Predicted delivered throughput of the chosen configuration. Units: tokens/s."""
    predicted_gpu_power_w: float | None = None
    """Predicted total GPU power of the chosen configuration. Units: W."""
    predicted_node_power_w: float | None = None
    """Predicted node wall power of the chosen configuration. Units: W."""
    predicted_tokens_per_joule: float | None = None
    """Predicted throughput over predicted node power. Units: tokens/J."""
    budget_bound: bool = False
    """True when the budget kept the policy from the configuration it would otherwise choose."""
    governor_trim: bool = False
    """True when only the cap moves, following the budget governor's bound: budget enforcement,
    not a new choice (counted apart from configuration changes)."""
    warnings: tuple[str, ...] = ()
    """Warnings the policy raises this interval (logged)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Policy-specific figures for the log (PID margin, power bias, demand, ...); JSON scalars."""

    def as_logged(self) -> "Decision":
        """This decision at the precision the decision log keeps (cap 3 decimals, predictions 4);
        `as_dict` of either is the same."""
        return replace(
            self,
            config=Configuration(round(float(self.config.power_cap_w), 3), int(self.config.batch_cap)),
            predicted_throughput_tps=_round_or_none(self.predicted_throughput_tps, 4),
            predicted_gpu_power_w=_round_or_none(self.predicted_gpu_power_w, 4),
            predicted_node_power_w=_round_or_none(self.predicted_node_power_w, 4),
            predicted_tokens_per_joule=_round_or_none(self.predicted_tokens_per_joule, 4),
            budget_bound=bool(self.budget_bound),
            governor_trim=bool(self.governor_trim),
            warnings=tuple(self.warnings),
            extra=dict(self.extra),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Decision":
        """Read `as_dict` output back (fields other than `config` and `reason` may be absent)."""
        if not isinstance(data, dict) or "config" not in data or "reason" not in data:
            raise ConfigError(f"decision record: `decision` needs `config` and `reason`, got {data!r}")
        config = data["config"]
        kwargs = {key: data[key] for key in _DECISION_SCALARS if key in data}
        return cls(
            config=Configuration(config["power_cap_w"], config["batch_cap"]),
            reason=data["reason"],
            warnings=tuple(data.get("warnings", ())),
            extra=dict(data.get("extra") or {}),
            **kwargs,
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["config"] = self.config.as_dict()
        out["warnings"] = list(self.warnings)
        for key in ("predicted_throughput_tps", "predicted_gpu_power_w", "predicted_node_power_w", "predicted_tokens_per_joule"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 4)
        return out


_DECISION_SCALARS = (
    "candidates_considered", "candidates_feasible", "candidates_meeting_target", "predicted_throughput_tps",
    "predicted_gpu_power_w", "predicted_node_power_w", "predicted_tokens_per_joule", "budget_bound", "governor_trim",
)
"""`Decision` fields read back from a log line as they are (`config`, `warnings`, `extra` need converting)."""


def _round_or_none(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)
