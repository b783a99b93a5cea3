"""pals.runtime: the typed deployment and load, the one workload function, ground truth, the builder."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pals.core.power import NodePowerModel
from pals.errors import ConfigError
from pals.runtime.builder import ControlSettings, build_controller
from pals.runtime.deployment import Deployment
from pals.runtime.load import LoadSpec, LognormalLengths, TraceLengths, UniformLengths, make_workload, saturating_equivalent
from pals.runtime.predictors import PredictorSource, node_power_model
from pals.runtime.truth import GroundTruth, Measured
from pals.sim.node import SimNode
from pals.sim.workload import PoissonWorkload, SaturatingWorkload, TraceWorkload


def test_deployment_defaults_to_the_paper_node_and_validates():
    d = Deployment("Mixtral-8x7B")
    assert (d.gpu, d.num_gpus, d.tp, d.batch_cap_max) == ("A100-SXM4-80GB", 4, 4, 64)
    assert d.sim_spec().llm_spec.name == "Mixtral-8x7B"
    with pytest.raises(ConfigError, match="num_gpus"):
        Deployment("Mixtral-8x7B", num_gpus=0)
    with pytest.raises(ConfigError, match="divisible by tp"):
        Deployment("Mixtral-8x7B", tp=3).sim_spec()


def test_one_load_at_a_time():
    with pytest.raises(ConfigError, match="exactly one load"):
        LoadSpec()
    with pytest.raises(ConfigError, match="exactly one load"):
        LoadSpec(trace="conv", saturate=True)


@pytest.mark.parametrize("lengths, prompt_mean, output_mean", [
    (UniformLengths((600, 1400), (100, 300)), 1000.0, 200.0),
    (LognormalLengths(256.0, 64.0), 256.0, 64.0),
])
def test_lengths_are_explicit_choices(lengths, prompt_mean, output_mean):
    saturating = make_workload(LoadSpec(saturate=True, lengths=lengths, seed=3))
    assert isinstance(saturating, SaturatingWorkload) and saturating.seed == 3
    assert (saturating.descriptor.mean_prompt_tokens, saturating.descriptor.mean_output_tokens) == (prompt_mean, output_mean)
    poisson = make_workload(LoadSpec.poisson_for_tps(1000.0, lengths, seed=3))
    assert isinstance(poisson, PoissonWorkload) and poisson.rate_rps == 1000.0 / output_mean


def test_trace_loads_keep_their_pairs_and_others_draw_from_the_trace():
    trace = LoadSpec(trace="conv", rate_scale=2.0)
    assert isinstance(make_workload(trace), TraceWorkload) and trace.length_key() == "conv-paired"
    assert saturating_equivalent(trace).descriptor.name == "saturating:conv"
    poisson = LoadSpec(rate_rps=3.0, lengths=TraceLengths("code"))
    assert poisson.length_key() == "code-indep"
    assert make_workload(poisson).descriptor.mean_output_tokens == saturating_equivalent(poisson).descriptor.mean_output_tokens


def test_grid_truth_answers_with_the_nearest_point():
    measured = {(c, b): Measured(c + b, 500.0 + c, c) for c in (150.0, 400.0) for b in (1, 64)}
    truth = GroundTruth.on_grid(lambda c, b: measured[(c, b)], (150.0, 400.0), (1, 64))
    pred = truth.predict_candidates([160.0, 390.0], [2, 48])
    assert pred.throughput_tps.tolist() == [151.0, 464.0]
    assert pred.node_power_w.tolist() == [650.0, 900.0]
    assert truth.max_throughput_tps() == 464.0


def test_predictor_source_and_node_power_line():
    with pytest.raises(ConfigError, match="not both"):
        PredictorSource("a.pals", "b.csv")
    assert node_power_model(None) == NodePowerModel()
    fitted = SimpleNamespace(syspower_=SimpleNamespace(alpha=1.1, beta_w=300.0))
    assert node_power_model(fitted) == NodePowerModel(1.1, 300.0)


def test_builder_wires_the_fitted_node_power_line_unless_told_otherwise():
    node = SimNode(Deployment("GPT-2", tp=1).sim_spec(), make_workload(LoadSpec(saturate=True, lengths=UniformLengths((10, 20), (5, 10)))))
    fitted = SimpleNamespace(syspower_=SimpleNamespace(alpha=1.1, beta_w=300.0))
    controller = build_controller(node, ControlSettings("baseline", target_tps=100.0), predictor=fitted)
    assert controller.loop.power_model == NodePowerModel(1.1, 300.0)
    assert controller.loop.target.target_tps == 100.0 and controller.endpoint is None
    controller.run(duration_s=1.0)
    controller.close()
    paper = build_controller(node, ControlSettings("baseline", endpoint_port=0), predictor=fitted, power_model=NodePowerModel())
    try:
        assert paper.loop.power_model == NodePowerModel() and paper.endpoint is not None
    finally:
        paper.close()
