"""Shared fixtures for the offline-model tests: profiles measured on the simulated node."""

from __future__ import annotations

import pytest

from pals.core.workload import WorkloadDescriptor
from pals.model.profiler import ProfileGrid, run_profile

SIM_MODEL = "OLMoE-1B-7B"
SIM_GPU = "A100-SXM4-80GB"
SIM_TP = 1
"""A small model at TP 1 (4 replicas): the paper's 6x6 grid simulates in about a second."""


def make_sim_node(*, tp: int = SIM_TP, model: str = SIM_MODEL, seed: int = 1, exact: bool = False, initial=None):
    """A `SimNode` under a saturating 1000/200-token load (default telemetry noise unless `exact`)."""
    from pals.sim.node import NoiseConfig, SimNode, SimNodeSpec
    from pals.sim.workload import LengthDistribution, SaturatingWorkload

    workload = SaturatingWorkload(LengthDistribution.lognormal(1000, 0.5), LengthDistribution.lognormal(200, 0.5),
                                  seed=seed)
    return SimNode(SimNodeSpec(model, SIM_GPU, num_gpus=4, tp=tp), workload, seed=seed,
                   noise=NoiseConfig.none() if exact else None, initial=initial)


@pytest.fixture
def sim_node():
    """The `make_sim_node` factory (tests call it with keyword arguments)."""
    return make_sim_node


@pytest.fixture(scope="session")
def sim_profile(tmp_path_factory):
    """The paper's 6x6 grid measured on the simulated node (noisy telemetry), read back from disk."""
    node = make_sim_node()
    path = tmp_path_factory.mktemp("profiles") / "sim.csv"
    return run_profile(node, node.clock, ProfileGrid(), warmup_s=2.0, window_s=5.0, out_path=path,
                       progress=False, workload=WorkloadDescriptor(1000.0, 200.0, None))
