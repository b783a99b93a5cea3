"""Shared fixtures for the offline-model tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes import AnalyticFakeNode  # noqa: E402

from pals.model.profile import WorkloadFeatures  # noqa: E402
from pals.model.profiler import ProfileGrid, run_profile  # noqa: E402


@pytest.fixture(scope="session")
def fake_profile(tmp_path_factory):
    """The paper's 6x6 grid measured on the analytic fake node (1 % noise), read back from disk."""
    node = AnalyticFakeNode(noise=0.01, seed=1)
    path = tmp_path_factory.mktemp("profiles") / "fake.csv"
    return run_profile(node, node.clock, ProfileGrid(), warmup_s=2.0, window_s=5.0, out_path=path,
                       progress=False, workload=WorkloadFeatures(1000.0, 200.0, None))
