"""The predictor a run uses: a saved one (`--predictor`), a fit of a profile (`--profile`), or one
profiled on the simulated node and fitted on the fly (cached).

A predictor or profile of another model than the deployment's is refused (`expect_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pals.core.paper import PAPER_BATCH_CAPS, PAPER_POWER_CAPS_W
from pals.core.power import NodePowerModel
from pals.core.workload import WorkloadDescriptor
from pals.errors import ConfigError
from pals.model.predictor import PowerPerfPredictor
from pals.model.profile import read_profile
from pals.model.profiler import ProfileGrid, paper_grid_within, run_profile
from pals.runtime.cache import cache_dir
from pals.runtime.deployment import Deployment
from pals.runtime.load import LoadSpec, saturating_equivalent
from pals.sim.node import SimNode

PROFILE_WARMUP_S = 10.0
"""Settling time per point of a profile built on the fly. Units: s."""
PROFILE_WINDOW_S = 30.0
"""Measurement window per point of a profile built on the fly. Units: s."""
PROFILE_SEED = 1234
"""Seed of the simulated node and its saturating load while a profile is built on the fly."""
FIT_RANDOM_STATE = 0
"""random_state of the forests fitted by `pals run`, `pals serve` and the profiles built on the fly."""


@dataclass(frozen=True)
class PredictorSource:
    """Where an operator's predictor comes from: a saved predictor or a profile to fit (at most one)."""

    predictor_path: str | Path | None = None
    """A predictor saved by `pals fit`."""
    profile_path: str | Path | None = None
    """A profile (`pals profile`) to fit a predictor from."""

    def __post_init__(self) -> None:
        if self.predictor_path is not None and self.profile_path is not None:
            raise ConfigError("give a predictor or a profile, not both")

    @property
    def given(self) -> bool:
        return self.predictor_path is not None or self.profile_path is not None


def load_predictor(source: PredictorSource, expect_model: str | None = None) -> PowerPerfPredictor | None:
    """The predictor `source` names (None when it names none); refuse another model than `expect_model`."""
    if source.predictor_path is not None:
        return PowerPerfPredictor.load(source.predictor_path, expect_model=expect_model)
    if source.profile_path is not None:
        return PowerPerfPredictor(random_state=FIT_RANDOM_STATE).fit(
            read_profile(source.profile_path, expect_model=expect_model))
    return None


def predictor_for(deployment: Deployment, load: LoadSpec, source: PredictorSource = PredictorSource(),
                  log: Callable[[str], None] | None = None) -> PowerPerfPredictor:
    """The simulated deployment's predictor: from `source` when given, else built on the fly (cached)."""
    if source.given:
        return load_predictor(source, expect_model=deployment.sim_spec().llm_spec.name)
    return simulated_predictor(deployment, load, progress=False, log=log)


def node_power_model(predictor) -> NodePowerModel:
    """The node-power line a loop uses: the predictor's fitted one, else the paper's."""
    fitted = getattr(predictor, "syspower_", None)
    if fitted is None:
        return NodePowerModel()
    return NodePowerModel(fitted.alpha, fitted.beta_w)


def simulated_predictor(deployment: Deployment, load: LoadSpec, progress: bool = False, refresh: bool = False,
                        log: Callable[[str], None] | None = None) -> PowerPerfPredictor:
    """A predictor for `deployment` under `load`'s lengths: cached, else profiled on the simulated node and fitted.

    Cached under `cache_dir()/profiles`, keyed by the deployment (with the simulator's fingerprint)
    and the load's length distribution; the profile is taken under the saturating equivalent of
    `load` (capacity, not demand).
    """
    profile_path = simulated_profile_path(deployment, load)
    profile_path.parent.mkdir(parents=True, exist_ok=True)
    model_path = profile_path.with_name(profile_path.name.replace(".profile.csv", ".predictor"))
    if model_path.exists() and not refresh:
        try:
            return PowerPerfPredictor.load(model_path, expect_model=deployment.sim_spec().llm_spec.name)
        except ConfigError:
            pass  # stale or from another library version: rebuild below
    if refresh and profile_path.exists():
        profile_path.unlink()
    workload = saturating_equivalent(load, seed=PROFILE_SEED)
    node = SimNode(deployment.sim_spec(), workload, seed=PROFILE_SEED)
    if log is not None:
        log(f"profiling {deployment.model} on {deployment.num_gpus}x {deployment.gpu} TP{deployment.tp} "
            f"(simulated, 36 points, cached in {profile_path.parent})")
    descriptor = workload.descriptor
    features = WorkloadDescriptor(descriptor.mean_prompt_tokens, descriptor.mean_output_tokens, None)
    run_profile(node, node.clock, _paper_grid(node.constraints()), PROFILE_WARMUP_S, PROFILE_WINDOW_S, profile_path,
                resume=True, progress=progress, workload=features, node_kind="sim",
                metadata_extra={"seed": PROFILE_SEED, "lengths": load.length_label()})
    predictor = PowerPerfPredictor(random_state=FIT_RANDOM_STATE).fit(read_profile(profile_path))
    predictor.save(model_path)
    return predictor


def _paper_grid(constraints) -> ProfileGrid:
    """The paper's grid within the node's ranges (its caps as they are when at least two fit)."""
    caps = tuple(c for c in PAPER_POWER_CAPS_W
                 if constraints.power_cap_min_w <= c <= constraints.power_cap_max_w)
    if len(caps) < 2:
        return paper_grid_within(constraints.power_cap_min_w, constraints.power_cap_max_w, constraints.batch_cap_max)
    return ProfileGrid(caps, tuple(b for b in PAPER_BATCH_CAPS if b <= constraints.batch_cap_max))


def simulated_profile_path(deployment: Deployment, load: LoadSpec) -> Path:
    """Where `simulated_predictor` keeps the profile it measured for `deployment` under `load`."""
    return cache_dir() / "profiles" / f"{deployment.key()}_{load.length_key()}.profile.csv"


def latency_model_for(deployment: Deployment, load: LoadSpec, source: PredictorSource = PredictorSource(),
                      log: Callable[[str], None] | None = None):
    """TPOT/TTFT per configuration (`LatencyPredictor`) from the profile behind the predictor.

    A `--profile` is read directly; without a source the simulated profile cached by
    `simulated_predictor` (call that first); a saved `--predictor` carries no latency, so None, said
    in one line: the SLO is then judged on measurements but not predicted per candidate.
    """
    from pals.model.latency import LatencyPredictor

    if source.predictor_path is not None:
        if log is not None:
            log("note: a saved predictor has no latency model; give --profile to keep to the SLO by prediction")
        return None
    path = source.profile_path if source.profile_path is not None else simulated_profile_path(deployment, load)
    return LatencyPredictor().fit(read_profile(path))
