"""The profiler: counter-delta measurement, restore, resume after a kill, refusals."""

from __future__ import annotations

import math

import pytest
from fakes import AnalyticFakeNode

from pals.errors import ConfigError, ProfileError
from pals.model.profile import WorkloadFeatures, read_profile
from pals.model.profiler import ProfileGrid, paper_grid_within, run_profile
from pals.node.base import Actuation

GRID = ProfileGrid((150.0, 250.0, 400.0), (1, 8, 64))
WORKLOAD = WorkloadFeatures(1000.0, 200.0, None)


def test_rows_come_from_counter_deltas(tmp_path):
    node = AnalyticFakeNode()
    profile = run_profile(node, node.clock, GRID, warmup_s=3.0, window_s=10.0, out_path=tmp_path / "p.csv",
                          progress=False, workload=WORKLOAD)
    assert len(profile) == 9
    probe = AnalyticFakeNode()
    for row in profile.rows:
        probe.apply(Actuation(row["power_cap_w"], int(row["batch_cap"])))
        throughput, power_w = probe._rates()
        assert row["throughput_tps"] == pytest.approx(throughput, rel=1e-9)
        assert row["gpu_power_w"] == pytest.approx(power_w, rel=1e-9)
        assert row["gpu_power_total_w"] == pytest.approx(4 * power_w, rel=1e-9)
        assert row["node_power_w"] == pytest.approx(1.05 * 4 * power_w + 345.0, rel=1e-9)
        assert row["tokens_per_joule"] == pytest.approx(throughput / row["node_power_w"], rel=1e-9)
        assert row["tokens_per_joule_gpu"] == pytest.approx(throughput / (4 * power_w), rel=1e-9)
        assert row["window_s"] == pytest.approx(10.0)
        assert math.isnan(row["arrival_rate_rps"])  # saturating
        assert row["ttft_p99_s"] == pytest.approx(0.3)
    # 9 points x (3 s warm-up + 10 s window) of virtual time, nothing more
    assert node.clock.now_s() == pytest.approx(9 * 13.0)


def test_node_without_node_power_falls_back_to_gpu_tokens_per_joule(tmp_path):
    node = AnalyticFakeNode(node_power=False)
    profile = run_profile(node, node.clock, ProfileGrid((200.0,), (4, 8)), 1.0, 4.0, tmp_path / "p.csv",
                          progress=False, workload=WORKLOAD)
    assert not profile.has_node_power
    for row in profile.rows:
        assert math.isnan(row["node_power_w"])
        assert row["tokens_per_joule"] == row["tokens_per_joule_gpu"]


def test_original_configuration_is_restored(tmp_path):
    node = AnalyticFakeNode()
    node.apply(Actuation(320.0, 16))
    run_profile(node, node.clock, GRID, 1.0, 2.0, tmp_path / "p.csv", progress=False, workload=WORKLOAD)
    assert (node.cap_w, node.batch) == (320.0, 16)
    assert node.applies[-1] == Actuation(320.0, 16)


def test_killed_run_resumes_and_loses_no_finished_point(tmp_path):
    out = tmp_path / "p.csv"
    killed = AnalyticFakeNode(fail_after_applies=4)
    with pytest.raises(KeyboardInterrupt):
        run_profile(killed, killed.clock, GRID, 2.0, 5.0, out, progress=False, workload=WORKLOAD)
    partial = read_profile(out)  # valid file, never half-written
    assert len(partial) == 4
    node = AnalyticFakeNode()
    full = run_profile(node, node.clock, GRID, 2.0, 5.0, out, progress=False, workload=WORKLOAD)
    assert len(full) == 9
    assert full.points() == set(GRID.points())
    assert full.rows[:4] == partial.rows  # finished points kept as they were
    measured = [(a.power_cap_w, a.batch_cap) for a in node.applies[:-1]]  # last apply = restore
    assert measured == GRID.points()[4:]


def test_resume_of_a_complete_file_measures_nothing(tmp_path):
    out = tmp_path / "p.csv"
    node = AnalyticFakeNode()
    first = run_profile(node, node.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    again = AnalyticFakeNode()
    second = run_profile(again, again.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    assert second.rows == first.rows
    assert len(again.applies) == 1  # only the restore


def test_fresh_run_replaces_the_file(tmp_path):
    out = tmp_path / "p.csv"
    node = AnalyticFakeNode()
    run_profile(node, node.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    small = ProfileGrid((400.0,), (1, 64))
    node = AnalyticFakeNode()
    assert len(run_profile(node, node.clock, small, 1.0, 2.0, out, resume=False, progress=False,
                           workload=WORKLOAD)) == 2


def test_resume_refuses_another_deployment_or_model(tmp_path):
    out = tmp_path / "p.csv"
    node = AnalyticFakeNode()
    run_profile(node, node.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    other_tp = AnalyticFakeNode(tp=2)
    with pytest.raises(ProfileError, match="tp=4.*this run has 2"):
        run_profile(other_tp, other_tp.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    other_model = AnalyticFakeNode(model="other-llm")
    with pytest.raises(ProfileError, match="not 'other-llm'"):
        run_profile(other_model, other_model.clock, GRID, 1.0, 2.0, out, progress=False, workload=WORKLOAD)
    other_load = AnalyticFakeNode()
    with pytest.raises(ProfileError, match="another workload"):
        run_profile(other_load, other_load.clock, GRID, 1.0, 2.0, out, progress=False,
                    workload=WorkloadFeatures(1000.0, 200.0, 5.0))


def test_point_outside_the_node_range_fails_before_anything_runs(tmp_path):
    node = AnalyticFakeNode()
    with pytest.raises(ConfigError, match="outside this GPU's range"):
        run_profile(node, node.clock, ProfileGrid((50.0, 200.0), (1,)), 1.0, 2.0, tmp_path / "p.csv",
                    progress=False)
    assert not (tmp_path / "p.csv").exists()
    assert node.applies == []


@pytest.mark.parametrize("kwargs", [{"window_s": 0.0}, {"warmup_s": -1.0}, {"window_s": math.nan}])
def test_bad_timings_are_config_errors(tmp_path, kwargs):
    node = AnalyticFakeNode()
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
