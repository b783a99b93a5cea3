"""The profiler measures each point at steady state: after a mean request lifetime, over a window as long.

Under long requests a fresh node's first lifetime is one synchronized wave of decodes (no prefill, a KV
cache not yet grown to preempting sizes); a point measured inside it overrates large batches
(`pals.model.profiler`'s docstring). The long-request node below is the kv-pressure experiment's
(Llama-2-7B TP 1, four replicas, each KV cache holding about 35 of these requests).
"""

from __future__ import annotations

import pytest

from pals.core.node import Actuation, Sample
from pals.core.workload import WorkloadDescriptor
from pals.errors import ConfigError
from pals.model.profiler import LIFETIME_PROBE_S, ProfileGrid, request_lifetime_s, run_profile

LONG = WorkloadDescriptor(2400.0, 1000.0, None)
"""Mean lengths of `long_node`'s uniform 2000-2800 prompt and 800-1200 output tokens."""
CAP_W = 400.0
WARMUP_S = 10.0
WINDOW_S = 30.0
"""The timing the kv-pressure experiment profiled with when its profile rated batch 32 at 0.87x batch 64."""


def long_node(batch: int, seed: int = 1):
    """A fresh exact-telemetry node serving long requests (saturating) at `CAP_W` and `batch`."""
    from pals.sim.node import NoiseConfig, SimNode, SimNodeSpec
    from pals.sim.workload import LengthDistribution, SaturatingWorkload

    workload = SaturatingWorkload(LengthDistribution.uniform(2000, 2800), LengthDistribution.uniform(800, 1200),
                                  seed=seed)
    return SimNode(SimNodeSpec("Llama-2-7B", "A100-SXM4-80GB", num_gpus=4, tp=1), workload, seed=seed,
                   noise=NoiseConfig.none(), initial=Actuation(CAP_W, batch))


def warm_tokens_per_joule(batch: int) -> float:
    """Tokens per node joule of a node serving long enough for the first waves to have spread (200-800 s)."""
    node = long_node(batch)
    node.clock.wait_until(200.0)
    tokens, joules = node.generated_tokens_total(), node.node_energy_j_total()
    node.clock.wait_until(800.0)
    return (node.generated_tokens_total() - tokens) / (node.node_energy_j_total() - joules)


def profiled(tmp_path, batch: int, workload=LONG, **kwargs):
    """(row, node time spent) of one point profiled on a fresh `long_node`."""
    node = long_node(batch)
    out = tmp_path / f"b{batch}_{sorted(kwargs.items())}_{workload is None}.csv"
    row = run_profile(node, node.clock, ProfileGrid((CAP_W,), (batch,)), WARMUP_S, WINDOW_S, out, resume=False,
                      progress=False, workload=workload, **kwargs).rows[0]
    return row, node.clock.now_s()


@pytest.fixture(scope="module")
def warm():
    return {batch: warm_tokens_per_joule(batch) for batch in (32, 64)}


def _sample(time_s: float, tokens: float, running: int, finished: int = 0) -> Sample:
    return Sample(time_s=time_s, gpu_power_w=(300.0,), gpu_energy_j_total=(0.0,), gpu_power_cap_w=(400.0,),
                  batch_cap=64, generated_tokens_total=tokens, prompt_tokens_total=0.0, requests_running=running,
                  requests_waiting=0, requests_finished_total=finished)


def test_request_lifetime_is_littles_law():
    # 10 sequences generate 100 tokens/s of 100-token outputs: one request finishes per second, each lives 10 s.
    assert request_lifetime_s(_sample(0.0, 0.0, 10), _sample(10.0, 1000.0, 10), 100.0) == pytest.approx(10.0)
    assert request_lifetime_s(_sample(0.0, 0.0, 10), _sample(10.0, 1000.0, 10), 100.0, mean_running=20.0) == \
        pytest.approx(20.0)
    # Without a mean output length: the finished-request counter (5 in 10 s with 10 running: 20 s).
    assert request_lifetime_s(_sample(0.0, 0.0, 10), _sample(10.0, 1000.0, 10, finished=5), None) == \
        pytest.approx(20.0)
    assert request_lifetime_s(_sample(0.0, 0.0, 10), _sample(10.0, 1000.0, 10), None) == float("inf")
    assert request_lifetime_s(_sample(0.0, 0.0, 10), _sample(10.0, 0.0, 10), 100.0) == float("inf")
    assert request_lifetime_s(_sample(0.0, 0.0, 0), _sample(10.0, 0.0, 0), 100.0) == 0.0
    assert request_lifetime_s(_sample(5.0, 0.0, 10), _sample(5.0, 10.0, 10), 100.0) is None


def test_long_requests_are_measured_at_steady_state(tmp_path, warm):
    """Batch 32 beats batch 64 on a warm node; the profile sees it only with the steady-state wait."""
    steady = {b: profiled(tmp_path, b) for b in (32, 64)}
    early = {b: profiled(tmp_path, b, steady_lifetimes=0.0) for b in (32, 64)}
    assert warm[32] > warm[64]
    for batch in (32, 64):
        row, spent_s = steady[batch]
        assert row["tokens_per_joule"] == pytest.approx(warm[batch], rel=0.03), batch
        # The window spans a lifetime (longer than the 30 s asked), after one has passed.
        assert row["window_s"] > WINDOW_S and spent_s >= 2 * row["window_s"] - 1e-6
    # Without the wait, batch 64 is measured in its first wave: 20 % and more above its warm figure.
    assert early[64][0]["tokens_per_joule"] > 1.2 * warm[64]
    assert early[32][0]["tokens_per_joule"] < early[64][0]["tokens_per_joule"]
    assert steady[32][0]["tokens_per_joule"] > steady[64][0]["tokens_per_joule"]


def test_without_a_workload_the_observed_lengths_set_the_wait(tmp_path, warm):
    """A real node's profile may not know the offered lengths (an external load generator): the wait still holds."""
    row, spent_s = profiled(tmp_path, 64, workload=None)
    assert row["window_s"] > WINDOW_S and spent_s > WARMUP_S + WINDOW_S + LIFETIME_PROBE_S
    assert row["tokens_per_joule"] == pytest.approx(warm[64], rel=0.03)


def test_the_wait_and_the_window_are_bounded(tmp_path):
    row, spent_s = profiled(tmp_path, 64, steady_max_s=15.0)
    assert spent_s == pytest.approx(15.0 + WINDOW_S)  # 15 s of waiting, the window as asked
    assert row["window_s"] == pytest.approx(WINDOW_S)
    row, spent_s = profiled(tmp_path, 64, steady_max_s=40.0)
    assert row["window_s"] == pytest.approx(40.0)  # stretched to the bound, not to the lifetime
    assert spent_s == pytest.approx(80.0)


def test_short_requests_take_no_longer(tmp_path, sim_node):
    """1000/200-token requests on a small model live a few seconds: the paper grid takes the warm-ups and
    windows asked (`pals profile`'s defaults and the quick experiments'), within a few per cent."""
    workload = WorkloadDescriptor(1000.0, 200.0, None)
    for warmup_s, window_s in ((10.0, 30.0), (5.0, 10.0)):
        spent_s = {}
        for lifetimes in (0.0, 1.0):
            node = sim_node()
            profile = run_profile(node, node.clock, ProfileGrid(), warmup_s, window_s, tmp_path / f"p{lifetimes}.csv",
                                  resume=False, progress=False, workload=workload, steady_lifetimes=lifetimes)
            spent_s[lifetimes] = node.clock.now_s()
            assert all(row["window_s"] == pytest.approx(window_s) for row in profile.rows)
        assert spent_s[0.0] <= spent_s[1.0] <= 1.01 * spent_s[0.0], (warmup_s, spent_s)
    assert profile.metadata["steady_lifetimes"] == 1.0


@pytest.mark.parametrize("kwargs", [{"steady_lifetimes": -1.0}, {"steady_lifetimes": float("nan")},
                                    {"steady_max_s": -5.0}])
def test_bad_steady_settings_are_config_errors(tmp_path, kwargs, sim_node):
    node = sim_node()
    with pytest.raises(ConfigError, match="steady"):
        run_profile(node, node.clock, ProfileGrid((200.0,), (8,)), 1.0, 2.0, tmp_path / "p.csv", progress=False,
                    **kwargs)
