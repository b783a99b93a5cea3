"""The per-step cost and power model: the shapes docs/calibration.md asks for, caps, and bad input."""

import dataclasses
import math

import pytest

from pals.errors import ConfigError
from pals.sim.hardware import get_gpu
from pals.sim.llm import LLM_PRESETS, get_llm
from pals.sim.step import Mechanisms, PhysicsParams, PowerLimiter, StepModel, StepShape

A100 = get_gpu("A100-SXM4-80GB")
CAPS_W = (100, 150, 200, 250, 300, 350, 400)
# Smallest TP at which each paper model fits on one A100-80GB (Mixtral 93 GB and Phi-3.5 84 GB need 2).
MIN_TP = {name: (2 if name in ("Mixtral-8x7B", "Phi-3.5-MoE") else 1) for name in LLM_PRESETS}


def model(name: str, tp: int = 1, **kw) -> StepModel:
    return StepModel(get_llm(name), A100, tp=tp, **kw)


def decode(batch: int, context: int = 1000) -> StepShape:
    return StepShape(batch, batch * context, 0, 0)


PREFILL_4K = StepShape(0, 0, 4096, 4096 * 2048)  # one 4096-token prompt: mean attended context 2048

# Zeus NSDI'23 compute-bound jobs (docs/calibration.md §4): (cap / TDP, throughput relative to the top cap).
ZEUS_ROWS = (
    ((0.33, 0.23), (0.50, 0.55), (0.67, 0.87), (0.815, 0.98), (1.0, 1.0)),  # A40 BERT bs256
    ((0.40, 0.53), (0.50, 0.70), (0.60, 0.83), (0.70, 0.89), (0.815, 0.93), (0.90, 0.98), (1.0, 1.0)),  # V100 BERT
    ((0.40, 0.52), (0.50, 0.68), (0.60, 0.84), (0.70, 0.91), (0.815, 0.95), (0.90, 0.98), (1.0, 1.0)),  # V100 ResNet
)


def _interp(row, frac):
    if not row[0][0] <= frac <= row[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(row, row[1:]):
        if x0 <= frac <= x1:
            return y0 + (y1 - y0) * (frac - x0) / (x1 - x0)
    return None


def zeus_band(frac: float) -> tuple[float, float] | None:
    values = [v for v in (_interp(row, frac) for row in ZEUS_ROWS) if v is not None]
    return (min(values), max(values)) if values else None


# ---------------------------------------------------------------- power caps


@pytest.mark.parametrize("name", ["Llama-2-7B", "Mixtral-8x7B", "Qwen1.5-MoE-A2.7B", "OLMoE-1B-7B"])
@pytest.mark.parametrize("batch", [1, 4, 8])
def test_small_batch_decode_draws_what_serving_measurements_show(name, batch):
    """Recalibration (docs/calibration.md §14): decode at full clock draws 0.4-0.9 TDP on an A100, as Splitwise's
    A100 decode (0.44-0.79 TDP, falling with TP) and vLLM serving (0.73-0.91) do, not the 0.2-0.45 of the old target."""
    m = model(name, tp=4 if LLM_PRESETS[name].is_moe else 1)
    full = m.cost(decode(batch), A100.tdp_w)
    assert 0.38 * A100.tdp_w < full.gpu_power_w < 0.9 * A100.tdp_w
    # A cap at or above the natural draw costs nothing.
    assert m.cost(decode(batch), full.gpu_power_w + 1.0).time_s == pytest.approx(full.time_s)
    # A half-TDP cap binds on the dense model's decode (it draws 0.8 TDP) and slows it, but by less than the
    # power cut (Samsi et al.: -13 to -18 % at 0.5 TDP for a decode job drawing >= 0.83 TDP; ours is steeper).
    half = m.cost(decode(batch), A100.tdp_w / 2)
    assert half.gpu_power_w <= A100.tdp_w / 2 + 1e-9
    assert 0.6 < full.time_s / half.time_s <= 1.0


@pytest.mark.parametrize("name, tp", [("Llama-2-7B", 1), ("Mixtral-8x7B", 4), ("Phi-3.5-MoE", 2)])
def test_large_prefill_follows_zeus_compute_bound_table(name, tp):
    m = model(name, tp)
    top = m.cost(PREFILL_4K, A100.tdp_w)
    assert top.gpu_power_w > 0.8 * A100.tdp_w  # compute-bound at full clock draws near TDP
    relative = {cap: top.time_s / m.cost(PREFILL_4K, cap).time_s for cap in CAPS_W}
    for cap, rel in relative.items():
        band = zeus_band(cap / A100.tdp_w)
        if band is not None and cap / A100.tdp_w >= 0.4:  # below 0.4 only the A40 row has data
            # 0.05 slack: the tuned set sits on the band's lower edge at 0.6-0.75 of TDP (docs/calibration.md §7).
            assert band[0] - 0.05 <= rel <= band[1] + 0.05, (cap, rel, band)
    # Steep loss below ~40 % of TDP, little near the top.
    assert relative[100] < 0.35 and relative[150] < 0.6
    assert relative[350] > 0.9
    assert all(relative[a] <= relative[b] for a, b in zip(CAPS_W, CAPS_W[1:]))


@pytest.mark.parametrize("shape", [decode(1), decode(64), PREFILL_4K, StepShape(32, 32 * 700, 2016, 2016 * 900)])
def test_power_never_exceeds_the_cap_and_caps_above_natural_draw_change_nothing(shape):
    m = model("Mixtral-8x7B", 4)
    natural = m.cost_at_clock(shape, A100.max_sm_clock_mhz)  # the uncapped draw (a prefill's exceeds TDP)
    if natural.gpu_power_w < A100.power_limit_max_w:
        above = m.cost(shape, natural.gpu_power_w + 1.0)
        assert not above.cap_binding
        assert (above.time_s, above.gpu_power_w) == pytest.approx((natural.time_s, natural.gpu_power_w))
    for cap in range(100, 401, 13):
        cost = m.cost(shape, float(cap))
        assert cost.gpu_power_w <= cap + 1e-9
        assert cost.cap_binding == (cap < natural.gpu_power_w)
        if cost.cap_binding and not cost.throttled:
            assert cost.sm_clock_mhz < A100.max_sm_clock_mhz
            assert cost.time_s >= natural.time_s
            assert cost.gpu_power_w == pytest.approx(cap, abs=0.5)  # the limiter holds the cap


def test_a_binding_cap_mixes_the_two_clocks_around_it():
    m = model("Llama-2-7B")
    shape = StepShape(16, 16 * 900, 1000, 1000 * 500)
    cap = 230.0
    chosen = m.cost(shape, cap)
    grid = m.clock_grid_mhz
    below = max(c for c in grid if m.cost_at_clock(shape, c).gpu_power_w <= cap)
    above = grid[grid.index(below) + 1]
    assert m.cost_at_clock(shape, above).gpu_power_w > cap
    assert below <= chosen.sm_clock_mhz <= above
    assert m.cost_at_clock(shape, above).time_s <= chosen.time_s <= m.cost_at_clock(shape, below).time_s
    assert chosen.gpu_power_w == pytest.approx(cap, abs=0.25)
    # Continuous in the cap (a fit needs it): a slightly higher cap is slightly faster, never slower.
    assert m.cost(shape, cap + 0.5).time_s < chosen.time_s


def test_power_rises_and_time_falls_with_clock():
    """Binary search over the clock grid relies on this."""
    for name, tp in (("Llama-2-7B", 1), ("Qwen1.5-MoE-A2.7B", 4), ("GPT-2", 1)):
        m = model(name, tp)
        for shape in (decode(1), decode(64), PREFILL_4K):
            costs = [m.cost_at_clock(shape, c) for c in m.clock_grid_mhz]
            assert all(b.gpu_power_w >= a.gpu_power_w - 1e-9 for a, b in zip(costs, costs[1:]))
            assert all(b.time_s <= a.time_s + 1e-12 for a, b in zip(costs, costs[1:]))


def test_below_the_lowest_clock_the_step_is_stretched_to_the_cap():
    # A100's 210 MHz floor fits every step under 100 W; a GPU whose floor is 1000 MHz does not.
    high_floor = dataclasses.replace(A100, min_sm_clock_mhz=1000.0)
    m = StepModel(get_llm("Llama-2-7B"), high_floor)
    floor = m.cost_at_clock(PREFILL_4K, m.clock_grid_mhz[0])
    cost = m.cost(PREFILL_4K, 100.0)
    assert floor.gpu_power_w > 100.0  # even the lowest clock draws more than the cap
    assert cost.throttled and cost.cap_binding
    assert cost.gpu_power_w == pytest.approx(100.0)
    assert cost.time_s > floor.time_s


# ---------------------------------------------------------------- communication and batch


def comm_share(name: str, tp: int, batch: int = 64) -> float:
    cost = model(name, tp).cost(decode(batch), A100.tdp_w)
    return cost.comm_s / cost.time_s


def test_communication_share_grows_with_tp_faster_for_small_expert_moe():
    """PALS Fig 2: Mixtral stays compute-bound; Qwen-MoE and OLMoE become communication-heavy with TP."""
    for name in ("Qwen1.5-MoE-A2.7B", "OLMoE-1B-7B"):
        shares = [comm_share(name, tp) for tp in (1, 2, 4)]
        assert shares[0] == 0.0 and shares[0] < shares[1] < shares[2]
    mixtral = [comm_share("Mixtral-8x7B", tp) for tp in (2, 4)]  # does not fit at TP 1
    assert mixtral[0] < mixtral[1]
    for name in ("Qwen1.5-MoE-A2.7B", "OLMoE-1B-7B"):
        for i, tp in enumerate((2, 4)):
            assert comm_share(name, tp) > mixtral[i] + 0.05, (name, tp)


@pytest.mark.parametrize("name", list(LLM_PRESETS))
def test_node_tokens_per_joule_rise_with_batch_at_steady_context(name):
    tp = MIN_TP[name]
    m = model(name, tp)
    replicas = 4 // tp  # a PALS node: 4 GPUs
    per_joule = []
    for batch in (1, 4, 8, 16, 32, 64):
        cost = m.cost(decode(batch), A100.tdp_w)
        node_w = m.node_power_w(4 * cost.gpu_power_w)
        per_joule.append(batch * replicas / (cost.time_s * node_w))
    assert all(b > a for a, b in zip(per_joule, per_joule[1:])), per_joule


def test_decode_power_rises_with_batch():
    m = model("Llama-2-7B")
    powers = [m.cost(decode(b), 400).gpu_power_w for b in (1, 8, 64)]
    assert powers[0] < powers[1] < powers[2]


# ---------------------------------------------------------------- mechanisms


def test_spin_power_switch_governs_power_during_collectives():
    shape = decode(64)
    on = model("Qwen1.5-MoE-A2.7B", 4).cost(shape, 400)
    off = model("Qwen1.5-MoE-A2.7B", 4, mechanisms=Mechanisms(collective_spin_power=False)).cost(shape, 400)
    assert off.time_s == pytest.approx(on.time_s)
    assert off.gpu_power_w < on.gpu_power_w - 5


def test_fixed_bandwidth_makes_decode_less_cap_sensitive():
    shape = decode(64)
    scaled = model("Llama-2-7B").cost(shape, 150)
    fixed = model("Llama-2-7B", mechanisms=Mechanisms(bandwidth_scales_with_clock=False)).cost(shape, 150)
    assert fixed.time_s < scaled.time_s


def test_cpu_overhead_and_kernel_floor_switches_shorten_steps():
    full = model("GPT-2").cost(decode(1), 400)
    bare = model("GPT-2", mechanisms=Mechanisms(cpu_overhead=False, kernel_launch_floor=False)).cost(decode(1), 400)
    assert bare.overhead_s == 0.0 and full.overhead_s > 0.0
    assert bare.time_s < full.time_s


def test_long_window_limiter_converges_under_the_cap():
    m = model("Llama-2-7B", mechanisms=Mechanisms(per_step_limiter=False))
    limiter = PowerLimiter(m, window_s=0.5)
    costs = [limiter.run(PREFILL_4K, 250.0) for _ in range(120)]
    settled = costs[-20:]
    mean_w = sum(c.energy_j for c in settled) / sum(c.time_s for c in settled)
    assert 225.0 <= mean_w <= 250.0
    assert limiter.sm_clock_mhz < A100.max_sm_clock_mhz
    assert costs[0].gpu_power_w > 250.0  # starts at full clock: a long window overshoots first
    per_step = PowerLimiter(model("Llama-2-7B"))
    assert per_step.run(PREFILL_4K, 250.0) == model("Llama-2-7B").cost(PREFILL_4K, 250.0)


# ---------------------------------------------------------------- memory, node power, caching


def test_kv_cache_capacity():
    m = model("Mixtral-8x7B", 4)
    per_token_per_gpu = 2 * 32 * 2 * 128 * 2  # 8 KV heads over 4 GPUs
    free = 0.9 * A100.memory_bytes - m.weights_per_gpu_bytes() - PhysicsParams().activation_reserve_bytes
    assert m.kv_cache_tokens() == int(free // per_token_per_gpu)
    assert m.kv_cache_tokens(0.95) > m.kv_cache_tokens(0.9)
    assert model("Mixtral-8x7B", 2).kv_cache_tokens() < m.kv_cache_tokens()
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        m.kv_cache_tokens(1.5)


def test_node_power_is_the_papers_fit():
    assert model("GPT-2").node_power_w(4 * 400.0) == pytest.approx(1.05 * 1600 + 345)


def test_idle():
    m = model("Llama-2-7B")
    assert m.idle_power_w == A100.idle_context_w
    idle = m.cost(StepShape(0, 0, 0, 0), 400)
    assert idle.time_s == 0.0 and idle.gpu_power_w == m.idle_power_w


def test_quantized_memo_stays_within_one_percent_of_exact():
    m = model("Mixtral-8x7B", 4)
    for shape in (StepShape(64, 70_001, 0, 0), StepShape(7, 9_999, 1_777, 1_777 * 613)):
        exact = m._eval(m._work(shape.decode_seqs, shape.decode_context_tokens, shape.prefill_tokens,
                                shape.prefill_context_tokens), m._grid[-1])
        cached = m.cost_at_clock(shape, A100.max_sm_clock_mhz)
        assert math.isclose(cached.time_s, exact[0], rel_tol=0.01)
        assert math.isclose(cached.gpu_power_w, exact[1], rel_tol=0.01)


def test_energy_is_power_times_time():
    cost = model("OLMoE-1B-7B", 2).cost(decode(32), 200)
    assert cost.energy_j == pytest.approx(cost.gpu_power_w * cost.time_s)
    parts = cost.compute_s + cost.memory_s + cost.comm_s + cost.overhead_s
    assert parts == pytest.approx(cost.time_s)


# ---------------------------------------------------------------- bad input


def test_tp_not_dividing_heads():
    with pytest.raises(ConfigError) as info:
        model("Mixtral-8x7B", 3)
    assert str(info.value) == "TP 3 does not divide Mixtral-8x7B's 32 attention heads; use 1, 2, 4, 8"


def test_weights_that_do_not_fit_name_the_minimum_tp():
    with pytest.raises(ConfigError, match="use TP 2 or more"):
        model("Mixtral-8x7B", 1)
    with pytest.raises(ConfigError, match="use TP 4 or more") as info:
        StepModel(get_llm("Mixtral-8x7B"), get_gpu("A100-SXM4-40GB"), tp=2)
    assert "\n" not in str(info.value)


def test_bad_ep_and_tp_values():
    with pytest.raises(ConfigError, match="EP 3 does not divide"):
        model("Mixtral-8x7B", 2, ep=3)
    with pytest.raises(ConfigError, match="dense"):
        model("Llama-2-7B", 1, ep=2)
    with pytest.raises(ConfigError, match="positive integer"):
        model("Llama-2-7B", 0)


def test_expert_parallel_uses_all_to_all_and_costs_more_across_nodes():
    in_node = StepModel(get_llm("Qwen1.5-MoE-A2.7B"), A100, tp=4, ep=4).cost(decode(64), 400)
    across = StepModel(get_llm("Qwen1.5-MoE-A2.7B"), A100, tp=4, ep=12).cost(decode(64), 400)
    assert 0 < in_node.comm_s < across.comm_s


def test_bad_cap_and_clock():
    m = model("Llama-2-7B")
    with pytest.raises(ConfigError, match="100-400 W"):
        m.cost(decode(1), 50.0)
    with pytest.raises(ConfigError, match="MHz"):
        m.cost_at_clock(decode(1), 5000.0)
    with pytest.raises(ConfigError, match="negative"):
        m.cost(StepShape(-1, 0, 0, 0), 400)
    with pytest.raises(ConfigError, match="eta_attention"):
        PhysicsParams(eta_attention=1.5)
