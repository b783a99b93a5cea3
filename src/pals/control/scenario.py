"""Closed-loop scenarios on the simulated node: the wiring behind `pals run`, `pals demo` and the benchmarks.

- `Deployment`: model, GPU, GPU count, TP (the static part).
- `LoadSpec`: the offered load (a trace, a Poisson rate, or saturating) and its length distribution.
- `get_predictor`: a fitted predictor for the deployment, profiled on the simulated node on first
  use and cached under `~/.cache/pals/profiles` (or `$PALS_CACHE_DIR/profiles`), keyed by the
  deployment and the workload's length distribution.
- `TruthModel`: the simulator's ground truth for the Oracle: each configuration measured on a
  fresh, noise-free node under saturating load with the run's length distribution (cached).
- `run_scenario`: one policy over one load; writes decisions.jsonl and returns the summary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from pals.core.paper import PAPER_BATCH_CAPS, PAPER_GPU, PAPER_POWER_CAPS_W
from pals.errors import ConfigError


def cache_dir() -> Path:
    """Where profiles and predictors built on the fly are kept ($PALS_CACHE_DIR or ~/.cache/pals)."""
    root = os.environ.get("PALS_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "pals"


@dataclass(frozen=True)
class Deployment:
    """The static deployment of a simulated node."""

    model: str
    gpu: str = PAPER_GPU
    tp: int = 4
    num_gpus: int = 4
    ep: int = 1
    batch_cap_max: int = 64

    def spec(self):
        from pals.sim.node import SimNodeSpec

        return SimNodeSpec(self.model, self.gpu, num_gpus=self.num_gpus, tp=self.tp, ep=self.ep,
                           batch_cap_max=self.batch_cap_max)

    def key(self) -> str:
        """Cache key: the deployment plus a fingerprint of the simulator that measures it."""
        name = f"{self.model}_{self.gpu}_{self.num_gpus}x_tp{self.tp}_ep{self.ep}_b{self.batch_cap_max}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + f"_sim{simulator_fingerprint(repr(self.spec()))}"


def simulator_fingerprint(extra: str = "") -> str:
    """Short hash of the simulator's and profiler's source (plus `extra`).

    Profiles and ground truth built on the fly are cached across runs; a cached one measured by
    another version of the physics or the profiler must not be reused, so the key changes
    whenever that code does.
    """
    import pals.model.profiler as profiler
    import pals.sim as sim

    digest = hashlib.sha256(extra.encode())
    for path in sorted(Path(sim.__file__).parent.glob("*.py")) + [Path(profiler.__file__)]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


@dataclass(frozen=True)
class LoadSpec:
    """Offered load: exactly one of a trace, a Poisson rate, or saturating.

    Attributes:
        trace: "conv", "code" or a CSV path (Azure LLM inference trace columns); replayed open loop.
        rate_scale: trace speed-up (>1 more load).
        rate_rps: Poisson arrival rate, requests/s.
        saturate: closed loop, requests always waiting.
        lengths: trace whose prompt/output lengths Poisson and saturating loads draw from.
        seed: seed of the request stream.
    """

    trace: str | None = None
    rate_scale: float = 1.0
    rate_rps: float | None = None
    saturate: bool = False
    lengths: str = "conv"
    seed: int = 0

    def __post_init__(self) -> None:
        chosen = sum([self.trace is not None, self.rate_rps is not None, bool(self.saturate)])
        if chosen != 1:
            raise ConfigError("give exactly one load: --trace conv|code|FILE, --rate R, or --saturate")
        if self.rate_rps is not None and not self.rate_rps > 0:
            raise ConfigError(f"--rate must be a positive number of requests/s, got {self.rate_rps}")
        if not self.rate_scale > 0:
            raise ConfigError(f"--rate-scale must be positive, got {self.rate_scale}")

    @property
    def length_source(self) -> str:
        return self.trace if self.trace is not None else self.lengths

    def length_key(self) -> str:
        """Cache key of the length distribution (a file's content hash for custom traces)."""
        source = self.length_source
        kind = "paired" if self.trace is not None else "indep"
        if source in ("conv", "code"):
            return f"{source}-{kind}"
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"trace file {source} does not exist; give conv, code or a CSV path")
        return f"trace-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}-{kind}"

    def workload(self):
        from pals.sim.workload import LengthDistribution, PoissonWorkload, SaturatingWorkload, TraceWorkload, load_trace

        if self.trace is not None:
            return TraceWorkload.from_csv(self.trace, rate_scale=self.rate_scale, loop=True)
        _, prompts, outputs = load_trace(self.lengths)
        prompt_dist, output_dist = LengthDistribution.empirical(prompts), LengthDistribution.empirical(outputs)
        if self.saturate:
            return SaturatingWorkload(prompt_dist, output_dist, seed=self.seed)
        return PoissonWorkload(self.rate_rps, prompt_dist, output_dist, seed=self.seed)

    def saturating_equivalent(self, seed: int | None = None):
        """Saturating load with the same length distribution (for profiling and the Oracle).

        Trace loads keep the trace's (prompt, output) pairs; Poisson and saturating loads draw the
        two lengths independently from the trace, as their own requests do.
        """
        from pals.sim.workload import LengthDistribution, SaturatingWorkload, load_trace

        seed = self.seed if seed is None else seed
        if self.trace is not None:
            return SaturatingWorkload.from_trace(self.trace, seed=seed)
        _, prompts, outputs = load_trace(self.lengths)
        return SaturatingWorkload(LengthDistribution.empirical(prompts), LengthDistribution.empirical(outputs), seed=seed)


# ------------------------------------------------------------------------------------------------
# Predictor built on the fly


PROFILE_WARMUP_S = 10.0
PROFILE_WINDOW_S = 30.0


def get_predictor(deployment: Deployment, load: LoadSpec, progress: bool = False, refresh: bool = False,
                  log: Callable[[str], None] | None = None):
    """A predictor for `deployment` under `load`'s lengths: cached, else profiled on the simulated node and fitted."""
    from pals.model.predictor import PowerPerfPredictor
    from pals.core.workload import WorkloadDescriptor
    from pals.model.profile import read_profile
    from pals.model.profiler import ProfileGrid, run_profile
    from pals.sim.node import SimNode

    folder = cache_dir() / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{deployment.key()}_{load.length_key()}"
    profile_path = folder / f"{stem}.profile.csv"
    model_path = folder / f"{stem}.predictor"
    if model_path.exists() and not refresh:
        try:
            return PowerPerfPredictor.load(model_path, expect_model=deployment.spec().llm_spec.name)
        except ConfigError:
            pass  # stale or from another library version: rebuild below
    if refresh and profile_path.exists():
        profile_path.unlink()
    workload = load.saturating_equivalent(seed=1234)
    node = SimNode(deployment.spec(), workload, seed=1234)
    if log is not None:
        log(f"profiling {deployment.model} on {deployment.num_gpus}x {deployment.gpu} TP{deployment.tp} "
            f"(simulated, 36 points, cached in {folder})")
    constraints = node.constraints()
    caps = tuple(c for c in PAPER_POWER_CAPS_W
                 if constraints.power_cap_min_w <= c <= constraints.power_cap_max_w)
    if len(caps) < 2:
        from pals.model.profiler import paper_grid_within

        grid = paper_grid_within(constraints.power_cap_min_w, constraints.power_cap_max_w, constraints.batch_cap_max)
    else:
        grid = ProfileGrid(caps, tuple(b for b in PAPER_BATCH_CAPS if b <= constraints.batch_cap_max))
    descriptor = workload.descriptor
    features = WorkloadDescriptor(descriptor.mean_prompt_tokens, descriptor.mean_output_tokens, None)
    run_profile(node, node.clock, grid, PROFILE_WARMUP_S, PROFILE_WINDOW_S, profile_path, resume=True,
                progress=progress, workload=features, node_kind="sim",
                metadata_extra={"seed": 1234, "lengths": load.length_source})
    predictor = PowerPerfPredictor(random_state=0).fit(read_profile(profile_path))
    predictor.save(model_path)
    return predictor


# ------------------------------------------------------------------------------------------------
# Ground truth for the Oracle


class TruthModel:
    """Ground truth of a simulated deployment: every configuration measured noise-free, on demand.

    Each (cap, batch) is run on a fresh `SimNode` with exact telemetry under saturating load of the
    scenario's length distribution, `warmup_s` then `window_s`; results are cached in memory (and on
    disk under the cache directory, so benchmarks and demos reuse them). Answers have the shape of a
    predictor's `Prediction` (throughput_tps, gpu_power_total_w, node_power_w, tokens_per_joule).
    """

    def __init__(self, deployment: Deployment, load: LoadSpec, warmup_s: float = 20.0, window_s: float = 60.0,
                 seed: int = 4321, persist: bool = True) -> None:
        self.deployment = deployment
        self.load = load
        self.warmup_s = warmup_s
        self.window_s = window_s
        self.seed = seed
        self._table: dict[tuple[float, int], tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._path = (cache_dir() / "truth" / f"{deployment.key()}_{load.length_key()}_w{int(warmup_s)}_{int(window_s)}_s{seed}.json") if persist else None
        if self._path is not None and self._path.exists():
            try:
                for row in json.loads(self._path.read_text()):
                    self._table[(float(row[0]), int(row[1]))] = (float(row[2]), float(row[3]))
            except (ValueError, IndexError, TypeError):
                self._table.clear()
        from pals.sim.step import StepModel  # noqa: F401  (fail early if the simulator is missing)

        self.caps_ = np.array(PAPER_POWER_CAPS_W)
        self.batches_ = np.array([b for b in PAPER_BATCH_CAPS if b <= deployment.batch_cap_max])
        self._node_power = None

    def _measure(self, cap_w: float, batch: int) -> tuple[float, float]:
        from pals.core.node import Actuation
        from pals.sim.node import NoiseConfig, SimNode

        node = SimNode(self.deployment.spec(), self.load.saturating_equivalent(seed=self.seed), seed=self.seed,
                       noise=NoiseConfig.none(), initial=Actuation(cap_w, batch))
        node.clock.wait_until(self.warmup_s)
        tokens0, energy0 = node.generated_tokens_total(), node.energy_j_total()
        node.clock.wait_until(self.warmup_s + self.window_s)
        tps = (node.generated_tokens_total() - tokens0) / self.window_s
        gpu_w = (node.energy_j_total() - energy0) / self.window_s
        if self._node_power is None:
            self._node_power = node.step_model.node_power_w
        return tps, gpu_w

    def lookup(self, cap_w: float, batch: int) -> tuple[float, float]:
        key = (round(float(cap_w), 3), int(batch))
        with self._lock:
            if key not in self._table:
                self._table[key] = self._measure(*key)
                if self._path is not None:
                    self._path.parent.mkdir(parents=True, exist_ok=True)
                    rows = [[c, b, t, p] for (c, b), (t, p) in sorted(self._table.items())]
                    tmp = self._path.with_suffix(".tmp")
                    tmp.write_text(json.dumps(rows))
                    tmp.replace(self._path)
            return self._table[key]

    def predict_candidates(self, power_cap_w, batch_cap, workload: Any = None):
        from pals.core.power import NodePowerModel

        caps = np.asarray(power_cap_w, dtype=float).reshape(-1)
        batches = np.asarray(batch_cap, dtype=int).reshape(-1)
        values = np.array([self.lookup(c, b) for c, b in zip(caps, batches)], dtype=float).reshape(-1, 2)
        thr, gpu_w = values[:, 0], values[:, 1]
        node_w = np.array([NodePowerModel().node_w(g) for g in gpu_w])
        return SimpleNamespace(throughput_tps=thr, gpu_power_total_w=gpu_w, node_power_w=node_w,
                               tokens_per_joule=thr / node_w)

    def max_throughput_tps(self) -> float:
        """Highest throughput over the profile grid (no budget)."""
        caps = np.repeat(self.caps_, len(self.batches_))
        batches = np.tile(self.batches_, len(self.caps_))
        return float(np.max(self.predict_candidates(caps, batches).throughput_tps))


# ------------------------------------------------------------------------------------------------
# One run


@dataclass
class ScenarioResult:
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(repr=False)
    truth_summary: dict[str, Any] = field(default_factory=dict)


def run_scenario(
    deployment: Deployment,
    load: LoadSpec,
    policy_name: str,
    duration_s: float,
    target_tps: float | None = None,
    budget=None,
    budget_schedule=None,
    predictor=None,
    truth: TruthModel | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    endpoint_port: int | None = None,
    interval_s: float = 0.5,
    noise=None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    decision_log_name: str = "decisions.jsonl",
) -> ScenarioResult:
    """Run one policy on a fresh simulated node and summarise it.

    Every policy of a comparison gets the same node, seed and request stream: only the policy differs.
    """
    from pals.control.budget import ThroughputTarget
    from pals.control.endpoint import Endpoint
    from pals.control.loop import ControlLoop
    from pals.control.policies import make_policy
    from pals.core.power import NodePowerModel
    from pals.sim.node import SimNode

    node = SimNode(deployment.spec(), load.workload(), seed=seed, noise=noise)
    constraints = node.constraints()
    power_model = NodePowerModel()
    if predictor is not None and getattr(predictor, "syspower_", None) is not None:
        power_model = NodePowerModel(predictor.syspower_.alpha, predictor.syspower_.beta_w)
    policy = make_policy(policy_name, predictor=predictor, truth=truth,
                         power_cap_max_w=constraints.power_cap_max_w, batch_cap_max=constraints.batch_cap_max)
    log_path = None if out_dir is None else Path(out_dir) / decision_log_name
    loop = ControlLoop(node, policy, node.clock, interval_s=interval_s, budget=budget,
                       target=None if target_tps is None else ThroughputTarget(target_tps),
                       decision_log=log_path, budget_schedule=budget_schedule, power_model=power_model)
    endpoint = Endpoint(loop, port=endpoint_port).start() if endpoint_port is not None else None
    try:
        loop.run(duration_s=duration_s, on_step=on_step)
    finally:
        if endpoint is not None:
            endpoint.stop()
        loop.close()
    summary = loop.summary()
    summary["policy"] = policy_name
    stats = node.request_stats()
    summary["requests_finished"] = stats.finished
    summary["requests_outstanding"] = stats.outstanding
    # Ground truth over the same span, for honesty checks of the telemetry-based figures.
    truth_summary = {
        "gpu_energy_j": node.energy_j_total(),
        "node_energy_j": node.node_energy_j_total(),
        "generated_tokens": node.generated_tokens_total(),
    }
    return ScenarioResult(summary=summary, records=loop.log.recent(), truth_summary=truth_summary)
