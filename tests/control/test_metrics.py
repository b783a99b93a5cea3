"""The agent's Prometheus metrics (`pals.control.metrics.ControllerMetrics`) as a live loop feeds them:
labels, per-GPU caps read back from the sample, the node's maxima, telemetry age and the last sample's
time, and configuration changes counted as the summary counts them."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest

from pals.control.budget import PowerBudget, ThroughputTarget
from pals.control.loop import ControlLoop
from pals.control.metrics import ControllerMetrics, check_node_name
from pals.control.policies import Baseline
from pals.errors import ConfigError
from pals.sim.node import SimNode, SimNodeSpec
from pals.sim.workload import LengthDistribution, PoissonWorkload

STUCK_GPU, STUCK_CAP_W, AGE_S = 1, 333.0, 1.25
"""The GPU whose cap read-back the test node holds at STUCK_CAP_W, and the engine-data age it reports."""


class StuckCapNode:
    """The simulator, but GPU `STUCK_GPU` reports STUCK_CAP_W whatever is applied, and every sample is AGE_S old."""

    def __init__(self, node: SimNode) -> None:
        self.node = node
        self.clock = node.clock

    def constraints(self):
        return self.node.constraints()

    def apply(self, actuation) -> None:
        self.node.apply(actuation)

    def sample(self):
        sample = self.node.sample()
        caps = list(sample.gpu_power_cap_w)
        caps[STUCK_GPU] = STUCK_CAP_W
        return dataclasses.replace(sample, gpu_power_cap_w=tuple(caps), age_s=AGE_S)


@pytest.fixture(scope="module")
def ran():
    workload = PoissonWorkload(8.0, LengthDistribution.fixed(300), LengthDistribution.fixed(100), seed=3)
    sim = SimNode(SimNodeSpec("Qwen1.5-MoE-A2.7B", "A100-SXM4-80GB"), workload, seed=3)
    loop = ControlLoop(StuckCapNode(sim), Baseline(), sim.clock, budget=PowerBudget(1400.0),
                       target=ThroughputTarget(300.0))
    before_s = time.time()
    loop.run(duration_s=5.0)
    loop.set_budget(PowerBudget(1000.0))  # the governor trims the cap: counted apart from changes
    loop.run(duration_s=5.0)
    after_s = time.time()
    loop.close()
    return loop, before_s, after_s


def test_every_series_carries_the_node_and_the_loops_policy(ran):
    from prometheus_client.parser import text_string_to_metric_families

    loop = ran[0]
    families = list(text_string_to_metric_families(loop.metrics.exposition().decode()))
    assert len(families) >= 40
    for family in families:
        for s in family.samples:
            assert (s.labels["node"], s.labels["policy"]) == (loop.metrics.node, "baseline"), s


def test_caps_are_per_gpu_as_read_back_with_the_maxima_beside_them(ran):
    loop = ran[0]
    value, c = loop.metrics.sample_value, loop.constraints
    last = loop.log.records()[-1]
    caps = [value("pals_gpu_power_cap_watts", gpu=str(i)) for i in range(c.num_gpus)]
    assert caps[STUCK_GPU] == STUCK_CAP_W  # the GPU that did not take its cap shows
    others = [cap for i, cap in enumerate(caps) if i != STUCK_GPU]
    # The record keeps the mean cap the sample read back, the stuck GPU's included.
    mean_others_w = (last.sample.power_cap_w * c.num_gpus - STUCK_CAP_W) / (c.num_gpus - 1)
    assert others == [pytest.approx(mean_others_w, abs=0.01 * c.num_gpus)] * (c.num_gpus - 1)
    assert others[0] < STUCK_CAP_W  # the budget holds the others down
    assert value("pals_gpu_power_cap_watts", gpu=str(c.num_gpus)) is None
    assert [value("pals_gpu_power_cap_max_watts", gpu=str(i)) for i in range(c.num_gpus)] == [c.power_cap_max_w] * c.num_gpus
    assert value("pals_batch_cap_max") == c.batch_cap_max
    assert value("pals_requests_running") == last.sample.requests_running


def test_telemetry_age_and_last_sample_time(ran):
    loop, before_s, after_s = ran
    assert loop.metrics.sample_value("pals_telemetry_age_seconds") == AGE_S
    assert before_s <= loop.metrics.sample_value("pals_last_sample_timestamp_seconds") <= after_s


def test_config_changes_and_trims_are_the_summarys(ran):
    loop = ran[0]
    summary = loop.summary()
    assert summary["governor_trims"] > 0
    assert loop.metrics.sample_value("pals_config_changes_total") == summary["config_changes"]
    assert loop.metrics.sample_value("pals_governor_trims_total") == summary["governor_trims"]
    first = loop.log.records()[0]
    assert first.config_changed  # the initial configuration was applied, and neither counts it


def test_gauges_are_nan_until_there_is_something_to_say():
    metrics = ControllerMetrics(node="n1", policy="pals")
    assert math.isnan(metrics.sample_value("pals_node_power_watts"))
    assert math.isnan(metrics.sample_value("pals_last_sample_timestamp_seconds"))
    assert metrics.sample_value("pals_safe_mode") == 0.0
    assert metrics.sample_value("pals_control_intervals_total") == 0.0
    assert metrics.sample_value("pals_gpu_power_cap_watts", gpu="0") is None


@pytest.mark.parametrize("bad", ["", "a b", "-x", ".x", 'a"b', "a,b", "a=b", "é", "x" * 254, None, 7])
def test_a_node_name_that_cannot_be_a_label_is_refused(bad):
    with pytest.raises(ConfigError, match="--node-name"):
        check_node_name(bad)
    if bad is not None:  # None: the host name
        with pytest.raises(ConfigError):
            ControllerMetrics(node=bad)


@pytest.mark.parametrize("good", ["node0", "vllm-0.pals-agent", "ip-10-0-0-1.ec2.internal", "h100_a:9400", "x" * 253])
def test_host_and_pod_names_are_node_names(good):
    assert check_node_name(good) == good
