"""Shared parts of the cluster tests."""

from __future__ import annotations

import pytest

from pals.control.loop import ControlLoop
from pals.control.policies import make_policy
from pals.sim.node import SimNode, SimNodeSpec
from pals.sim.workload import LengthDistribution, PoissonWorkload


@pytest.fixture
def live_loop():
    """A factory of small running loops: a simulated OLMoE node under Baseline, two intervals stepped."""
    def make() -> ControlLoop:
        workload = PoissonWorkload(20.0, LengthDistribution.fixed(500), LengthDistribution.fixed(100), seed=4)
        node = SimNode(SimNodeSpec("OLMoE-1B-7B", "A100-SXM4-80GB", tp=4), workload, seed=4)
        loop = ControlLoop(node, make_policy("baseline"), node.clock, interval_s=0.5)
        for t in (0.5, 1.0):
            node.clock.wait_until(t)
            loop.step()
        return loop

    return make
