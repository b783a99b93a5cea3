"""Shared parts of the experiments: the paper's deployments, workloads, profiles, closed-loop runs.

Everything runs on the simulated node (`pals.sim`). A `Lab` holds one experiment's settings
(seed, quick or full) and its caches (profiles, predictors, ground-truth tables), so nothing is
shared through module state.

Ground truth vs telemetry: the controller only sees the node's noisy telemetry; the figures we
report for a run come from H4's run summary over the decision log (`pals.control.summary`), and
the experiments cross-check energy against the simulator's exact counters.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pals.core.node import Actuation
from pals.core.paper import PAPER_BATCH_CAPS, PAPER_GPU, PAPER_POWER_CAPS_W

GPU = PAPER_GPU
PAPER_CAPS_W = PAPER_POWER_CAPS_W
PAPER_BATCHES = PAPER_BATCH_CAPS

MOE_MODELS: dict[str, int] = {
    "OLMoE-1B-7B": 4,
    "Qwen1.5-MoE-A2.7B": 4,
    "DeepSeek-MoE-16B": 2,
    "Phi-3.5-MoE": 2,
    "Mixtral-8x7B": 4,
}
"""MoE models and their TP degree on a 4-GPU node (replicas = 4 / TP), as in simulator-feasibility.md."""
DENSE_MODELS: dict[str, int] = {"GPT-2": 1, "Llama-2-7B": 1, "Mistral-7B": 1}
ALL_MODELS: dict[str, int] = {**MOE_MODELS, **DENSE_MODELS}

PROMPT_TOKENS = (600, 1400)
OUTPUT_TOKENS = (100, 300)
"""Uniform length ranges (means 1,000 / 200 tokens): the long-prompt workload under which the
simulator reproduces the paper's cap shapes (simulator-feasibility.md section 3)."""

WARMUP_S = 30.0
"""Simulated seconds a node serves its load (at its initial configuration) before control starts."""

CONTROL_INTERVAL_S = 0.5
"""The paper's control interval."""


def lengths():
    """(prompt, output) length distributions of every experiment's requests."""
    from pals.sim.workload import LengthDistribution

    return LengthDistribution.uniform(*PROMPT_TOKENS), LengthDistribution.uniform(*OUTPUT_TOKENS)


def mean_output_tokens() -> float:
    return 0.5 * (OUTPUT_TOKENS[0] + OUTPUT_TOKENS[1])


def saturating(seed: int):
    from pals.sim.workload import SaturatingWorkload

    prompt, output = lengths()
    return SaturatingWorkload(prompt, output, seed=seed)


def poisson_for_tps(offered_tps: float, seed: int, duration_s: float | None = None):
    """Poisson arrivals whose mean offered output rate is `offered_tps` tokens/s."""
    from pals.sim.workload import PoissonWorkload

    prompt, output = lengths()
    return PoissonWorkload(offered_tps / mean_output_tokens(), prompt, output, seed=seed, duration_s=duration_s)


class VaryingPoisson:
    """Poisson arrivals whose offered rate follows a step function of time (thinning).

    Args:
        rate_at: function time_s -> offered requests/s.
        max_rate_rps: an upper bound of `rate_at` (for thinning).
        seed: random seed.
    """

    closed_loop = False

    def __init__(self, rate_at: Callable[[float], float], max_rate_rps: float, seed: int) -> None:
        self.rate_at = rate_at
        self.max_rate_rps = float(max_rate_rps)
        self.seed = seed
        self.prompt_tokens, self.output_tokens = lengths()

    @property
    def descriptor(self):
        from pals.core.workload import WorkloadDescriptor

        return WorkloadDescriptor(self.prompt_tokens.mean, self.output_tokens.mean, self.max_rate_rps, "varying-poisson")

    def requests(self):
        from pals.sim.workload import Request

        rng = np.random.default_rng(self.seed)
        t_s = 0.0
        while True:
            gaps = rng.exponential(1.0 / self.max_rate_rps, size=4096)
            keep = rng.random(4096)
            prompts = self.prompt_tokens.sample(rng, 4096)
            outputs = self.output_tokens.sample(rng, 4096)
            for gap, u, p, o in zip(gaps.tolist(), keep.tolist(), prompts, outputs):
                t_s += gap
                if u * self.max_rate_rps <= self.rate_at(t_s):
                    yield Request(t_s, p, o)


@dataclass
class Measured:
    """One configuration measured on the noise-free node over a window (ground truth)."""

    throughput_tps: float
    node_power_w: float
    gpu_power_total_w: float

    @property
    def tokens_per_joule(self) -> float:
        return self.throughput_tps / self.node_power_w if self.node_power_w > 0 else 0.0


class GridTruth:
    """The simulator's ground truth on a (cap x batch) grid, as a `PerfModel` for the Oracle policy.

    Built by measuring every grid point on a noise-free node under a saturating load (capacity)
    with the same request lengths. `predict_candidates` answers with the measured value of the
    nearest grid point, so the Oracle sees exactly what the node would do.
    """

    def __init__(self, table: dict[tuple[float, int], Measured]) -> None:
        self.table = table
        self.caps_ = np.array(sorted({c for c, _ in table}))
        self.batches_ = np.array(sorted({b for _, b in table}))

    def _nearest(self, cap: float, batch: int) -> Measured:
        c = float(self.caps_[np.argmin(np.abs(self.caps_ - cap))])
        b = int(self.batches_[np.argmin(np.abs(np.log2(self.batches_) - math.log2(max(batch, 1))))])
        return self.table[(c, b)]

    def predict_candidates(self, power_cap_w, batch_cap, workload: Any = None, tp=None, ep=None):
        from pals.model.predictor import Prediction

        caps, batches = np.broadcast_arrays(np.asarray(power_cap_w, float).reshape(-1), np.asarray(batch_cap).reshape(-1))
        rows = [self._nearest(float(c), int(b)) for c, b in zip(caps, batches)]
        tps = np.array([r.throughput_tps for r in rows])
        gpu_w = np.array([r.gpu_power_total_w for r in rows])
        node_w = np.array([r.node_power_w for r in rows])
        zeros = np.zeros_like(tps)
        return Prediction(tps, zeros, gpu_w, zeros, node_w, np.where(node_w > 0, tps / node_w, 0.0))


@dataclass
class RunResult:
    """One closed-loop run: H4's summary, the decision records, and ground-truth cross-checks."""

    model: str
    policy: str
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(repr=False)
    truth_tokens_per_joule: float
    truth_mean_node_power_w: float

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(t_s, value) of a measured sample field over the run (skipping the first record)."""
        t, v = [], []
        for rec in self.records:
            if rec.get("sample") is None:
                continue
            t.append(rec["t_s"])
            v.append(rec["sample"][key])
        return np.asarray(t), np.asarray(v)


@dataclass
class Lab:
    """One experiment's settings and caches.

    Args:
        seed: seed of workloads and telemetry noise.
        quick: shorter windows and runs.
        work_dir: where profiles are written (a temporary folder when None).
    """

    seed: int = 0
    quick: bool = False
    work_dir: Path | None = None
    _profiles: dict = field(default_factory=dict, repr=False)
    _predictors: dict = field(default_factory=dict, repr=False)
    _truths: dict = field(default_factory=dict, repr=False)
    _tmp: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pals-exp-")
            self.work_dir = Path(self._tmp.name)
        self.work_dir = Path(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    # -- nodes -----------------------------------------------------------------------------

    def spec(self, model: str, tp: int, num_gpus: int = 4):
        from pals.sim.node import SimNodeSpec

        return SimNodeSpec(model, GPU, num_gpus=num_gpus, tp=tp, batch_cap_max=max(PAPER_BATCHES))

    def node(self, model: str, tp: int, workload, noise: bool = True, initial: Actuation | None = None, seed_offset: int = 0):
        from pals.sim.node import NoiseConfig, SimNode

        return SimNode(
            self.spec(model, tp),
            workload,
            seed=self.seed + seed_offset,
            noise=None if noise else NoiseConfig.none(),
            initial=initial,
        )

    def measure(self, model: str, tp: int, cap_w: float, batch: int, workload=None,
                warmup_s: float | None = None, window_s: float | None = None) -> Measured:
        """Ground truth of one static configuration (noise-free node, exact energy counters)."""
        warmup_s = (10.0 if self.quick else 20.0) if warmup_s is None else warmup_s
        window_s = (30.0 if self.quick else 60.0) if window_s is None else window_s
        workload = saturating(self.seed) if workload is None else workload
        node = self.node(model, tp, workload, noise=False, initial=Actuation(cap_w, batch))
        node.clock.wait_until(warmup_s)
        tokens0, node_j0, gpu_j0 = node.generated_tokens_total(), node.node_energy_j_total(), node.energy_j_total()
        node.clock.wait_until(warmup_s + window_s)
        tokens = node.generated_tokens_total() - tokens0
        return Measured(
            throughput_tps=tokens / window_s,
            node_power_w=(node.node_energy_j_total() - node_j0) / window_s,
            gpu_power_total_w=(node.energy_j_total() - gpu_j0) / window_s,
        )

    def workload(self, load_tps: float | None, seed: int):
        """Saturating when `load_tps` is None, else Poisson at that offered output rate."""
        return saturating(seed) if load_tps is None else poisson_for_tps(load_tps, seed)

    def truth(self, model: str, tp: int, load_tps: float | None = None, caps: Sequence[float] = PAPER_CAPS_W,
              batches: Sequence[int] = PAPER_BATCHES) -> GridTruth:
        """Ground truth of every grid point under the given load (noise-free, long window)."""
        key = (model, tp, load_tps, tuple(caps), tuple(batches))
        if key not in self._truths:
            window_s = None if load_tps is None else (60.0 if self.quick else 120.0)
            table = {
                (float(c), int(b)): self.measure(model, tp, c, b, self.workload(load_tps, self.seed + 202), window_s=window_s)
                for c in caps
                for b in batches
            }
            self._truths[key] = GridTruth(table)
        return self._truths[key]

    # -- profiles and predictors ----------------------------------------------------------------

    def profile(self, model: str, tp: int, load_tps: float | None = None, caps: Sequence[float] = PAPER_CAPS_W,
                batches: Sequence[int] = PAPER_BATCHES):
        """The offline profile (paper grid, noisy telemetry) of one deployment under one load.

        As in the paper, the profile is taken under the workload the node will serve: saturating
        (`load_tps` None) or Poisson at `load_tps` offered output tokens/s.
        """
        from pals.core.workload import WorkloadDescriptor
        from pals.model.profile import read_profile
        from pals.model.profiler import profile_on_fresh_nodes

        key = (model, tp, load_tps, tuple(caps), tuple(batches))
        if key not in self._profiles:
            prompt, output = lengths()
            rate = None if load_tps is None else load_tps / mean_output_tokens()
            features = WorkloadDescriptor(prompt.mean, output.mean, rate)
            tag = "sat" if load_tps is None else f"{load_tps:.0f}tps"
            out = self.work_dir / f"profile_{model}_tp{tp}_{tag}_{len(caps)}x{len(batches)}.csv"
            warmup_s = 5.0 if self.quick else 10.0
            window_s = 10.0 if self.quick else 30.0
            if load_tps is not None:
                # An open-loop load needs longer to reach steady state and more requests per window.
                warmup_s, window_s = (15.0, 40.0) if self.quick else (30.0, 90.0)
            # One fresh node per point: under an open-loop load a backlog built at a small batch
            # would otherwise carry over and saturate the next points.
            def make_node(index: int, cap: float, batch: int):
                return self.node(model, tp, self.workload(load_tps, self.seed + 101 + index), noise=True,
                                 initial=Actuation(cap, batch), seed_offset=101 + index)

            points = [(float(c), int(b)) for c in caps for b in batches]
            for _ in profile_on_fresh_nodes(make_node, points, warmup_s, window_s, out, workload=features,
                                            metadata_extra={"seed": self.seed + 101, "experiment": True}):
                pass
            self._profiles[key] = read_profile(out)
        return self._profiles[key]

    def predictor(self, model: str, tp: int, load_tps: float | None = None):
        """The random-forest predictor fitted on `profile(model, tp, load_tps)`."""
        from pals.model.predictor import PowerPerfPredictor

        key = (model, tp, load_tps)
        if key not in self._predictors:
            trees = 30 if self.quick else 100
            profile = self.profile(model, tp, load_tps)
            self._predictors[key] = PowerPerfPredictor(n_estimators=trees, random_state=self.seed).fit(profile)
        return self._predictors[key]

    def frontier_points(self, model: str, tp: int, load_tps: float | None = None) -> list[tuple[float, float]]:
        """Predicted (node power, throughput) of every grid configuration (for the coordinator)."""
        predictor = self.predictor(model, tp, load_tps)
        caps, batches = np.meshgrid(np.asarray(PAPER_CAPS_W), np.asarray(PAPER_BATCHES))
        pred = predictor.predict_candidates(caps.ravel(), batches.ravel())
        return list(zip(pred.node_power_w.tolist(), pred.throughput_tps.tolist()))

    # -- closed-loop runs --------------------------------------------------------------------------

    def make_policy(self, name: str, model: str, tp: int, load_tps: float | None = None):
        """A policy whose model (predictor, or ground truth for the Oracle) describes capacity.

        The model-guided policies score candidates with a load-aware objective built on each
        configuration's capacity and busy power (`pals.control.policies`), so their predictor is
        profiled, and the Oracle's ground truth measured, under saturating load with the same
        request lengths; the offered load (`load_tps`) is estimated online by the policy. (A
        profile taken under a load below capacity records the demand, not the capacity, at every
        point that keeps up, and no candidate could show the target margin.)
        """
        from pals.control.policies import make_policy

        if name == "baseline":
            return make_policy("baseline")
        if name == "oracle":
            return make_policy("oracle", truth=self.truth(model, tp, None))
        return make_policy(name, predictor=self.predictor(model, tp, None))

    def loop(self, node, policy, budget_w: float | None = None, target_tps: float | None = None, schedule=None):
        from pals.control.budget import PowerBudget, ThroughputTarget
        from pals.control.loop import ControlLoop

        return ControlLoop(
            node,
            policy,
            node.clock,
            interval_s=CONTROL_INTERVAL_S,
            budget=None if budget_w is None else PowerBudget(float(budget_w), "node"),
            target=None if target_tps is None else ThroughputTarget(float(target_tps)),
            budget_schedule=schedule,
        )

    def run(self, model: str, tp: int, policy_name: str, load_tps: float | None, duration_s: float,
            target_tps: float | None = None, budget_w: float | None = None, schedule=None,
            seed_offset: int = 0, workload=None) -> RunResult:
        """One closed-loop run of `policy_name` on a fresh node; summary from H4's `summarize`.

        `load_tps` picks the workload (None: saturating) and the profile the policy's model was
        fitted on; `workload` overrides the live workload only (e.g. a time-varying load).
        """
        live = workload if workload is not None else self.workload(load_tps, self.seed + 7 + seed_offset)
        node = self.node(model, tp, live, noise=True, seed_offset=seed_offset)
        loop = self.loop(node, self.make_policy(policy_name, model, tp, load_tps), budget_w, target_tps, schedule)
        # Start from a warm node (queues and batches at steady state), as a 60-minute run would be
        # for almost all of its length; the policy's first observations are then representative.
        node.clock.wait_until(WARMUP_S)
        energy0, tokens0 = node.node_energy_j_total(), node.generated_tokens_total()
        loop.run(duration_s=duration_s)
        energy = node.node_energy_j_total() - energy0
        tokens = node.generated_tokens_total() - tokens0
        records = loop.log.recent()
        summary = loop.summary()
        loop.close()
        return RunResult(
            model=model,
            policy=policy_name,
            summary=summary,
            records=records,
            truth_tokens_per_joule=tokens / energy if energy > 0 else 0.0,
            truth_mean_node_power_w=energy / max(node.clock.now_s() - WARMUP_S, 1e-9),
        )


def plt():
    """matplotlib.pyplot on the Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save_figure(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt().close(fig)


def geomean(values: Sequence[float]) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return float(math.exp(sum(math.log(v) for v in values) / len(values))) if values else float("nan")
