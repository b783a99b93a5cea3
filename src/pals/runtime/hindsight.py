"""The hindsight oracle: every fixed configuration of the grid run on the same stream, the best one kept.

Each (cap, batch) of the grid runs as the `static` policy through the same loop and budget guard
as the policy under test, on the same request stream and seed. The hindsight optimum is the best
objective (`tokens_per_joule`, node, by default; `tokens_per_joule_gpu` for "gpu") among the
configurations that MEET explicit criteria (`MeetCriteria`), stated as thresholds on the run
summaries' own keys: QoS violations (`qos_violation_pct`), budget overshoot
(`budget_overshoot_pct`), SLO violations (`slo_violation_pct`, where summaries carry it), and, where a
yardstick must serve the same load as the policy under test, throughput (`MeetCriteria.serving`) and
request latency within a public service bound (`MeetCriteria.within_service_bound`).
Experiments usually hold the grid to the policy under test's own figures
(`MeetCriteria.no_worse_than`), so that "PALS reaches x of the hindsight optimum" is a comparison
at equal or fewer violations.

`hindsight_over` is the sweep itself over any runner (the experiments pass their own, which warms
the node and uses the paper's node-power line); `hindsight_static_optimum` runs it with
`run_scenario` (`pals run --policy hindsight`). `HindsightResult.write` puts the whole table in a
run folder (`hindsight.csv`) and returns its summary.json entry.

Runs are sequential unless `workers` > 1 (a fork-based process pool: each run is a fresh seeded
node, so results do not depend on order or on the pool; the pool pays off only on an idle
machine: `benchmarks/bench_hindsight.py` measures it).
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pals.control.policies import DEFAULT_OBJECTIVE, OBJECTIVES, PolicyOptions
from pals.control.types import Configuration
from pals.core.io import atomic_write_text
from pals.core.paper import CONTROL_INTERVAL_S, PAPER_BATCH_CAPS, PAPER_POWER_CAPS_W
from pals.core.power import NodePowerModel
from pals.errors import ConfigError
from pals.runtime.deployment import Deployment
from pals.runtime.load import LoadSpec

THROUGHPUT_SHORTFALL_MAX = 0.02
"""Where a yardstick must serve the same load as the policy under test (`MeetCriteria.min_throughput_tps`), a fixed
configuration may deliver this fraction less than it: the few requests still in flight at the end of a run."""
SERVICE_TTFT_P99_MAX_S = 2.0
"""The service bound on run-level p99 time to first token (`MeetCriteria.within_service_bound`): MLPerf
Inference's server-scenario limit for Mixtral-8x7B and Llama-2-70B (mlcommons/inference, loadgen/mlperf.conf:
`ttft_latency = 2000` ms at the 99th percentile). Units: s."""
SERVICE_TPOT_P99_MAX_MS = 200.0
"""The service bound on run-level p99 time per output token, from the same source (`tpot_latency = 200`).
Units: ms."""
OBJECTIVE_KEYS = {"node": "tokens_per_joule", "gpu": "tokens_per_joule_gpu"}
"""The summary key each objective reads."""


def reported(summary: Mapping[str, Any], key: str) -> float | None:
    """`summary[key]` as a float, or None where the run reports none (absent, None or not finite: a run with no
    finished request has no latency quantile)."""
    value = summary.get(key)
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _limit(value: float | None, name: str) -> None:
    if value is not None and not (value >= 0 and math.isfinite(value)):
        raise ConfigError(f"hindsight criterion {name} must be a finite number >= 0 (or none), got {value!r}")


@dataclass(frozen=True)
class MeetCriteria:
    """What a fixed configuration must achieve to count for the hindsight optimum (None: no limit).

    Each limit is compared with the run summary's key of the same meaning, `<=` with `slack_pct`
    added (absolute percentage points), so "no more violations than the policy under test" is
    `MeetCriteria(max_qos_violation_pct=its_violations)`.
    """

    max_qos_violation_pct: float | None = None
    """Largest share of intervals violating the throughput target (`qos_violation_pct`). Units: %."""
    max_budget_overshoot_pct: float | None = None
    """Largest share of budget intervals over the budget (`budget_overshoot_pct`). Units: %."""
    max_slo_violation_pct: float | None = None
    """Largest share violating the latency SLO (`slo_violation_pct`; ignored by summaries without it). Units: %."""
    slack_pct: float = 0.0
    """Added to every limit before comparing (percentage points)."""
    min_throughput_tps: float | None = None
    """Least generated throughput (`throughput_tps`): a configuration whose capacity is under the offered
    load builds a queue the QoS window does not see while it still delivers the target. Units: tokens/s."""
    max_ttft_p99_s: float | None = None
    """Largest run-level p99 time to first token (`ttft_p99_s`; a summary without one is not held to it). Units: s."""
    max_tpot_p99_ms: float | None = None
    """Largest run-level p99 time per output token (`tpot_p99_ms`; likewise). Units: ms."""

    def __post_init__(self) -> None:
        for name in ("max_qos_violation_pct", "max_budget_overshoot_pct", "max_slo_violation_pct", "slack_pct",
                     "min_throughput_tps", "max_ttft_p99_s", "max_tpot_p99_ms"):
            _limit(getattr(self, name), name)

    def serving(self, throughput_tps: float | None) -> "MeetCriteria":
        """These limits, and at least `throughput_tps` less `THROUGHPUT_SHORTFALL_MAX` served (None: no floor)."""
        floor = None if throughput_tps is None else float(throughput_tps) * (1.0 - THROUGHPUT_SHORTFALL_MAX)
        return replace(self, min_throughput_tps=floor)

    def within_service_bound(self, ttft_p99_s: float | None = None,
                             tpot_p99_ms: float | None = None) -> "MeetCriteria":
        """These limits, and request latency within the service bound (`SERVICE_TTFT_P99_MAX_S`,
        `SERVICE_TPOT_P99_MAX_MS`) or within the policy under test's own p99 (`ttft_p99_s`, `tpot_p99_ms`;
        None: unknown), whichever is larger.

        Why: violations and throughput do not see queueing. Under a load above its target a fixed configuration
        at ~95 % utilisation delivers the target and the load while its requests wait seconds for their first
        token; without a latency limit that is the optimum. The bound is a public one, not the policy's: a
        policy slower than the bound is still compared (with a yardstick no slower than itself)."""
        def larger(bound: float, own: float | None) -> float:
            return bound if own is None or not math.isfinite(own) else max(bound, float(own))
        return replace(self, max_ttft_p99_s=larger(SERVICE_TTFT_P99_MAX_S, ttft_p99_s),
                       max_tpot_p99_ms=larger(SERVICE_TPOT_P99_MAX_MS, tpot_p99_ms))

    @classmethod
    def no_worse_than(cls, summary: Mapping[str, Any], slack_pct: float = 0.0) -> "MeetCriteria":
        """No more QoS violations, budget overshoot or SLO violations than `summary` (the policy under test)."""
        return cls(max_qos_violation_pct=float(summary.get("qos_violation_pct", 0.0)),
                   max_budget_overshoot_pct=float(summary.get("budget_overshoot_pct", 0.0)),
                   max_slo_violation_pct=None if summary.get("slo_violation_pct") is None
                   else float(summary["slo_violation_pct"]),
                   slack_pct=slack_pct)

    def failures(self, summary: Mapping[str, Any]) -> list[str]:
        """The limits `summary` breaks, in words (empty: it meets them)."""
        out = []
        for limit_name, key in (("max_qos_violation_pct", "qos_violation_pct"),
                                ("max_budget_overshoot_pct", "budget_overshoot_pct"),
                                ("max_slo_violation_pct", "slo_violation_pct")):
            limit = getattr(self, limit_name)
            value = summary.get(key)
            if limit is not None and value is not None and float(value) > limit + self.slack_pct + 1e-9:
                out.append(f"{key} {float(value):.2f} > {limit + self.slack_pct:.2f}")
        served = summary.get("throughput_tps")
        if self.min_throughput_tps is not None and served is not None and float(served) < self.min_throughput_tps - 1e-9:
            out.append(f"throughput_tps {float(served):.1f} < {self.min_throughput_tps:.1f}")
        for limit, key in ((self.max_ttft_p99_s, "ttft_p99_s"), (self.max_tpot_p99_ms, "tpot_p99_ms")):
            value = reported(summary, key)
            if limit is not None and value is not None and value > limit + 1e-9:
                out.append(f"{key} {value:.3g} > {limit:.3g}")
        return out

    def meets(self, summary: Mapping[str, Any]) -> bool:
        return not self.failures(summary)

    def describe(self) -> str:
        parts = [f"{name.removeprefix('max_')} <= {value:g}" for name, value in
                 (("max_qos_violation_pct", self.max_qos_violation_pct),
                  ("max_budget_overshoot_pct", self.max_budget_overshoot_pct),
                  ("max_slo_violation_pct", self.max_slo_violation_pct)) if value is not None]
        if self.min_throughput_tps is not None:
            parts.append(f"throughput_tps >= {self.min_throughput_tps:.0f}")
        parts += [f"{key} <= {value:.3g}" for key, value in (("ttft_p99_s", self.max_ttft_p99_s),
                                                            ("tpot_p99_ms", self.max_tpot_p99_ms)) if value is not None]
        text = ", ".join(parts) if parts else "no limits"
        return text + (f" (+{self.slack_pct:g} points slack)" if self.slack_pct else "")


@dataclass(frozen=True)
class HindsightRow:
    """One fixed configuration's run, as the hindsight table lists it."""

    power_cap_w: float
    batch_cap: int
    tokens_per_joule: float
    """Tokens per node joule (the headline). Units: tokens/J."""
    tokens_per_joule_gpu: float
    """Tokens per GPU joule. Units: tokens/J."""
    throughput_tps: float
    qos_violation_pct: float
    budget_overshoot_pct: float
    slo_violation_pct: float | None
    meets: bool
    why_not: str
    """The limits it breaks (empty when it meets them)."""


@dataclass
class HindsightResult:
    """The whole sweep: one row per configuration, the criteria, and the best row that meets them."""

    rows: list[HindsightRow]
    criteria: MeetCriteria
    objective: str
    summaries: dict[Configuration, dict[str, Any]] = field(repr=False, default_factory=dict)
    """Each configuration's full run summary."""

    @property
    def best(self) -> HindsightRow | None:
        """The configuration with the best objective among those that meet the criteria (None: none does)."""
        key = OBJECTIVE_KEYS[self.objective]
        meeting = [r for r in self.rows if r.meets]
        return max(meeting, key=lambda r: getattr(r, key)) if meeting else None

    @property
    def best_value(self) -> float:
        """The hindsight optimum's objective (NaN when no configuration meets the criteria)."""
        best = self.best
        return float("nan") if best is None else float(getattr(best, OBJECTIVE_KEYS[self.objective]))

    def best_summary(self) -> dict[str, Any] | None:
        best = self.best
        return None if best is None else self.summaries.get(Configuration(best.power_cap_w, best.batch_cap))

    def csv_text(self) -> str:
        buffer = io.StringIO()
        names = list(HindsightRow.__dataclass_fields__)
        writer = csv.writer(buffer)
        writer.writerow(names)
        for row in self.rows:
            writer.writerow(["" if v is None else v for v in asdict(row).values()])
        return buffer.getvalue()

    def as_dict(self, table: str | None = None) -> dict[str, Any]:
        """The summary.json entry: objective, criteria, the optimum, and the table (or its file)."""
        best = self.best
        return {
            "objective": self.objective,
            "objective_key": OBJECTIVE_KEYS[self.objective],
            "criteria": asdict(self.criteria) | {"described": self.criteria.describe()},
            "configurations": len(self.rows),
            "meeting": sum(r.meets for r in self.rows),
            "best": None if best is None else asdict(best),
            "best_value": None if best is None else self.best_value,
            "table": table if table is not None else [asdict(r) for r in self.rows],
        }

    def write(self, out_dir: str | Path, name: str = "hindsight.csv") -> dict[str, Any]:
        """Write the table as `out_dir/name`; return the summary.json entry naming it."""
        atomic_write_text(Path(out_dir) / name, self.csv_text())
        return self.as_dict(table=name)


def _row(config: Configuration, summary: Mapping[str, Any], criteria: MeetCriteria) -> HindsightRow:
    failures = criteria.failures(summary)
    slo = summary.get("slo_violation_pct")
    return HindsightRow(float(config.power_cap_w), int(config.batch_cap), float(summary["tokens_per_joule"]),
                        float(summary["tokens_per_joule_gpu"]), float(summary["throughput_tps"]),
                        float(summary["qos_violation_pct"]), float(summary.get("budget_overshoot_pct", 0.0)),
                        None if slo is None else float(slo), not failures, "; ".join(failures))


_POOL_RUNNER: Callable[[Configuration], dict[str, Any]] | None = None
"""The runner a forked pool worker calls (inherited through fork: closures need not pickle)."""


def _pool_run(config: Configuration) -> dict[str, Any]:
    return _POOL_RUNNER(config)  # type: ignore[misc]


def _run_all(configs: list[Configuration], run_static: Callable[[Configuration], dict[str, Any]],
             workers: int, progress: bool, label: str) -> list[dict[str, Any]]:
    from tqdm import tqdm

    bar = tqdm(total=len(configs), desc=label, unit="config", disable=not progress, leave=False)
    try:
        if workers <= 1 or len(configs) < 2 or "fork" not in multiprocessing.get_all_start_methods():
            out = []
            for config in configs:
                out.append(run_static(config))
                bar.update()
            return out
        global _POOL_RUNNER
        _POOL_RUNNER = run_static
        try:
            with multiprocessing.get_context("fork").Pool(min(workers, len(configs))) as pool:
                out = []
                for summary in pool.imap(_pool_run, configs):  # ordered: the table follows the grid
                    out.append(summary)
                    bar.update()
                return out
        finally:
            _POOL_RUNNER = None
    finally:
        bar.close()


def hindsight_over(configs: Sequence[Configuration], run_static: Callable[[Configuration], Mapping[str, Any]],
                   criteria: MeetCriteria = MeetCriteria(), objective: str = DEFAULT_OBJECTIVE, *,
                   workers: int = 1, progress: bool = False, label: str = "hindsight") -> HindsightResult:
    """Run `run_static(config)` (a run summary) for every configuration; the table and its optimum.

    Args:
        configs: the fixed configurations (usually the grid of the policy under test).
        run_static: runs one configuration as the static policy, on the same stream and seed as the
            policy under test, and returns its run summary (`pals.control.summary` keys).
        criteria: what a configuration must meet to count (`MeetCriteria`).
        objective: "node" (`tokens_per_joule`) or "gpu" (`tokens_per_joule_gpu`).
        workers: processes to run on (1: sequential; results are the same either way).
        progress: show a progress bar (tqdm) over the configurations.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r} is not one of {', '.join(OBJECTIVES)}")
    configs = list(dict.fromkeys(configs))
    if not configs:
        raise ConfigError("the hindsight oracle needs at least one configuration")
    summaries = _run_all(configs, run_static, workers, progress, label)
    rows = [_row(c, s, criteria) for c, s in zip(configs, summaries)]
    return HindsightResult(rows, criteria, objective, dict(zip(configs, (dict(s) for s in summaries))))


def grid_configurations(power_caps_w: Sequence[float] = PAPER_POWER_CAPS_W,
                        batch_caps: Sequence[int] = PAPER_BATCH_CAPS) -> list[Configuration]:
    """Every (cap, batch) of a grid, cap-major."""
    return [Configuration(float(c), int(b)) for c in power_caps_w for b in batch_caps]


def hindsight_static_optimum(deployment: Deployment, load: LoadSpec, *, duration_s: float,
                             criteria: MeetCriteria = MeetCriteria(), objective: str = DEFAULT_OBJECTIVE,
                             grid: Sequence[Configuration] | None = None, seed: int = 0,
                             target_tps: float | None = None, budget=None, budget_schedule=None,
                             interval_s: float = CONTROL_INTERVAL_S, warmup_s: float = 0.0,
                             power_model: NodePowerModel | None = None, workers: int = 1,
                             progress: bool = False) -> HindsightResult:
    """The hindsight oracle on the simulated node: every configuration of `grid` through `run_scenario`.

    Same deployment, load (stream and seed), target, budget or schedule, interval, warm-up and
    node-power line as the run it is compared with. `grid` defaults to the paper's caps within the
    GPU's range times the paper's batches up to the engine's maximum.
    """
    from pals.runtime.scenario import run_scenario

    if grid is None:
        spec = deployment.sim_spec()
        gpu = spec.gpu_spec
        caps = [c for c in PAPER_POWER_CAPS_W if gpu.power_limit_min_w <= c <= gpu.power_limit_max_w]
        grid = grid_configurations(caps, [b for b in PAPER_BATCH_CAPS if b <= deployment.batch_cap_max])

    def run_static(config: Configuration) -> dict[str, Any]:
        return run_scenario(deployment, load, "static", duration_s, target_tps=target_tps, budget=budget,
                            budget_schedule=budget_schedule, seed=seed, interval_s=interval_s,
                            options=PolicyOptions(objective=objective, fixed=config), warmup_s=warmup_s,
                            power_model=power_model).summary

    return hindsight_over(grid, run_static, criteria, objective, workers=workers, progress=progress)
