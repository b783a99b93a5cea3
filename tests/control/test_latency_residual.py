"""The online latency residual: converges, forgets on a workload shift, never loosens beyond its bound."""

from __future__ import annotations

import numpy as np
import pytest

from pals.control.policies.latency_residual import LatencyResidual, LatencyResidualConfig
from pals.control.slo import Slo
from pals.control.types import Configuration, Observation
from pals.core.node import LatencySummary
from pals.errors import ConfigError

SLO = Slo(tpot_ms=28.0)
A, B = Configuration(300.0, 32), Configuration(250.0, 16)


class FlatLatency:
    """A latency model predicting 25 ms TPOT and 2 s TTFT everywhere."""

    def predict(self, power_cap_w, batch_cap, quantile=0.99):
        n = len(np.atleast_1d(power_cap_w))

        class P:
            tpot_s = np.full(n, 0.025)
            ttft_s = np.full(n, 2.0)
        return P()


def _obs(tpot_s: float, ttft_s: float = 2.0) -> Observation:
    return Observation(time_s=0.0, interval_s=0.5, throughput_tps=1000.0, prompt_tps=0.0, gpu_power_w=1000.0,
                       node_power_w=1500.0, node_power_reading_w=None, generated_tokens=500.0, gpu_energy_j=500.0,
                       node_energy_j=750.0, requests_waiting=5, requests_running=32, power_cap_w=300.0, batch_cap=32,
                       tpot=LatencySummary(tpot_s * 0.8, tpot_s, 100, tpot_s * 0.9),
                       ttft=LatencySummary(ttft_s * 0.5, ttft_s, 100, ttft_s * 0.8))


def _feed(learner: LatencyResidual, config: Configuration, ratio: float, seconds: float, rng, limited: bool = True,
          noise: float = 0.02):
    for _ in range(int(seconds / 0.5)):
        learner.observe(config, _obs(0.025 * ratio * float(np.exp(rng.normal(0.0, noise)))), SLO, FlatLatency(), limited)


def test_converges_to_the_measured_ratio_and_pools_it():
    rng = np.random.default_rng(0)
    learner = LatencyResidual(LatencyResidualConfig(spread_z=0.0))
    _feed(learner, A, 1.0, 20.0, rng)  # the settling time: nothing counts yet
    assert learner.learnt_s_ == 0.0 and not learner.trusted
    _feed(learner, A, 1.2, 60.0, rng)
    assert learner.trusted
    assert learner.tpot_factors([A])[0] == pytest.approx(1.2, rel=0.03)
    # An unvisited configuration gets the pooled share of it (the rest is the measured one's own shape).
    assert 1.01 < learner.tpot_factors([B])[0] < learner.tpot_factors([A])[0]


def test_only_full_batches_after_the_settling_time_count():
    rng = np.random.default_rng(1)
    learner = LatencyResidual()
    _feed(learner, A, 0.5, 120.0, rng, limited=False)  # a lull: batches partly full, faster than the model says
    assert learner.learnt_s_ == 0.0 and learner.tpot_factors([A])[0] > 1.0 - 1e-9
    assert not learner.observe(A, _obs(0.03), None, FlatLatency(), True)  # no SLO: nothing to learn


def test_forgets_on_a_workload_shift():
    cfg = LatencyResidualConfig(spread_z=0.0)
    kept, forgot = LatencyResidual(cfg), LatencyResidual(cfg)
    for learner in (kept, forgot):
        _feed(learner, A, 1.0, 150.0, np.random.default_rng(2), noise=0.1)
    forgot.forget()
    assert not forgot.trusted and forgot.shifts_ == 1
    for learner in (kept, forgot):
        _feed(learner, A, 1.3, 3.0, np.random.default_rng(5), noise=0.1)
    # Three seconds after a shift to 1.3x the forgetting learner is most of the way there; the other lags behind.
    assert forgot.tpot_factors([A])[0] > 1.2
    assert kept.tpot_factors([A])[0] < forgot.tpot_factors([A])[0] - 0.05


def test_never_loosens_beyond_its_bound_and_unvisited_is_tighter():
    rng = np.random.default_rng(3)
    learner = LatencyResidual(LatencyResidualConfig(min_factor=0.9))
    _feed(learner, A, 0.5, 200.0, rng)  # the node measures half the model's latency
    assert learner.tpot_factors([A, B]).min() >= 0.9 - 1e-12
    learner = LatencyResidual(LatencyResidualConfig(spread_z=1.0))
    _feed(learner, A, 1.0, 120.0, rng)
    visited, unvisited = learner.tpot_factors([A, B])
    assert unvisited > visited  # the bound is wider where nothing was measured


def test_ttft_is_learnt_too():
    learner = LatencyResidual(LatencyResidualConfig(spread_z=0.0))
    for _ in range(200):
        learner.observe(A, _obs(0.025, ttft_s=3.0), SLO, FlatLatency(), True)
    assert learner.ttft_factors([A])[0] == pytest.approx(1.5, rel=0.03)


@pytest.mark.parametrize("kwargs", [{"min_factor": 1.2}, {"max_factor": 0.5}, {"settle_s": -1.0}, {"noise_prior": 0.0}])
def test_bad_knobs_are_refused(kwargs):
    with pytest.raises(ConfigError):
        LatencyResidualConfig(**kwargs)
