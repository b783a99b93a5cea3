"""The per-interval record: what one control interval measured, decided and applied.

`ControlLoop.step` builds one `IntervalRecord` per interval; the decision log, the Prometheus
metrics, the run summary and `ControlLoop.status` read its typed fields. `to_json()` gives the
line the decision log writes (`decisions.jsonl`, documented key by key in
`docs/decisions-schema.md`, machine-readable in `pals/data/decisions.schema.json`);
`IntervalRecord.from_json` reads such a line back.

Values are held at the precision the log keeps (each field says how many decimals), so a record
read back from the log equals the one the loop built, and every reader (live or from a file) sees
the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from pals.control.budget import PowerBudget, ThroughputTarget
from pals.control.slo import Slo
from pals.control.types import Decision, Observation
from pals.core.node import LatencySummary
from pals.errors import ConfigError


def json_ready(value: Any) -> Any:
    """JSON-safe copy: NaN and inf become None (JSON has no NaN), numpy scalars become Python ones."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return json_ready(value.item())
    return value


def plain(value: Any) -> Any:
    """A numpy scalar as the Python number the log writes (rounding stays the caller's: numpy and
    Python round differently, so each value is rounded as it always was, then converted)."""
    return value.item() if hasattr(value, "item") and callable(value.item) else value


def logged_budget(budget: PowerBudget | None) -> PowerBudget | None:
    """`budget` with a plain Python number, as the log writes it."""
    if budget is None or type(budget.budget_w) in (int, float):
        return budget
    return PowerBudget(plain(budget.budget_w), budget.kind)


def logged_target(target: ThroughputTarget | None) -> ThroughputTarget | None:
    """`target` with a plain Python number, as the log writes it."""
    if target is None or type(target.target_tps) in (int, float):
        return target
    return ThroughputTarget(plain(target.target_tps))


def _require(data: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"decision record: {where} is not a JSON object: {data!r}")
    if key not in data:
        raise ConfigError(f"decision record: {where} lacks key {key!r}; is this a PALS decisions.jsonl line?")
    return data[key]


@dataclass(frozen=True)
class IntervalSample:
    """What the node did over the interval (the log's `sample`), at the log's precision."""

    throughput_tps: float
    """Generated (output) tokens per second over the interval, whole node; 3 decimals."""
    gpu_power_w: float
    """Mean total GPU power over the interval (energy counters). Units: W; 2 decimals."""
    node_power_w: float
    """Mean node wall power over the interval (the node-power line on the GPU power). Units: W; 2 decimals."""
    requests_waiting: int
    """Requests waiting in the queue at the end of the interval."""
    requests_running: int
    """Requests running at the end of the interval."""
    power_cap_w: float
    """Mean power cap in force per GPU at the end of the interval. Units: W; 2 decimals."""
    batch_cap: int
    """Batch cap in force at the end of the interval (max running sequences per replica)."""
    generated_tokens: float | None = None
    """Output tokens counted over the interval (the engine counter's delta; summing them over the
    log gives the counter's total); 3 decimals. None in logs written before it was recorded."""
    mean_prompt_tokens: float | None = None
    """Mean prompt length of recent requests, when the node reports it; 1 decimal."""
    mean_output_tokens: float | None = None
    """Mean output length of recent requests, when the node reports it; 1 decimal."""
    ttft_p50_s: float | None = None
    """Median time to first token over the node's recent window (None: not reported). Units: s; 5 decimals."""
    ttft_p90_s: float | None = None
    """90th percentile of the time to first token (None: not reported). Units: s; 5 decimals."""
    ttft_p99_s: float | None = None
    """99th percentile of the time to first token (None: not reported). Units: s; 5 decimals."""
    ttft_count: int | None = None
    """Requests the TTFT percentiles cover (None: not reported)."""
    tpot_p50_s: float | None = None
    """Median time per output token over the node's recent window (None: not reported). Units: s; 5 decimals."""
    tpot_p90_s: float | None = None
    """90th percentile of the time per output token (None: not reported). Units: s; 5 decimals."""
    tpot_p99_s: float | None = None
    """99th percentile of the time per output token (None: not reported). Units: s; 5 decimals."""
    tpot_count: int | None = None
    """Requests the TPOT percentiles cover (None: not reported)."""

    def latency_s(self, kind: str, quantile: float) -> float | None:
        """The `kind` ("ttft" or "tpot") percentile at `quantile` (0.5, 0.9, 0.99); None when not reported."""
        return getattr(self, f"{kind}_p{round(quantile * 100):d}_s", None)

    @classmethod
    def from_observation(cls, obs: Observation) -> "IntervalSample":
        return cls(
            throughput_tps=plain(round(obs.throughput_tps, 3)),
            gpu_power_w=plain(round(obs.gpu_power_w, 2)),
            node_power_w=plain(round(obs.node_power_w, 2)),
            requests_waiting=plain(obs.requests_waiting),
            requests_running=plain(obs.requests_running),
            power_cap_w=plain(round(obs.power_cap_w, 2)),
            batch_cap=plain(obs.batch_cap),
            generated_tokens=plain(round(obs.generated_tokens, 3)),
            mean_prompt_tokens=None if obs.mean_prompt_tokens is None else plain(round(obs.mean_prompt_tokens, 1)),
            mean_output_tokens=None if obs.mean_output_tokens is None else plain(round(obs.mean_output_tokens, 1)),
            **_latency_fields("ttft", obs.ttft),
            **_latency_fields("tpot", obs.tpot),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "throughput_tps": self.throughput_tps,
            "gpu_power_w": self.gpu_power_w,
            "node_power_w": self.node_power_w,
            "requests_waiting": self.requests_waiting,
            "requests_running": self.requests_running,
            "power_cap_w": self.power_cap_w,
            "batch_cap": self.batch_cap,
        }
        if self.generated_tokens is not None:
            out["generated_tokens"] = self.generated_tokens
        # Optional keys are absent (not null) when the node does not report request lengths.
        if self.mean_prompt_tokens is not None:
            out["mean_prompt_tokens"] = self.mean_prompt_tokens
        if self.mean_output_tokens is not None:
            out["mean_output_tokens"] = self.mean_output_tokens
        for key in LATENCY_SAMPLE_KEYS:  # absent when the node reports no latency
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "IntervalSample":
        where = "sample"
        return cls(
            throughput_tps=_require(data, "throughput_tps", where),
            gpu_power_w=_require(data, "gpu_power_w", where),
            node_power_w=_require(data, "node_power_w", where),
            requests_waiting=_require(data, "requests_waiting", where),
            requests_running=_require(data, "requests_running", where),
            power_cap_w=_require(data, "power_cap_w", where),
            batch_cap=_require(data, "batch_cap", where),
            generated_tokens=data.get("generated_tokens"),
            mean_prompt_tokens=data.get("mean_prompt_tokens"),
            mean_output_tokens=data.get("mean_output_tokens"),
            **{key: data.get(key) for key in LATENCY_SAMPLE_KEYS},
        )


LATENCY_SAMPLE_KEYS = tuple(f"{kind}_{name}" for kind in ("ttft", "tpot") for name in ("p50_s", "p90_s", "p99_s", "count"))
"""The optional latency keys of the log's `sample` (absent when the node reports no latency)."""


def _latency_fields(kind: str, summary: LatencySummary | None) -> dict[str, Any]:
    """`IntervalSample` latency fields of one `LatencySummary` (all None when there is none or it is empty)."""
    if summary is None or not summary.count:
        return {}
    def seconds(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else plain(round(float(value), 5))
    return {f"{kind}_p50_s": seconds(summary.p50_s), f"{kind}_p90_s": seconds(summary.p90_s),
            f"{kind}_p99_s": seconds(summary.p99_s), f"{kind}_count": int(summary.count)}


@dataclass(frozen=True)
class Prediction:
    """What the policy's last selection predicted for the configuration in force during the
    interval (the log's `predicted`), at full precision, to set against `Measured`."""

    throughput_tps: float
    """Predicted delivered throughput. Units: generated tokens/s."""
    gpu_power_w: float | None
    """Predicted total GPU power (None when the policy predicts none). Units: W."""
    node_power_w: float | None
    """Predicted node wall power (None when the policy predicts none). Units: W."""

    @classmethod
    def from_decision(cls, decision: Decision) -> "Prediction":
        return cls(
            plain(decision.predicted_throughput_tps),
            plain(decision.predicted_gpu_power_w),
            plain(decision.predicted_node_power_w),
        )

    def to_json(self) -> dict[str, Any]:
        return {"throughput_tps": self.throughput_tps, "gpu_power_w": self.gpu_power_w, "node_power_w": self.node_power_w}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Prediction":
        where = "predicted"
        return cls(_require(data, "throughput_tps", where), data.get("gpu_power_w"), data.get("node_power_w"))


@dataclass(frozen=True)
class Measured:
    """The measured counterpart of `Prediction` (the log's `measured`), at the log's precision."""

    throughput_tps: float
    """Generated tokens per second over the interval; 3 decimals."""
    gpu_power_w: float
    """Mean total GPU power over the interval. Units: W; 2 decimals."""
    node_power_w: float
    """Mean node wall power over the interval. Units: W; 2 decimals."""
    budget_power_w: float | None
    """The interval's power in the budget's kind (GPU or node); None without a budget. Units: W; 2 decimals."""
    window_throughput_tps: float
    """Throughput over the trailing QoS window ending with this interval (`pals.control.qos`); 3 decimals."""

    @classmethod
    def from_observation(cls, obs: Observation, budget: PowerBudget | None, window_tps: float) -> "Measured":
        budget_w = None if budget is None else (obs.gpu_power_w if budget.kind == "gpu" else obs.node_power_w)
        return cls(
            throughput_tps=plain(round(obs.throughput_tps, 3)),
            gpu_power_w=plain(round(obs.gpu_power_w, 2)),
            node_power_w=plain(round(obs.node_power_w, 2)),
            budget_power_w=None if budget_w is None else plain(round(budget_w, 2)),
            window_throughput_tps=plain(round(window_tps, 3)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "throughput_tps": self.throughput_tps,
            "gpu_power_w": self.gpu_power_w,
            "node_power_w": self.node_power_w,
            "budget_power_w": self.budget_power_w,
            "window_throughput_tps": self.window_throughput_tps,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Measured":
        where = "measured"
        return cls(
            throughput_tps=_require(data, "throughput_tps", where),
            gpu_power_w=_require(data, "gpu_power_w", where),
            node_power_w=_require(data, "node_power_w", where),
            budget_power_w=data.get("budget_power_w"),
            window_throughput_tps=_require(data, "window_throughput_tps", where),
        )


def _budget_json(budget: PowerBudget | None) -> dict[str, Any] | None:
    return None if budget is None else {"budget_w": budget.budget_w, "kind": budget.kind}


def _target_json(target: ThroughputTarget | None) -> dict[str, Any] | None:
    return None if target is None else {"target_tps": target.target_tps}


_REQUIRED_KEYS = ("t_s", "time_s", "interval", "policy", "sample", "budget", "target", "decision")
"""Keys every decision-log line has had; `from_json` defaults the others."""


@dataclass(frozen=True)
class IntervalRecord:
    """One control interval: one line of `decisions.jsonl`.

    The first interval of a run has no measured sample (`sample` is None): it only sets the
    initial configuration, and its line has no `predicted`, `measured`, `capacity_limited` or
    `qos_violation` keys. Neither has a later interval whose telemetry was rejected (see
    `pals.control.telemetry_guard`) or came too soon after the last one to rate: the next measured
    interval spans it (its `interval_s` is the whole span), and its decision holds the
    configuration (`reason` "held: ..."), moves to the safe configuration (`decision.extra`
    `safe_mode`: true), or acts on a budget or target that just changed.
    """

    t_s: float
    """Seconds since the loop's first sample (node clock); 4 decimals."""
    time_s: float
    """The node clock at this interval's sample. Units: s; 4 decimals."""
    interval: int
    """Index of the interval, from 0."""
    interval_s: float
    """Length of the interval just measured (0.0 when nothing was measured). Units: s; 4 decimals."""
    policy: str
    """Name of the policy that decided."""
    sample: IntervalSample | None
    """What the node did over the interval; None for the first interval."""
    budget: PowerBudget | None
    """Power budget in force at the decision (None: unconstrained)."""
    target: ThroughputTarget | None
    """Throughput target in force at the decision (None: maximise tokens/J)."""
    decision: Decision
    """The policy's decision, at the log's precision (`Decision.as_logged`)."""
    config_changed: bool
    """True when a new configuration was applied at this interval."""
    governor_trim: bool
    """True when the applied change only followed the budget governor's cap bound."""
    at_max_config: bool
    """True when the configuration in force was the node's maximum (cap and batch cap)."""
    decide_ms: float
    """Wall time the policy took to decide. Units: ms; 3 decimals."""
    warnings: tuple[str, ...] = ()
    """The policy's warnings, then the node's notes, then the loop's (rejected or repaired
    telemetry, a node, policy or decision-log error), then a failed actuation's message."""
    predicted: Prediction | None = None
    """The prediction in force during the interval (None when the policy made none)."""
    measured: Measured | None = None
    """Measured throughput and power of the interval (None for the first interval)."""
    capacity_limited: bool | None = None
    """Requests waited with every replica's batch nearly full (`pals.control.policies.capacity_limited`);
    None for the first interval and in logs written before the key existed."""
    qos_violation: bool = False
    """The interval violated the throughput target (`pals.control.qos`)."""
    slo: Slo | None = None
    """Latency SLO in force at the decision (None: none; `pals.control.slo`)."""
    slo_violation: bool = False
    """The interval broke the latency SLO: the node's TPOT or TTFT quantile above it while requests ran."""

    def __post_init__(self) -> None:
        if self.interval < 0:
            raise ConfigError(f"decision record: interval must be >= 0, got {self.interval}")
        if not self.interval_s >= 0:
            raise ConfigError(f"decision record: interval_s must be >= 0 s, got {self.interval_s}")
        if (self.measured is not None) and self.sample is None:
            raise ConfigError(f"decision record {self.interval}: a measurement without a sample")

    def to_json(self) -> dict[str, Any]:
        """The decision-log line as a JSON-ready dict (key order as written; NaN as null)."""
        out: dict[str, Any] = {
            "t_s": self.t_s,
            "time_s": self.time_s,
            "interval": self.interval,
            "interval_s": self.interval_s,
            "policy": self.policy,
            "sample": None if self.sample is None else self.sample.to_json(),
            "budget": _budget_json(self.budget),
            "target": _target_json(self.target),
            "slo": None if self.slo is None else self.slo.to_json(),
            "decision": self.decision.as_dict(),
            "config_changed": self.config_changed,
            "governor_trim": self.governor_trim,
            "at_max_config": self.at_max_config,
            "decide_ms": self.decide_ms,
            "warnings": list(self.warnings),
        }
        if self.sample is not None:
            out["predicted"] = {} if self.predicted is None else self.predicted.to_json()
            out["measured"] = None if self.measured is None else self.measured.to_json()
            out["capacity_limited"] = self.capacity_limited
            out["qos_violation"] = self.qos_violation
            out["slo_violation"] = self.slo_violation
        return json_ready(out)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "IntervalRecord":
        """Read one decision-log line (as parsed JSON) back into a record.

        Keys added after the first logs (`governor_trim`, `at_max_config`, `capacity_limited`,
        `predicted`, `measured`) and the optional ones default as the summary always read them.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"decision record: a line is not a JSON object: {data!r}")
        missing = [key for key in _REQUIRED_KEYS if key not in data]
        if missing:
            raise ConfigError(f"decision record: line lacks {', '.join(map(repr, missing))}; "
                              "is this a PALS decisions.jsonl line?")
        sample, budget, target = data["sample"], data["budget"], data["target"]
        predicted = data.get("predicted")
        measured = data.get("measured")
        return cls(
            t_s=data["t_s"],
            time_s=data["time_s"],
            interval=data["interval"],
            interval_s=data.get("interval_s", 0.0),
            policy=data["policy"],
            sample=None if sample is None else IntervalSample.from_json(sample),
            budget=None if budget is None else PowerBudget(_require(budget, "budget_w", "budget"), budget.get("kind", "node")),
            target=None if target is None else ThroughputTarget(_require(target, "target_tps", "target")),
            decision=Decision.from_json(data["decision"]),
            config_changed=bool(data.get("config_changed", False)),
            governor_trim=bool(data.get("governor_trim", False)),
            at_max_config=bool(data.get("at_max_config", False)),
            decide_ms=data.get("decide_ms", 0.0),
            warnings=tuple(data.get("warnings", ())),
            predicted=Prediction.from_json(predicted) if predicted else None,
            measured=None if measured is None else Measured.from_json(measured),
            capacity_limited=data.get("capacity_limited"),
            qos_violation=bool(data.get("qos_violation", False)),
            slo=Slo.from_json(data.get("slo")),
            slo_violation=bool(data.get("slo_violation", False)),
        )
