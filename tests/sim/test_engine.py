"""The continuous-batching engine: timing, batching rules, draining, preemption, energy."""

from __future__ import annotations

import random

import pytest

from pals.errors import ConfigError
from pals.sim.engine import Engine
from pals.sim.hardware import get_gpu
from pals.sim.llm import get_llm
from pals.sim.step import StepModel, StepShape
from pals.sim.workload import LengthDistribution, PoissonWorkload, Request, SaturatingWorkload

CAP_W = 400.0


@pytest.fixture(scope="module")
def mixtral():
    return StepModel(get_llm("Mixtral-8x7B"), get_gpu("A100-SXM4-80GB"), tp=4)


def make_engine(model, **kw):
    args = dict(kv_cache_tokens=model.kv_cache_tokens(), batch_cap=64, batch_cap_max=64, power_cap_w=CAP_W)
    args.update(kw)
    return Engine(model, **args)


class ShapeSpy:
    """Records every step shape the engine asks the real step model to cost."""

    def __init__(self, model):
        self.model = model
        self.shapes: list[StepShape] = []

    def __call__(self, shape, cap_w):
        self.shapes.append(shape)
        return self.model.cost(shape, cap_w)


def test_one_request_latencies_are_the_sum_of_its_step_costs(mixtral):
    eng = make_engine(mixtral)
    eng.advance_to(1.0)
    eng.submit(Request(1.0, 5000, 4))
    eng.advance_to(100.0)
    # Chunked prefill: 2048 + 2048 + 904 tokens, each attending to all tokens before it.
    expected_ttft = 0.0
    done = 0
    for chunk in (2048, 2048, 904):
        ctx = chunk * done + chunk * (chunk + 1) // 2
        expected_ttft += mixtral.cost(StepShape(0, 0, chunk, ctx), CAP_W).time_s
        done += chunk
    decode = [mixtral.cost(StepShape(1, 5000 + i, 0, 0), CAP_W).time_s for i in (1, 2, 3)]
    assert eng.ttft_log_s == [pytest.approx(expected_ttft, rel=1e-9)]
    assert eng.finish_log_e2e_s == [pytest.approx(expected_ttft + sum(decode), rel=1e-9)]
    assert eng.tpot_log_s == [pytest.approx(sum(decode) / 3, rel=1e-9)]
    assert eng.generated_tokens_total == 4 and eng.prompt_tokens_total == 5000
    assert eng.steps_total == 6 and eng.running == 0 and eng.kv_cache_usage == 0.0


def test_idle_time_runs_at_idle_power(mixtral):
    eng = make_engine(mixtral)
    eng.advance_to(10.0)
    assert eng.energy_j == pytest.approx(10.0 * mixtral.idle_power_w)
    assert eng.power_w == mixtral.idle_power_w and eng.steps_total == 0


def test_decode_tokens_count_against_the_token_budget(mixtral):
    spy = ShapeSpy(mixtral)
    eng = make_engine(mixtral, cost_fn=spy, max_num_batched_tokens=2048)
    for _ in range(40):
        eng.submit(Request(0.0, 100, 500))
    eng.advance_to(2.0)  # 40 sequences now decoding
    eng.submit(Request(2.0, 6000, 5))
    eng.advance_to(4.0)
    for shape in spy.shapes:
        assert shape.decode_seqs + shape.prefill_tokens <= 2048
    mixed = [s for s in spy.shapes if s.decode_seqs == 40 and s.prefill_tokens]
    assert mixed[0].prefill_tokens == 2048 - 40  # the long prompt takes what decode leaves


def test_lowering_the_batch_cap_drains_and_raising_it_admits(mixtral):
    sat = SaturatingWorkload(LengthDistribution.fixed(200), LengthDistribution.uniform(20, 200), seed=1)
    eng = make_engine(mixtral, source=sat.requests(), min_waiting=64)
    eng.advance_to(5.0)
    assert eng.running == 64
    eng.set_batch_cap(8)
    t, prev = 5.0, eng.running
    reached_at = None
    while t < 30.0:
        t += 0.002
        eng.advance_to(t)
        running = eng.running
        if prev > 8:
            assert running <= prev, "running grew while above the cap"
        else:
            assert running <= 8, "admitted past the lowered cap"
        if running == 8 and reached_at is None:
            reached_at = t
        prev = running
    assert reached_at is not None and eng.running == 8
    assert eng.preemptions_total == 0  # lowering the cap never preempts
    eng.set_batch_cap(48)
    eng.advance_to(32.0)
    assert eng.running == 48
    with pytest.raises(ConfigError):
        eng.set_batch_cap(0)
    with pytest.raises(ConfigError):
        eng.set_batch_cap(65)


def test_closed_loop_keeps_the_queue_full(mixtral):
    sat = SaturatingWorkload(LengthDistribution.fixed(300), LengthDistribution.uniform(20, 80), seed=2)
    eng = make_engine(mixtral, source=sat.requests(), min_waiting=64, batch_cap=16)
    full = 0
    for k in range(1, 100):
        eng.advance_to(k * 0.1)
        assert eng.waiting >= 64
        assert 1 <= eng.running <= 16
        full += eng.running == 16
    # Refilling the batch after finishes is limited only by the token budget: a step or two.
    assert full >= 80


@pytest.mark.parametrize("kv_tokens", [None, 12_000])
def test_every_request_gets_all_its_tokens_across_random_cap_changes(mixtral, kv_tokens):
    rng = random.Random(11)
    work = PoissonWorkload(30.0, LengthDistribution.uniform(50, 1500), LengthDistribution.uniform(1, 300),
                           seed=5, duration_s=20.0)
    requests = list(work.requests())
    eng = make_engine(mixtral, kv_cache_tokens=kv_tokens or mixtral.kv_cache_tokens())
    ids = []
    t = 0.0
    pending = list(requests)
    while pending or eng.outstanding:
        t += rng.uniform(0.05, 0.5)
        while pending and pending[0].arrival_s <= t:
            r = pending.pop(0)
            eng.advance_to(r.arrival_s)
            ids.append(eng.submit(r))
        eng.advance_to(t)
        eng.set_batch_cap(rng.choice([1, 2, 8, 16, 32, 64]))
        eng.set_power_cap_w(rng.choice([150.0, 250.0, 400.0]))
        assert t < 3600, "engine did not drain"
    assert eng.finished_total == len(requests) and eng.rejected_total == 0
    for rid, r in zip(ids, requests):
        assert eng.generated_of(rid) == r.output_tokens
    # Every token produced exactly once: the counter (incremented per emitted token) equals the demand.
    assert eng.generated_tokens_total == sum(r.output_tokens for r in requests)
    assert eng.prompt_tokens_total == sum(r.prompt_tokens for r in requests)
    assert sorted(eng.finish_log_output) == sorted(r.output_tokens for r in requests)
    if kv_tokens:
        assert eng.preemptions_total > 0  # the small cache forced recomputation
        assert eng.prefill_tokens_total > eng.prompt_tokens_total
    else:
        assert eng.preemptions_total == 0
    assert eng.kv_cache_usage == 0.0


def test_energy_counter_is_the_sum_of_power_segments_with_midstep_cap_changes(mixtral):
    sat = SaturatingWorkload(LengthDistribution.fixed(3000), LengthDistribution.fixed(100), seed=3)
    eng = make_engine(mixtral, source=sat.requests(), min_waiting=8, record_segments=True)
    rng = random.Random(4)
    t = 0.0
    changes = 0
    while t < 20.0:
        t += rng.uniform(0.001, 0.05)  # lands mid-step most of the time
        eng.advance_to(t)
        eng.set_power_cap_w(rng.choice([100.0, 175.0, 250.0, 325.0, 400.0]))
        changes += 1
    eng.advance_to(25.0)
    segments = eng.segments + [(eng._seg_start_s, eng.now_s, eng.power_w)]
    integral = sum((b - a) * p for a, b, p in segments)
    assert eng.energy_j == pytest.approx(integral, rel=1e-9)
    # Segments tile the time line with no gap or overlap.
    assert segments[0][0] == 0.0 and segments[-1][1] == 25.0
    assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))
    assert max(p for _, _, p in segments) <= 400.0
    # A lower cap really lowers power: some segments sit at the 100 W cap floor region.
    assert min(p for _, _, p in segments) < 150.0


def test_power_cap_change_midstep_rescales_the_rest_of_the_step(mixtral):
    eng = make_engine(mixtral)
    eng.submit(Request(0.0, 2048, 1))
    full = mixtral.cost(StepShape(0, 0, 2048, 2048 * 2049 // 2), CAP_W)
    low = mixtral.cost(StepShape(0, 0, 2048, 2048 * 2049 // 2), 150.0)
    assert low.time_s > full.time_s  # the prefill step is cap-bound at 150 W
    half = 0.5 * full.time_s
    eng.advance_to(half)
    eng.set_power_cap_w(150.0)
    eng.advance_to(10.0)
    assert eng.finish_log_e2e_s == [pytest.approx(half + 0.5 * low.time_s, rel=1e-9)]
    expected = half * full.gpu_power_w + 0.5 * low.time_s * low.gpu_power_w
    expected += (10.0 - half - 0.5 * low.time_s) * mixtral.idle_power_w
    assert eng.energy_j == pytest.approx(expected, rel=1e-9)


def test_request_that_can_never_fit_is_rejected_not_stuck(mixtral):
    eng = make_engine(mixtral, kv_cache_tokens=1000)
    assert eng.submit(Request(0.0, 900, 200)) == -1
    eng.submit(Request(0.0, 100, 10))
    eng.advance_to(5.0)
    assert eng.rejected_total == 1 and eng.finished_total == 1 and eng.outstanding == 0


def test_engine_config_errors(mixtral):
    with pytest.raises(ConfigError, match="max_num_batched_tokens"):
        make_engine(mixtral, batch_cap_max=256, batch_cap=8, max_num_batched_tokens=128)
    with pytest.raises(ConfigError, match="batch cap"):
        make_engine(mixtral, batch_cap=0)
