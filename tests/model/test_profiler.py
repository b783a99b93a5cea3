"""The profiler on the simulated node: counter-delta measurement, restore, resume after a kill, refusals."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from pals.errors import ConfigError, ProfileError
from pals.core.workload import WorkloadDescriptor
from pals.model.profile import read_profile
from pals.model.profiler import ProfileGrid, paper_grid_within, run_profile
from pals.core.node import Actuation

GRID = ProfileGrid((150.0, 250.0, 400.0), (1, 8, 64))
WORKLOAD = WorkloadDescriptor(1000.0, 200.0, None)


class FaultInjectingNode:
    """Delegates to a real `SimNode`, records every `apply`, and simulates a kill of the profiler
    (KeyboardInterrupt) on every `apply` after the first `fail_after_applies` (None: never)."""

    def __init__(self, node, fail_after_applies: int | None = None) -> None:
        self.node = node
        self.clock = node.clock
        self.fail_after_applies = fail_after_applies
        self.applies: list[Actuation] = []

    def constraints(self):
        return self.node.constraints()

    def sample(self):
        return self.node.sample()

    def apply(self, actuation: Actuation) -> None:
        if self.fail_after_applies is not None and len(self.applies) >= self.fail_after_applies:
            raise KeyboardInterrupt("simulated kill of the profiler")
        self.node.apply(actuation)
        self.applies.append(actuation)


class WithoutWallMeter(FaultInjectingNode):
    """A `SimNode` whose samples carry no node (wall) power, as a node without an IPMI reading."""

    def sample(self):
        return dataclasses.replace(self.node.sample(), node_power_w=None)


def test_rows_are_the_counter_deltas_of_the_window(tmp_path, sim_node):
    """One point on an exact-telemetry node equals its deterministic twin's counters over [warm-up, warm-up + window]."""
    initial = Actuation(250.0, 8)
    node = sim_node(exact=True, initial=initial)
    row = run_profile(node, node.clock, ProfileGrid((250.0,), (8,)), warmup_s=3.0, window_s=10.0,
                      out_path=tmp_path / "p.csv", progress=False, workload=WORKLOAD).rows[0]
    twin = sim_node(exact=True, initial=initial)
    twin.clock.wait_until(3.0)
    tokens0, energy0 = twin.generated_tokens_total(), twin.energy_j_total()
    twin.clock.wait_until(13.0)
    assert row["throughput_tps"] == pytest.approx((twin.generated_tokens_total() - tokens0) / 10.0, rel=1e-12)
    assert row["gpu_power_total_w"] == pytest.approx((twin.energy_j_total() - energy0) / 10.0, rel=1e-12)
    assert row["gpu_power_w"] == pytest.approx(row["gpu_power_total_w"] / 4, rel=1e-12)
    assert row["window_s"] == pytest.approx(10.0)
    # node power is the wall gauge averaged over the window: the simulated meter reads 1.05 x GPU + 345 W
    assert row["node_power_w"] == pytest.approx(1.05 * row["gpu_power_total_w"] + 345.0, rel=0.03)
    assert row["tokens_per_joule"] == pytest.approx(row["throughput_tps"] / row["node_power_w"], rel=1e-12)
    assert row["tokens_per_joule_gpu"] == pytest.approx(row["throughput_tps"] / row["gpu_power_total_w"], rel=1e-12)
    assert math.isnan(row["arrival_rate_rps"])  # saturating
    assert 0 < row["ttft_p50_s"] <= row["ttft_p99_s"]


def test_grid_rows_follow_the_physics_and_the_virtual_clock(tmp_path, sim_node):
    """The plain timing (no wait for steady state: `steady_lifetimes=0`); the steady-state wait is tested below."""
    node = sim_node()
    ends_s: list[float] = []
    profile = run_profile(node, node.clock, GRID, warmup_s=3.0, window_s=10.0, out_path=tmp_path / "p.csv",
                          progress=False, workload=WORKLOAD, on_point=lambda row: ends_s.append(node.clock.now_s()),
                          steady_lifetimes=0.0)
    assert profile.points() == set(GRID.points())
    for cap in GRID.power_caps_w:
        rows = sorted((r for r in profile.rows if r["power_cap_w"] == cap), key=lambda r: r["batch_cap"])
        tps = [r["throughput_tps"] for r in rows]
        assert all(a < b for a, b in zip(tps, tps[1:]))  # saturating: more batch, more tokens/s
        assert all(r["gpu_power_w"] <= cap * 1.001 for r in rows)  # the cap holds on the window mean
    # Each point takes 3 s warm-up + 10 s window of virtual time, nothing more, except where the batch cap
    # falls (the node starts at 64; then 64 -> 1 at each new cap): there the old batch runs down first.
    spans_s = np.diff([0.0, *ends_s])
    batches = [batch for _, batch in GRID.points()]
    falls = [b < a for a, b in zip([64, *batches], batches)]
    for span_s, fall in zip(spans_s, falls):
        if fall:
            assert 13.0 < span_s <= 13.0 + 120.0
        else:
            assert span_s == pytest.approx(13.0)


def test_a_lowered_batch_cap_is_measured_after_the_old_batch_has_run_down(tmp_path, sim_node):
    """Running sequences are not preempted when the cap falls: the profiler waits for them (settles)."""
    initial_b1 = Actuation(250.0, 1)
    fresh = sim_node(exact=True, initial=initial_b1)
    steady = run_profile(fresh, fresh.clock, ProfileGrid((250.0,), (1,)), 2.0, 5.0, tmp_path / "steady.csv",
                         progress=False, workload=WORKLOAD).rows[0]["throughput_tps"]
    for settle_max_s, close in ((120.0, True), (0.0, False)):
        node = sim_node(exact=True, initial=Actuation(250.0, 64))
        node.clock.wait_until(20.0)  # a full batch of 64 per replica
        # No steady-state wait here (it would also outlast the old batch): this is the settling alone.
        row = run_profile(node, node.clock, ProfileGrid((250.0,), (1,)), 2.0, 5.0, tmp_path / f"p{settle_max_s}.csv",
                          progress=False, workload=WORKLOAD, settle_max_s=settle_max_s, steady_lifetimes=0.0).rows[0]
        # Without settling the short window still runs much of the old batch: 1.9x the batch-1 throughput.
        assert (row["throughput_tps"] == pytest.approx(steady, rel=0.05)) is close, (settle_max_s, row, steady)


def test_node_without_node_power_falls_back_to_gpu_tokens_per_joule(tmp_path, sim_node):
    node = WithoutWallMeter(sim_node())
    profile = run_profile(node, node.clock, ProfileGrid((200.0,), (4, 8)), 1.0, 4.0, tmp_path / "p.csv",
                          progress=False, workload=WORKLOAD)
    assert not profile.has_node_power
    for row in profile.rows:
        assert math.isnan(row["node_power_w"])
        assert row["tokens_per_joule"] == row["tokens_per_joule_gpu"]


def test_original_configuration_is_restored(tmp_path, sim_node):
    node = FaultInjectingNode(sim_node())
    node.apply(Actuation(320.0, 16))
    run_profile(node, node.clock, GRID, 1.0, 2.0, tmp_path / "p.csv", progress=False, workload=WORKLOAD)
    assert node.applies[-1] == Actuation(320.0, 16)
    last = node.sample()
    assert (last.gpu_power_cap_w[0], last.batch_cap) == (320.0, 16)


def test_killed_run_resumes_and_loses_no_finished_point(tmp_path, sim_node):
    out = tmp_path / "p.csv"
    killed = FaultInjectingNode(sim_node(), fail_after_applies=4)
    with pytest.raises(KeyboardInterrupt):
        run_profile(killed, killed.clock, GRID, 2.0, 5.0, out, progress=False, workload=WORKLOAD)
    partial = read_profile(out)  # valid file, never half-written
    assert len(partial) == 4
    partial_bytes = out.read_bytes().splitlines()[1:6]  # header + the 4 finished rows
    node = FaultInjectingNode(sim_node())
    full = run_profile(node, node.clock, GRID, 2.0, 5.0, out, progress=False, workload=WORKLOAD)
    assert len(full) == 9
    assert full.points() == set(GRID.points())
    assert full.rows[:4] == partial.rows  # finished points kept as they were ...
    assert out.read_bytes().splitlines()[1:6] == partial_bytes  # ... byte for byte
    measured = [(a.power_cap_w, a.batch_cap) for a in node.applies[:-1]]  # last apply = restore
    assert measured == GRID.points()[4:]


def test_resume_of_a_complete_file_measures_nothing(tmp_path, sim_node):
    out = tmp_path / "p.csv"
    node = sim_node()
    first = run_profile(node, node.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    again = FaultInjectingNode(sim_node())
    second = run_profile(again, again.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    assert second.rows == first.rows
    assert len(again.applies) == 1  # only the restore
    assert again.clock.now_s() == 0.0  # no simulated time spent


def test_fresh_run_replaces_the_file(tmp_path, sim_node):
    out = tmp_path / "p.csv"
    node = sim_node()
    run_profile(node, node.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    small = ProfileGrid((400.0,), (1, 64))
    node = sim_node()
    assert len(run_profile(node, node.clock, small, 1.0, 2.0, out, resume=False, progress=False,
                           workload=WORKLOAD)) == 2


def test_resume_refuses_another_deployment_or_model(tmp_path, sim_node):
    out = tmp_path / "p.csv"
    node = sim_node()
    run_profile(node, node.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    other_tp = sim_node(tp=2)
    with pytest.raises(ProfileError, match="tp=1.*this run has 2"):
        run_profile(other_tp, other_tp.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    other_model = sim_node(model="GPT-2")
    with pytest.raises(ProfileError, match="OLMoE-1B-7B.*not 'GPT-2'"):
        run_profile(other_model, other_model.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    other_load = sim_node()
    with pytest.raises(ProfileError, match="another workload"):
        run_profile(other_load, other_load.clock, GRID, 1.0, 2.0, out, progress=False,
                    workload=WorkloadDescriptor(1000.0, 200.0, 5.0))


def test_point_outside_the_node_range_fails_before_anything_runs(tmp_path, sim_node):
    node = FaultInjectingNode(sim_node())
    with pytest.raises(ConfigError, match="outside this GPU's range"):
        run_profile(node, node.clock, ProfileGrid((50.0, 200.0), (1,)), 1.0, 2.0, tmp_path / "p.csv",
                    progress=False)
    assert not (tmp_path / "p.csv").exists()
    assert node.applies == []
    assert node.clock.now_s() == 0.0


@pytest.mark.parametrize("kwargs", [{"window_s": 0.0}, {"warmup_s": -1.0}, {"window_s": math.nan}])
def test_bad_timings_are_config_errors(tmp_path, kwargs, sim_node):
    node = sim_node()
    args = {"warmup_s": 1.0, "window_s": 2.0} | kwargs
    with pytest.raises(ConfigError):
        run_profile(node, node.clock, GRID, out_path=tmp_path / "p.csv", progress=False, **args)


def test_grid_validation_and_paper_grid():
    with pytest.raises(ConfigError, match="batch caps must be integers"):
        ProfileGrid((200.0,), (0,))
    with pytest.raises(ConfigError, match="power_caps_w is empty"):
        ProfileGrid((), (1,))
    paper = paper_grid_within(100.0, 400.0, 64)
    assert paper.power_caps_w == (150.0, 200.0, 250.0, 300.0, 350.0, 400.0)
    assert paper.batch_caps == (1, 4, 8, 16, 32, 64)
    h100 = paper_grid_within(200.0, 700.0, 32)
    assert h100.power_caps_w[-1] == 700.0 and min(h100.power_caps_w) >= 200.0 and len(h100.power_caps_w) == 6
    assert h100.batch_caps == (1, 4, 8, 16, 32)
