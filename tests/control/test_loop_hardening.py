"""The loop's pacing, its decision log under I/O faults and rotation, whole-run summaries, and stopping."""

from __future__ import annotations

import errno
import gzip
import math
import os
import signal
import threading

import pytest

from pals.control.budget import PowerBudget, ThroughputTarget
from pals.control.decision_log import DecisionLog
from pals.control.loop import ControlLoop
from pals.control.metrics import ControllerMetrics
from pals.control.policies import Baseline
from pals.control.record import IntervalRecord, IntervalSample
from pals.control.stopping import install_stop_signals
from pals.control.summary import summarize
from pals.control.types import Configuration, Decision
from pals.sim.node import SimNode, SimNodeSpec
from pals.sim.workload import LengthDistribution, PoissonWorkload


def sim_node(seed: int = 1) -> SimNode:
    workload = PoissonWorkload(6.0, LengthDistribution.fixed(300), LengthDistribution.fixed(100), seed=seed)
    return SimNode(SimNodeSpec("Qwen1.5-MoE-A2.7B", "A100-SXM4-80GB"), workload, seed=seed)


class SlowNode:
    """The simulator, but some samples take `delay_s` of node time (a slow /metrics scrape)."""

    def __init__(self, sim: SimNode, slow_at_s: set[float], delay_s: float) -> None:
        self.sim, self.slow_at_s, self.delay_s = sim, slow_at_s, delay_s

    def constraints(self):
        return self.sim.constraints()

    def apply(self, actuation) -> None:
        self.sim.apply(actuation)

    def sample(self):
        if round(self.sim.now_s, 6) in self.slow_at_s:
            self.sim.clock.wait_until(self.sim.now_s + self.delay_s)
        return self.sim.sample()


# -- pacing ----------------------------------------------------------------------------------------


def test_an_overrun_skips_the_missed_ticks_and_a_short_interval_is_merged_not_rated():
    sim = sim_node()
    loop = ControlLoop(SlowNode(sim, {10.0}, 2.3), Baseline(), sim.clock)
    loop.run(duration_s=20.0)
    records = loop.log.records()
    times = [r.t_s for r in records]
    # The step due at 10.0 s sampled at 12.3 s; the ticks at 10.5-12.0 s were skipped, and the next
    # step came on the grid (12.5 s), not at once and not in a burst.
    i = times.index(12.3)
    assert times[i + 1] == 12.5 and times[i + 2] == 13.0
    assert loop.health["ticks_skipped"] == 4
    # 12.3 -> 12.5 s is too short to rate: merged into the next interval (12.3 -> 13.0 s).
    assert records[i + 1].sample is None and "merged" in records[i + 1].decision.reason
    assert records[i + 2].interval_s == pytest.approx(0.7)
    assert min(r.interval_s for r in records if r.sample is not None) >= 0.5 * loop.interval_s
    assert loop.summary()["duration_s"] == pytest.approx(20.0)
    assert loop.health["merged_intervals"] == 1


def test_a_budget_change_is_acted_on_even_in_an_interval_too_short_to_rate():
    sim = sim_node()
    loop = ControlLoop(sim, Baseline(), sim.clock)
    loop.step()
    sim.clock.wait_until(0.5)
    loop.step()
    loop.set_budget(PowerBudget(800.0, "gpu"))
    record = loop.step()  # same instant: nothing to rate
    assert record.sample is None and record.config_changed
    assert record.decision.config.power_cap_w <= 200.0


# -- the decision log --------------------------------------------------------------------------------


class FullDisk:
    """A log file whose writes fail with ENOSPC while `full` is set (after writing half the line)."""

    def __init__(self, path) -> None:
        self.real = open(path, "ab", buffering=0)
        self.full = False

    def write(self, data) -> int:
        if self.full:
            self.real.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real.write(data)

    def close(self) -> None:
        self.real.close()


def test_a_full_disk_under_the_decision_log_does_not_stop_control(tmp_path):
    files: list[FullDisk] = []

    def opener(path):
        files.append(FullDisk(path))
        files[-1].full = disk_full[0]
        return files[-1]

    disk_full = [False]
    path = tmp_path / "d.jsonl"
    sim = sim_node()
    loop = ControlLoop(sim, Baseline(), sim.clock, decision_log=DecisionLog(path, opener=opener))
    loop.run(duration_s=2.0)
    disk_full[0] = files[-1].full = True
    sim.clock.wait_until(2.5)
    loop.run(duration_s=2.0)
    disk_full[0] = False
    sim.clock.wait_until(5.0)
    loop.run(duration_s=2.0)
    loop.close()
    lost = loop.log.lines_lost
    assert lost == 5 and loop.health["log_errors"] == 5
    assert loop.metrics.sample_value("pals_log_errors_total") == 5.0
    assert any("No space left on device" in w for r in loop.log.records() for w in r.warnings)
    # No half line was left in the file: every line parses, and the ones written are in order.
    lines = DecisionLog.read(path)
    assert len(lines) == len(loop.log.records()) - lost
    assert [line["t_s"] for line in lines] == sorted(line["t_s"] for line in lines)
    assert loop.summary()["duration_s"] == pytest.approx(7.0)  # from memory, not from the file


def test_a_restarted_controller_appends_and_the_log_rotates_and_compresses(tmp_path):
    path = tmp_path / "d.jsonl"
    for run in range(3):
        sim = sim_node(seed=run)
        log = DecisionLog(path, max_bytes=9_000, keep=3)
        loop = ControlLoop(sim, Baseline(), sim.clock, decision_log=log)
        loop.run(duration_s=10.0)
        loop.close()
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name != "d.jsonl")
    assert rotated == ["d.jsonl.1.gz", "d.jsonl.2.gz", "d.jsonl.3.gz"]
    assert path.stat().st_size <= 9_000
    with gzip.open(tmp_path / "d.jsonl.1.gz", "rt") as handle:
        assert handle.readline().startswith('{"t_s":')
    lines = DecisionLog.read(path)
    # Oldest first across the files; the three runs each counted from interval 0 (the oldest rotated
    # away: keep=3), and each run's intervals are in order.
    starts = [i for i, line in enumerate(lines) if line["interval"] == 0]
    assert 1 <= len(starts) <= 3 and lines[-1]["interval"] == 20
    runs = [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)])]
    assert all([line["interval"] for line in run] == list(range(len(run))) for run in runs)
    assert len(DecisionLog.read(path, history=False)) < len(lines)


def test_a_fresh_log_keeps_the_old_one_as_history(tmp_path):
    path = tmp_path / "d.jsonl"
    for _ in range(2):
        sim = sim_node()
        loop = ControlLoop(sim, Baseline(), sim.clock, decision_log=DecisionLog(path, append=False))
        loop.run(duration_s=2.0)
        loop.close()
    assert len(DecisionLog.read(path, history=False)) == 5
    assert len(DecisionLog.read(path)) == 10


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_next_starts_on_its_own_line(tmp_path):
    path = tmp_path / "d.jsonl"
    sim = sim_node()
    loop = ControlLoop(sim, Baseline(), sim.clock, decision_log=path)
    loop.run(duration_s=1.0)
    loop.close()
    with path.open("ab") as handle:
        handle.write(b'{"t_s": 1.5, "time_')
    log = DecisionLog(path)
    log.append(loop.log.records()[-1])
    log.close()
    lines = DecisionLog.read(path)
    assert len(lines) == 4 and lines[-1] == lines[-2]


def test_an_unwritable_log_path_is_one_clear_error_at_start(tmp_path):
    from pals.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write the decision log"):
        DecisionLog(blocker / "d.jsonl")


# -- summaries over the whole run --------------------------------------------------------------------


def test_the_summary_covers_the_whole_run_beyond_what_memory_holds(tmp_path):
    path = tmp_path / "d.jsonl"
    sim = sim_node()
    log = DecisionLog(path, memory_records=50)
    loop = ControlLoop(sim, Baseline(), sim.clock, decision_log=log, target=ThroughputTarget(400.0),
                       budget=PowerBudget(1200.0))
    loop.run(duration_s=60.0)
    loop.set_budget(PowerBudget(1000.0))
    loop.run(duration_s=60.0)
    loop.close()
    assert len(loop.log.records()) == 50
    live = loop.summary()
    from_file = summarize(DecisionLog.read(path))
    assert live["intervals"] == 240 and live["duration_s"] == pytest.approx(120.0)
    for key, value in from_file.items():
        if not key.startswith("decide_ms"):
            assert live[key] == value, key
    assert live["gpu_energy_j"] == pytest.approx(sim.energy_j_total(), rel=1e-4)
    assert summarize(loop.log.records())["intervals"] == 50  # what the old summary would have covered


def test_decision_time_percentiles_beyond_the_reservoir_stay_representative():
    from pals.control.summary import DECIDE_MS_RESERVOIR, _Reservoir

    reservoir = _Reservoir()
    n = 5 * DECIDE_MS_RESERVOIR
    for i in range(n):
        reservoir.add(float(i % 1000))  # uniform on 0..999: p50 ~ 500, p99 ~ 990
    assert len(reservoir.values) == DECIDE_MS_RESERVOIR
    assert abs(reservoir.percentile(50) - 500) < 30 and abs(reservoir.percentile(99) - 990) < 10


# -- stopping ----------------------------------------------------------------------------------------


def test_a_stop_event_ends_the_run_normally_and_the_summary_is_written():
    sim = sim_node()
    loop = ControlLoop(sim, Baseline(), sim.clock)
    stop = threading.Event()
    loop.run(stop=stop, on_step=lambda line: stop.set() if line["t_s"] >= 3.0 else None)
    assert loop.summary()["duration_s"] == pytest.approx(3.0)


def test_sigterm_sets_the_stop_event_and_a_second_one_exits():
    stop = threading.Event()
    restore = install_stop_signals(stop)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5.0)
        with pytest.raises(SystemExit) as exited:
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(1.0)  # the handler runs at the next bytecode
        assert exited.value.code == 128 + signal.SIGTERM
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# -- metrics -------------------------------------------------------------------------------------------


def test_metrics_take_missing_and_non_finite_values_without_raising():
    metrics = ControllerMetrics()
    nan = math.nan
    record = IntervalRecord(
        t_s=1.0, time_s=1.0, interval=1, interval_s=0.5, policy="x",
        sample=IntervalSample(nan, None, math.inf, None, 3, nan, 8),
        budget=PowerBudget(1000.0), target=None, decision=Decision(Configuration(nan, 8), "why"),
        config_changed=False, governor_trim=False, at_max_config=False, decide_ms=nan,
    )
    metrics.update(record)
    value = metrics.sample_value
    assert math.isnan(value("pals_gpu_power_watts"))
    assert value("pals_gpu_energy_joules_total") == 0.0 and value("pals_generated_tokens_total") == 0.0
