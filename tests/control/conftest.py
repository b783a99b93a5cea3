"""Shared fixtures: one cache directory per test session for profiles, predictors and ground truth.

Building a predictor profiles the simulated node (a second or two per model); the Oracle's ground
truth measures every configuration noise-free. Both are cached per session so each model is built
once.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def pals_cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("pals-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PALS_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def scenario_parts(pals_cache):
    """(deployment, predictor, truth, max_throughput_tps) per model name, built lazily and shared."""
    from pals.runtime.deployment import Deployment
    from pals.runtime.load import LoadSpec
    from pals.runtime.predictors import simulated_predictor
    from pals.runtime.truth import GroundTruth

    built = {}

    def get(model: str):
        if model not in built:
            deployment = Deployment(model)
            lengths = LoadSpec(saturate=True)
            predictor = simulated_predictor(deployment, lengths)
            truth = GroundTruth.on_demand(deployment, lengths, warmup_s=10.0, window_s=40.0)
            built[model] = (deployment, predictor, truth, truth.max_throughput_tps())
        return built[model]

    return get
