"""Steady-state estimates against the engine they summarise, and the default batch grid."""

import math

import numpy as np
import pytest

from pals.core.node import Actuation
from pals.errors import ConfigError
from pals.sim.grid import default_batch_grid
from pals.sim.hardware import get_gpu
from pals.sim.llm import get_llm
from pals.sim.node import NoiseConfig, SimNode, SimNodeSpec
from pals.sim.steady import continuous_steady_state, static_batch
from pals.sim.step import StepModel, StepShape
from pals.sim.workload import LengthDistribution, SaturatingWorkload


def _node_run(model, gpu, tp, cap, batch, prompt, output):
    spec = SimNodeSpec(model, gpu, num_gpus=tp, tp=tp, batch_cap_max=max(batch, 64))
    workload = SaturatingWorkload(LengthDistribution.uniform(int(0.6 * prompt), int(1.4 * prompt)),
                                  LengthDistribution.uniform(int(0.5 * output), int(1.5 * output)), seed=3)
    node = SimNode(spec, workload, noise=NoiseConfig.none(), initial=Actuation(cap, batch))
    node.clock.wait_until(20.0)
    tokens, energy = node.generated_tokens_total(), node.energy_j_total()
    node.clock.wait_until(60.0)
    tpot = [x for e in node.engines for t, x in zip(e.tpot_log_time_s, e.tpot_log_s) if t >= 20.0]
    return ((node.generated_tokens_total() - tokens) / 40.0, (node.energy_j_total() - energy) / 40.0 / tp,
            float(np.median(tpot)), node.step_model, spec)


@pytest.mark.parametrize("model, gpu, tp, cap, batch, prompt, output", [
    ("Llama-2-7B", "A100-SXM4-80GB", 1, 400, 1, 1000, 200),
    ("Llama-2-7B", "A100-SXM4-80GB", 1, 400, 64, 1000, 200),
    ("Mixtral-8x7B", "A100-SXM4-80GB", 4, 200, 16, 1000, 200),
    ("OLMoE-1B-7B", "A100-SXM4-80GB", 4, 250, 64, 600, 300),
    ("Mistral-7B", "H100-SXM", 1, 700, 256, 800, 600),
])
def test_continuous_estimate_matches_the_engine(model, gpu, tp, cap, batch, prompt, output):
    tps, power, tpot, step_model, spec = _node_run(model, gpu, tp, cap, batch, prompt, output)
    est = continuous_steady_state(step_model, batch_cap=batch, prompt_tokens=prompt, output_tokens=output,
                                  power_cap_w=cap, max_num_batched_tokens=spec.token_budget)
    assert est.throughput_tps == pytest.approx(tps, rel=0.05)
    assert est.gpu_power_w == pytest.approx(power, rel=0.03)
    assert est.tpot_s == pytest.approx(tpot, rel=0.08)
    assert math.isnan(est.ttft_s)


def test_static_batch_adds_up():
    m = StepModel(get_llm("Llama-2-7B"), get_gpu("A100-SXM4-80GB"))
    state = static_batch(m, batch=8, prompt_tokens=512, output_tokens=128, power_cap_w=400)
    prefill = m.cost(StepShape(0, 0, 8 * 512, 8 * (512 * 513 // 2)), 400)
    total_s = state.ttft_s + 127 * state.tpot_s
    assert state.ttft_s == pytest.approx(prefill.time_s)
    assert state.throughput_tps == pytest.approx(8 * 128 / total_s)
    assert state.prefill_power_w == pytest.approx(prefill.gpu_power_w)
    # The prefill draws more than the decode that follows; the mean lies between.
    decode_w = m.cost(StepShape(8, 8 * 576, 0, 0), 400).gpu_power_w
    assert decode_w < state.gpu_power_w < state.prefill_power_w


def test_estimates_reject_bad_input():
    m = StepModel(get_llm("GPT-2"), get_gpu("A100-SXM4-80GB"))
    with pytest.raises(ConfigError, match=">= 1"):
        continuous_steady_state(m, batch_cap=0, prompt_tokens=10, output_tokens=10, power_cap_w=400,
                                max_num_batched_tokens=2048)
    with pytest.raises(ConfigError, match="below the batch cap"):
        continuous_steady_state(m, batch_cap=64, prompt_tokens=10, output_tokens=10, power_cap_w=400,
                                max_num_batched_tokens=32)
    with pytest.raises(ConfigError, match=">= 1"):
        static_batch(m, batch=1, prompt_tokens=0, output_tokens=4, power_cap_w=400)


def test_default_batch_grid_scales_with_the_gpu_and_the_kv_cache():
    a100, h100 = get_gpu("A100-SXM4-80GB"), get_gpu("H100-SXM")
    assert default_batch_grid(a100, 10**6, 1000) == (1, 4, 8, 16, 32, 64)
    assert default_batch_grid(h100, 10**6, 1000) == (1, 4, 8, 16, 32, 64, 128, 256)
    assert default_batch_grid(h100, 40_000, 1000) == (1, 4, 8, 16, 32)  # only 40 sequences fit
    assert default_batch_grid(h100, 100, 1000) == (1,)
    with pytest.raises(ConfigError):
        default_batch_grid(h100, 0, 1000)
