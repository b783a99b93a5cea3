"""Workloads: reproducible arrivals, trace loading and its errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pals.errors import ConfigError
from pals.sim.workload import (
    LengthDistribution,
    PoissonWorkload,
    Request,
    SaturatingWorkload,
    TraceWorkload,
    load_trace,
)


def take(workload, n):
    return list(itertools.islice(workload.requests(), n))


def poisson(seed=0, rate=4.0):
    return PoissonWorkload(
        rate, LengthDistribution.lognormal(800, 1.0), LengthDistribution.uniform(10, 300), seed=seed
    )


def test_poisson_rate_and_lengths_match_parameters():
    reqs = take(poisson(rate=4.0), 20000)
    times = np.array([r.arrival_s for r in reqs])
    assert np.all(np.diff(times) >= 0)
    assert np.mean(np.diff(times)) == pytest.approx(0.25, rel=0.03)
    prompts = np.array([r.prompt_tokens for r in reqs])
    outputs = np.array([r.output_tokens for r in reqs])
    assert prompts.min() >= 1 and outputs.min() >= 10 and outputs.max() <= 300
    assert prompts.mean() == pytest.approx(800, rel=0.05)
    assert outputs.mean() == pytest.approx(155, rel=0.03)
    assert poisson().descriptor.arrival_rate_rps == 4.0


def test_same_seed_same_requests_different_seed_differs():
    assert take(poisson(seed=7), 500) == take(poisson(seed=7), 500)
    # Two iterators of one workload are independent and equal (no shared RNG state).
    w = poisson(seed=7)
    assert take(w, 100) == take(w, 100)
    assert take(poisson(seed=7), 500) != take(poisson(seed=8), 500)
    s1 = SaturatingWorkload.from_trace("code", seed=1)
    assert take(s1, 300) == take(SaturatingWorkload.from_trace("code", seed=1), 300)
    assert take(s1, 300) != take(SaturatingWorkload.from_trace("code", seed=2), 300)


def test_poisson_duration_ends_the_stream():
    reqs = list(PoissonWorkload(10.0, LengthDistribution.fixed(5), LengthDistribution.fixed(5),
                                seed=1, duration_s=20.0).requests())
    assert 150 < len(reqs) < 250
    assert reqs[-1].arrival_s <= 20.0


def test_packaged_traces_load_with_their_published_statistics():
    conv = TraceWorkload.from_csv("conv")
    d = conv.descriptor
    assert len(conv.arrivals_s) == 19366  # Splitwise: 19,366 requests
    # Splitwise's published conv statistics: prompt mean ~1155, output mean ~211, ~5.5 req/s.
    assert d.mean_prompt_tokens == pytest.approx(1155, rel=0.01)
    assert d.mean_output_tokens == pytest.approx(211, rel=0.01)
    assert d.arrival_rate_rps == pytest.approx(5.5, rel=0.05)
    code = TraceWorkload.from_csv("code").descriptor
    assert code.mean_prompt_tokens == pytest.approx(2048, rel=0.01)
    assert code.mean_output_tokens == pytest.approx(28, rel=0.02)


def test_rate_scale_compresses_and_loop_repeats():
    base = take(TraceWorkload.from_csv("code"), 50)
    fast = take(TraceWorkload.from_csv("code", rate_scale=2.0), 50)
    assert [r.prompt_tokens for r in base] == [r.prompt_tokens for r in fast]
    assert [f.arrival_s for f in fast] == pytest.approx([b.arrival_s / 2 for b in base])
    assert TraceWorkload.from_csv("code", rate_scale=2.0).descriptor.arrival_rate_rps == pytest.approx(
        2 * TraceWorkload.from_csv("code").descriptor.arrival_rate_rps
    )
    window = TraceWorkload.from_csv("conv", start_s=600.0, duration_s=60.0, loop=True)
    n = len(window.arrivals_s)
    assert 200 < n < 500
    reqs = take(window, 3 * n)
    times = [r.arrival_s for r in reqs]
    assert times == sorted(times) and times[0] == 0.0
    assert times[-1] > 2 * 60.0
    assert [r.prompt_tokens for r in reqs[:n]] == [r.prompt_tokens for r in reqs[n : 2 * n]]
    assert len(list(TraceWorkload.from_csv("conv", start_s=600.0, duration_s=60.0).requests())) == n


def test_any_csv_with_the_columns_works_numeric_or_iso_times(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("extra,TIMESTAMP,ContextTokens,GeneratedTokens\nx,10.5,100,0\ny,10.0,50,7\n")
    times, prompts, outputs = load_trace(path)
    assert times == [0.0, 0.5] and prompts == [50, 100] and outputs == [7, 1]
    iso = tmp_path / "iso.csv"
    iso.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.5000000,3,4\n"
                   "2023-11-16 18:00:02.0000000,5,6\n")
    assert take(TraceWorkload.from_csv(iso, rate_scale=0.5), 2) == [Request(0.0, 3, 4), Request(3.0, 5, 6)]


def test_trace_missing_column_is_one_line_naming_file_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("TIMESTAMP,ContextTokens\n1,2\n")
    with pytest.raises(ConfigError) as err:
        TraceWorkload.from_csv(path)
    msg = str(err.value)
    assert "bad.csv" in msg and "GeneratedTokens" in msg and "\n" not in msg


def test_trace_unparsable_row_names_row_and_column(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1,2,3\n2,lots,3\n")
    with pytest.raises(ConfigError) as err:
        TraceWorkload.from_csv(path)
    msg = str(err.value)
    assert "bad.csv" in msg and "row 3" in msg and "ContextTokens" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="cannot open"):
        TraceWorkload.from_csv(tmp_path / "nope.csv")


def test_bad_distribution_and_rate_parameters():
    with pytest.raises(ConfigError):
        LengthDistribution.uniform(10, 5)
    with pytest.raises(ConfigError):
        LengthDistribution.fixed(0)
    with pytest.raises(ConfigError):
        PoissonWorkload(0.0, LengthDistribution.fixed(1), LengthDistribution.fixed(1))
    with pytest.raises(ConfigError):
        TraceWorkload.from_csv("conv", rate_scale=0)


def test_saturating_descriptor_has_no_rate_and_pairs_come_from_the_trace():
    sat = SaturatingWorkload.from_trace("conv", seed=3)
    assert sat.closed_loop and sat.descriptor.arrival_rate_rps is None
    _, prompts, outputs = load_trace("conv")
    pairs = set(zip(prompts, outputs))
    assert all((r.prompt_tokens, r.output_tokens) in pairs for r in take(sat, 2000))


# -- hostile or careless inputs: one clear line, never an endless stream or a traceback -------------

HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
FIXED = LengthDistribution.fixed(10)


@pytest.mark.parametrize(
    "rate, needle",
    [
        (float("inf"), "got inf"),
        (float("nan"), "got nan"),
        (0.0, "got 0.0"),
        (-1.0, "got -1.0"),
        (1e-300, "got 1e-300"),
        (1e6, "got 1000000.0"),
        (10**400, "got 1000"),
        ("4", "must be a number"),
        (True, "must be a number"),
        (None, "must be a number"),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_poisson_refuses_absurd_rates_with_the_range(rate, needle):
    with pytest.raises(ConfigError) as info:
        PoissonWorkload(rate, FIXED, FIXED)
    message = str(info.value)
    assert "Poisson rate_rps must be a" in message and needle in message and "\n" not in message
    if isinstance(rate, float):
        assert "from 0.000001 to 10,000 requests/s" in message or "from 1e-06 to 10,000 requests/s" in message


@pytest.mark.parametrize("duration", [float("nan"), float("inf"), -1.0, 1e300, "10"], ids=repr)
def test_poisson_refuses_bad_durations(duration):
    with pytest.raises(ConfigError, match="Poisson duration_s must be a"):
        PoissonWorkload(1.0, FIXED, FIXED, duration_s=duration)


@pytest.mark.parametrize("seed", [-1, 2**200, 1.5, "7", True, None], ids=repr)
def test_seeds_must_be_whole_numbers(seed):
    with pytest.raises(ConfigError, match="seed must be a whole number from 0"):
        PoissonWorkload(1.0, FIXED, FIXED, seed=seed)
    with pytest.raises(ConfigError, match="seed must be a whole number from 0"):
        SaturatingWorkload(FIXED, FIXED, seed=seed)


def test_numpy_seeds_and_rates_give_the_same_stream_as_python_ones():
    a = take(PoissonWorkload(np.float64(3.0), FIXED, FIXED, seed=np.int64(5)), 50)
    assert a == take(PoissonWorkload(3.0, FIXED, FIXED, seed=5), 50)


@pytest.mark.parametrize(
    "build, needle",
    [
        (lambda: LengthDistribution.fixed(float("inf")), "fixed length must be a whole number from 1 to 16,777,216"),
        (lambda: LengthDistribution.fixed(10**400), "fixed length must be a whole number"),
        (lambda: LengthDistribution.fixed(2.5), "fixed length must be a whole number"),
        (lambda: LengthDistribution.uniform(1, 10**9), "uniform high length must be a whole number"),
        (lambda: LengthDistribution.uniform(-5, 5), "uniform low length must be a whole number"),
        (lambda: LengthDistribution.lognormal(float("nan")), "lognormal mean length must be a finite"),
        (lambda: LengthDistribution.lognormal(100, float("inf")), "lognormal cv must be a finite"),
        (lambda: LengthDistribution.lognormal(100, 1.0, float("inf")), "lognormal max length must be a finite"),
        (lambda: LengthDistribution.empirical([5, float("inf")]), "empirical lengths must be numbers"),
        (lambda: LengthDistribution.empirical([5, -3]), "empirical lengths must be numbers"),
        (lambda: LengthDistribution.empirical([]), "needs at least one value"),
        (lambda: SaturatingWorkload(FIXED, FIXED, min_waiting=0), "min_waiting must be a whole number"),
        (lambda: SaturatingWorkload(FIXED, FIXED, min_waiting=10**12), "min_waiting must be a whole number"),
    ],
)
def test_length_distributions_refuse_non_finite_or_absurd_parameters(build, needle):
    with pytest.raises(ConfigError, match=needle):
        build()


@pytest.mark.parametrize(
    "body, needle",
    [
        ("0,inf,5\n1,5,5\n", "row 2 column ContextTokens is not a number from 0 to 16,777,216: 'inf'"),
        ("0,5,nan\n1,5,5\n", "row 2 column GeneratedTokens is not a number from 0 to 16,777,216: 'nan'"),
        ("0,5,1e400\n1,5,5\n", "column GeneratedTokens is not a number"),
        ("0,-5,5\n1,5,5\n", "column ContextTokens is not a number"),
        ("0,1e20,5\n1,5,5\n", "column ContextTokens is not a number"),
        ("inf,5,5\n1,5,5\n", "row 2 column TIMESTAMP is not a finite time: 'inf'"),
        ("nan,5,5\n1,5,5\n", "row 2 column TIMESTAMP is not a finite time"),
        ("0,5,5\n1e300,5,5\n", "arrivals span 1e+300 s, more than 1e+09 s"),
        ("", "no data rows"),
    ],
)
def test_bad_trace_values_are_one_line(tmp_path, body, needle):
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + body)
    with pytest.raises(ConfigError) as info:
        TraceWorkload.from_csv(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_binary_garbage_trace_is_one_line(tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        TraceWorkload.from_csv(path)
    path.write_bytes(HEADER.encode() + b"0,5\x00,5\n")
    with pytest.raises(ConfigError, match="NUL bytes"):
        load_trace(path)
    with pytest.raises(ConfigError, match="cannot open \\(not a file\\)"):
        load_trace(tmp_path)


@pytest.mark.parametrize("loop", [False, True])
def test_a_trace_of_identical_timestamps_is_refused_not_replayed_forever(tmp_path, loop):
    path = tmp_path / "burst.csv"
    path.write_text(HEADER + "5,10,10\n5,10,10\n5,10,10\n")
    with pytest.raises(ConfigError, match="all 3 requests arrive at the same instant"):
        TraceWorkload.from_csv(path, loop=loop)
    with pytest.raises(ConfigError, match="same instant"):
        TraceWorkload([0.0, 0.0], [1, 1], [1, 1], loop=True)


def test_one_row_trace_still_loops_forward_in_time(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text(HEADER + "5,10,10\n")
    arrivals = [r.arrival_s for r in take(TraceWorkload.from_csv(path, loop=True), 5)]
    assert arrivals == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), 0.0, -1.0, 1e-300, 1e300, "2"], ids=repr)
def test_trace_rate_scale_must_be_in_range(scale):
    with pytest.raises(ConfigError, match="trace rate_scale must be a"):
        TraceWorkload.from_csv("conv", rate_scale=scale)


def test_a_trace_sped_up_past_the_rate_limit_is_refused():
    TraceWorkload.from_csv("conv", rate_scale=1000)  # 5,500 requests/s: allowed
    with pytest.raises(ConfigError, match="offers 5.53e\\+04 requests/s at rate_scale 10000, more than 10,000"):
        TraceWorkload.from_csv("conv", rate_scale=10_000)


@pytest.mark.parametrize("kwargs", [{"start_s": float("nan")}, {"start_s": -1.0}, {"duration_s": float("inf")},
                                    {"duration_s": -5.0}], ids=repr)
def test_trace_window_must_be_finite(kwargs):
    with pytest.raises(ConfigError, match="trace (start_s|duration_s) must be a"):
        TraceWorkload.from_csv("conv", **kwargs)
