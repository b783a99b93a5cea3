"""Shared parts of the experiments: the paper's deployments, workloads, profiles, closed-loop runs.

Everything runs on the simulated node (`pals.sim`), assembled through `pals.runtime`. A `Lab` holds
one experiment's settings (seed, quick or full) and its caches (profiles, predictors), so nothing
is shared through module state. The yardsticks a policy is measured against come from here too:
the Oracle's truth of one run's stream (`Lab.delivered_truth`) and the hindsight optimum over
every fixed configuration on that stream (`Lab.hindsight`).

Ground truth vs telemetry: the controller only sees the node's noisy telemetry; the figures we
report for a run come from H4's run summary over the decision log (`pals.control.summary`), and
the experiments cross-check energy against the simulator's exact counters.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pals.control.budget import PowerBudget
from pals.control.policies import PolicyOptions
from pals.control.slo import Slo
from pals.control.types import Configuration
from pals.core.node import Actuation
from pals.core.paper import CONTROL_INTERVAL_S, PAPER_BATCH_CAPS, PAPER_GPU, PAPER_POWER_CAPS_W
from pals.core.power import NodePowerModel
from pals.core.workload import WorkloadDescriptor
from pals.experiments.lab_physics import scoped_physics
from pals.model.predictor import PowerPerfPredictor
from pals.model.profile import read_profile
from pals.model.profiler import profile_on_fresh_nodes
from pals.runtime.builder import ControlSettings, build_controller, build_loop, policy_for
from pals.runtime.delivered import DeliveredTruth, series_from_records
from pals.runtime.deployment import Deployment
from pals.runtime.hindsight import HindsightResult, MeetCriteria, grid_configurations, hindsight_over
from pals.runtime.load import LoadSpec, UniformLengths, make_workload
from pals.runtime.truth import Measured, measure_configuration
from pals.sim.node import NoiseConfig, SimNode
from pals.sim.physics import PhysicsParams

__all__ = ["ALL_MODELS", "CONTROL_INTERVAL_S", "DENSE_MODELS", "GPU", "Lab", "MOE_MODELS", "PAPER_BATCHES",
           "PAPER_CAPS_W", "RunResult", "WARMUP_S", "geomean", "plt", "save_figure"]

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
"""MoE models and their TP degree on a 4-GPU node (replicas = 4 / TP), as in docs/calibration.md §7."""
DENSE_MODELS: dict[str, int] = {"GPT-2": 1, "Llama-2-7B": 1, "Mistral-7B": 1}
ALL_MODELS: dict[str, int] = {**MOE_MODELS, **DENSE_MODELS}

EXPERIMENT_LENGTHS = UniformLengths(prompt_tokens=(600, 1400), output_tokens=(100, 300))
"""Uniform length ranges (means 1,000 / 200 tokens): the long-prompt workload under which the
simulator reproduces the paper's cap shapes (docs/calibration.md §7)."""

WARMUP_S = 30.0
"""Simulated seconds a node serves its load (at its initial configuration) before control starts."""


@dataclass
class RunResult:
    """One closed-loop run: H4's summary, the decision records, and ground-truth cross-checks."""

    model: str
    policy: str
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(repr=False)
    truth_tokens_per_joule: float
    truth_mean_node_power_w: float
    preemptions: int = 0
    """Requests the simulated engines preempted (KV cache full) during the run, after the warm-up."""

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
        physics: the simulated GPU's physics (`pals.sim.physics.load_physics` of a `pals calibrate` file,
            for the paper's GPU); every node, profile, truth and run of this lab uses it. None: the preset's.
            Default: the physics of `pals experiment --physics` (`pals.experiments.lab_physics.scoped_physics`).
        lengths: the request lengths of every load, profile and run of this lab.
    """

    seed: int = 0
    quick: bool = False
    work_dir: Path | None = None
    physics: PhysicsParams | None = field(default_factory=scoped_physics)
    lengths: UniformLengths = EXPERIMENT_LENGTHS
    _profiles: dict = field(default_factory=dict, repr=False)
    _predictors: dict = field(default_factory=dict, repr=False)
    _tmp: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pals-exp-")
            self.work_dir = Path(self._tmp.name)
        self.work_dir = Path(self.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    # -- nodes and loads -------------------------------------------------------------------

    def deployment(self, model: str, tp: int, num_gpus: int = 4) -> Deployment:
        """`model` at TP `tp` on the paper's GPUs, with this lab's physics."""
        return Deployment(model, GPU, num_gpus=num_gpus, tp=tp, physics=self.physics)

    def spec(self, model: str, tp: int, num_gpus: int = 4):
        """The simulated node of `model` at TP `tp` on the paper's GPUs (with this lab's physics)."""
        return self.deployment(model, tp, num_gpus).sim_spec()

    def node(self, model: str, tp: int, workload, noise: bool = True, initial: Actuation | None = None, seed_offset: int = 0):
        return SimNode(
            self.spec(model, tp),
            workload,
            seed=self.seed + seed_offset,
            noise=None if noise else NoiseConfig.none(),
            initial=initial,
        )

    def load(self, load_tps: float | None, seed: int) -> LoadSpec:
        """Saturating when `load_tps` is None, else Poisson at that offered output rate (tokens/s)."""
        if load_tps is None:
            return LoadSpec(saturate=True, lengths=self.lengths, seed=seed)
        return LoadSpec.poisson_for_tps(load_tps, self.lengths, seed=seed)

    def workload(self, load_tps: float | None, seed: int):
        """The workload of `load(load_tps, seed)`."""
        return make_workload(self.load(load_tps, seed))

    # -- ground truth ----------------------------------------------------------------------

    def measure(self, model: str, tp: int, cap_w: float, batch: int, workload=None,
                warmup_s: float | None = None, window_s: float | None = None) -> Measured:
        """Ground truth of one static configuration (noise-free node, exact energy counters)."""
        warmup_s = (10.0 if self.quick else 20.0) if warmup_s is None else warmup_s
        window_s = (30.0 if self.quick else 60.0) if window_s is None else window_s
        workload = self.workload(None, self.seed) if workload is None else workload
        return measure_configuration(self.spec(model, tp), workload, cap_w, batch, warmup_s=warmup_s,
                                     window_s=window_s, seed=self.seed)

    # -- profiles and predictors ----------------------------------------------------------------

    def profile(self, model: str, tp: int, load_tps: float | None = None, caps: Sequence[float] = PAPER_CAPS_W,
                batches: Sequence[int] = PAPER_BATCHES):
        """The offline profile (paper grid, noisy telemetry) of one deployment under one load.

        As in the paper, the profile is taken under the workload the node will serve: saturating
        (`load_tps` None) or Poisson at `load_tps` offered output tokens/s.
        """
        key = (model, tp, load_tps, tuple(caps), tuple(batches))
        if key not in self._profiles:
            prompt, output = self.lengths.distributions()
            features = WorkloadDescriptor(prompt.mean, output.mean, self.load(load_tps, self.seed).rate_rps)
            tag = "sat" if load_tps is None else f"{load_tps:.0f}tps"
            if self.lengths != EXPERIMENT_LENGTHS:
                tag += f"_{self.lengths.key()}"
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

    def models_for(self, name: str, model: str, tp: int) -> dict[str, Any]:
        """The models policy `name` needs: none (Baseline, Static), else the predictor (the Oracle's
        truth belongs to one run's stream: `run` builds it, `delivered_truth`).

        The model-guided policies score candidates with a load-aware objective built on each
        configuration's capacity and busy power (`pals.control.policies`), so their predictor is
        profiled, and the Oracle's ground truth measured, under saturating load with the same
        request lengths; the offered load is estimated online by the policy. (A profile taken
        under a load below capacity records the demand, not the capacity, at every point that
        keeps up, and no candidate could show the target margin.)
        """
        if name in ("baseline", "static", "oracle"):
            return {}
        return {"predictor": self.predictor(model, tp, None)}

    def make_policy(self, name: str, model: str, tp: int, load_tps: float | None = None,
                    options: PolicyOptions = PolicyOptions()):
        """A policy whose model (the predictor) describes capacity (see `models_for`; not the Oracle)."""
        spec = self.spec(model, tp)
        return policy_for(name, power_cap_max_w=spec.gpu_spec.power_limit_max_w, batch_cap_max=spec.batch_cap_max,
                          options=options, **self.models_for(name, model, tp))

    def settings(self, policy: str, budget_w: float | None = None, target_tps: float | None = None,
                 schedule=None, options: PolicyOptions = PolicyOptions()) -> ControlSettings:
        """The experiments' control settings: the paper's interval, a node budget, a target."""
        return ControlSettings(policy, options=options, interval_s=CONTROL_INTERVAL_S, budget=_node_budget(budget_w),
                               target_tps=None if target_tps is None else float(target_tps), budget_schedule=schedule)

    def loop(self, node, policy, budget_w: float | None = None, target_tps: float | None = None, schedule=None):
        """A loop around `policy` on `node` with the experiments' settings (see `settings`)."""
        # The experiments' figures were recorded with the paper's node-power line, not the
        # predictor's fitted one that `pals run` uses.
        return build_loop(node, policy, NodePowerModel(), interval_s=CONTROL_INTERVAL_S, budget=_node_budget(budget_w),
                          target_tps=None if target_tps is None else float(target_tps), budget_schedule=schedule)

    def live_load(self, load_tps: float | None, seed_offset: int = 0) -> LoadSpec:
        """The load `run` serves: `load(load_tps)` with the run's stream seed."""
        return self.load(load_tps, self.seed + 7 + seed_offset)

    def run(self, model: str, tp: int, policy_name: str, load_tps: float | None, duration_s: float,
            target_tps: float | None = None, budget_w: float | None = None, schedule=None,
            seed_offset: int = 0, workload=None, options: PolicyOptions = PolicyOptions(),
            truth: DeliveredTruth | None = None, slo: Slo | None = None, latency_model=None,
            policy_warmup: bool = False) -> RunResult:
        """One closed-loop run of `policy_name` on a fresh node; summary from H4's `summarize`.

        `load_tps` picks the workload (None: saturating); the policy's model describes capacity
        (`models_for`); `workload` overrides the live workload only (e.g. a time-varying load; not
        with the Oracle, whose truth replays `live_load`). The Oracle's truth is built for this
        run's stream unless given (`delivered_truth`). `slo` is judged in every run (`slo_violation_pct`);
        `latency_model` (`pals.model.latency.LatencyPredictor`) lets a model-guided policy keep to it.

        The node warms up for `WARMUP_S` before scoring starts. With `policy_warmup` the policy
        already controls it then (it learns the load, as it would have in the first seconds of an
        hour-long run, and the figures score its steady state; the Oracle holds its plan's first
        configuration through the warm-up); otherwise the node warms up at its initial configuration
        and the policy starts with scoring.
        """
        if policy_warmup and schedule is not None:
            raise ValueError("policy_warmup: not with a budget schedule (its times count from the start of scoring)")
        live = workload if workload is not None else make_workload(self.live_load(load_tps, seed_offset))
        if policy_name == "oracle" and truth is None:
            if workload is not None:
                raise ValueError("the Oracle's truth replays the run's own load: no workload override")
            truth = self.delivered_truth(model, tp, load_tps, duration_s, seed_offset)
        node = self.node(model, tp, live, noise=True, seed_offset=seed_offset)
        # The paper's node-power line, as in `loop`.
        settings = replace(self.settings(policy_name, budget_w, target_tps, schedule, options), slo=slo)
        controller = build_controller(node, settings, power_model=NodePowerModel(), truth=truth,
                                      latency_model=latency_model, **self.models_for(policy_name, model, tp))
        loop = controller.loop
        # Start from a warm node (queues and batches at steady state), as a 60-minute run would be
        # for almost all of its length; the policy's first observations are then representative.
        if policy_warmup:
            scored_from: list = []

            def start_scoring(_line) -> None:
                if not scored_from and node.clock.now_s() >= WARMUP_S - 1e-9:
                    loop.restart_summary()
                    scored_from.append((node.node_energy_j_total(), node.generated_tokens_total(), _preemptions(node)))

            loop.run(duration_s=WARMUP_S + duration_s, on_step=start_scoring)
            energy0, tokens0, preempted0 = scored_from[0]
            # The loop started with the node's clock: a record's t_s is node time.
            records = [r for r in loop.log.recent() if r["t_s"] > WARMUP_S + 1e-9]
        else:
            node.clock.wait_until(WARMUP_S)
            energy0, tokens0, preempted0 = node.node_energy_j_total(), node.generated_tokens_total(), _preemptions(node)
            loop.run(duration_s=duration_s)
            records = loop.log.recent()
        energy = node.node_energy_j_total() - energy0
        tokens = node.generated_tokens_total() - tokens0
        summary = loop.summary()
        controller.close()
        return RunResult(
            model=model,
            policy=policy_name,
            summary=summary,
            records=records,
            truth_tokens_per_joule=tokens / energy if energy > 0 else 0.0,
            truth_mean_node_power_w=energy / max(node.clock.now_s() - WARMUP_S, 1e-9),
            preemptions=_preemptions(node) - preempted0,
        )

    # -- the yardsticks: the Oracle's truth and the hindsight optimum ----------------------------------

    def delivered_truth(self, model: str, tp: int, load_tps: float | None, duration_s: float,
                        seed_offset: int = 0) -> DeliveredTruth:
        """The Oracle's truth for the run `run(model, tp, "oracle", load_tps, duration_s, seed_offset=...)`:
        every grid configuration held over that run's own stream, with its warm-up and telemetry seed."""
        return DeliveredTruth(self.deployment(model, tp), self.live_load(load_tps, seed_offset),
                              WARMUP_S + duration_s, start_s=WARMUP_S, caps_w=PAPER_CAPS_W, batches=PAPER_BATCHES,
                              seed=self.seed + seed_offset)

    def hindsight(self, model: str, tp: int, load_tps: float | None, duration_s: float, criteria: MeetCriteria,
                  target_tps: float | None = None, budget_w: float | None = None, seed_offset: int = 0,
                  objective: str = "node", truth: DeliveredTruth | None = None,
                  progress: bool = False, policy_warmup: bool = False) -> HindsightResult:
        """The hindsight optimum of the run `run(model, tp, ..., seed_offset=...)`: every grid configuration
        as the static policy on the same stream, target and budget, judged by `criteria`.

        Without a budget a static run does not react to telemetry, so its intervals are exactly the
        Oracle's truth of that configuration on that stream (`pals.runtime.delivered`): they are
        handed to `truth` when given, which then needs no runs of its own.

        `policy_warmup` as in `run`: each fixed configuration is then in force from the start of the
        warm-up, so it is scored at its steady state (and its QoS window is full when scoring starts)
        exactly as a policy under test run with `policy_warmup` is.
        """
        def run_static(config: Configuration) -> dict[str, Any]:
            result = self.run(model, tp, "static", load_tps, duration_s, target_tps=target_tps, budget_w=budget_w,
                              seed_offset=seed_offset, options=PolicyOptions(objective=objective, fixed=config),
                              policy_warmup=policy_warmup)
            if truth is not None and budget_w is None:
                truth.add_series(config.power_cap_w, config.batch_cap,
                                 series_from_records(result.records, WARMUP_S + duration_s, CONTROL_INTERVAL_S))
            return result.summary

        return hindsight_over(grid_configurations(PAPER_CAPS_W, PAPER_BATCHES), run_static, criteria, objective,
                              progress=progress, label=f"hindsight {model}")


def _preemptions(node: SimNode) -> int:
    """Requests preempted so far on every engine of `node`."""
    return sum(engine.preemptions_total for engine in node.engines)


def _node_budget(budget_w: float | None) -> PowerBudget | None:
    return None if budget_w is None else PowerBudget(float(budget_w), "node")


def plt():
    """matplotlib.pyplot on the Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save_figure(fig, path: Path, strict: bool = False) -> None:
    """Lay out, check against the plot rules (`pals.model.plot_rules`) and write `fig` as `path`.

    A figure that breaks a rule is reported as a `PlotRuleWarning` naming the figure and the fix
    (`strict=True`: refused with `PlotRuleError`, nothing written).
    """
    from pals.model.plot_rules import enforce

    fig.tight_layout()
    try:
        enforce(fig, str(path), strict=strict)
    except BaseException:
        plt().close(fig)
        raise
    fig.savefig(path, dpi=110)
    plt().close(fig)


def geomean(values: Sequence[float]) -> float:
    values = [v for v in values if v > 0 and math.isfinite(v)]
    return float(math.exp(sum(math.log(v) for v in values) / len(values))) if values else float("nan")
