"""The probe's loop on the GPU test double with a fake bench (no torch): caps written and restored, refusals,
out-of-memory batches, the time budget, and the energy arithmetic.

The fake bench advances a manual clock that the test double integrates its energy over, and sets the double's
utilisation while it 'works' (1.0 in a prefill, 0.5 in a decode), so every expected value is exact: nothing
here is timed.
"""

import math

import pytest

from pals.errors import ActuationError, PermissionDenied
from pals.node.hwstate import PowerLimitGuard, load_state
from pals.node.simulated_gpu import SimulatedGpuBackend
from pals.probe.measure import BenchOutOfMemory, EnergyMeter
from pals.probe.plan import ProbeSettings, plan_caps
from pals.probe.runner import run_probe
from pals.sim.hardware import get_gpu

H100 = get_gpu("H100-SXM")


class ManualClock:
    def __init__(self) -> None:
        self.t_s = 0.0

    def now_s(self) -> float:
        return self.t_s

    def wait_until(self, t_s: float) -> None:
        self.t_s = max(self.t_s, t_s)


class FakeBench:
    """Prefill: 10 ms per sequence at full load; decode: (2 + 0.1 x batch) ms per step at half load."""

    decode_mode = "eager"

    def __init__(self, gpus, clock, steps, oom_from=None, fail_at=None):
        self.gpus, self.clock, self.steps = gpus, clock, steps
        self.oom_from, self.fail_at = oom_from, fail_at
        self.batch = 0
        self.prepared: list[tuple[float, int]] = []

    def prepare(self, batch):
        cap = self.gpus.get_power_limit_w(0)
        if self.fail_at == (cap, batch):
            raise RuntimeError("a bug in the bench")
        if self.oom_from is not None and batch >= self.oom_from:
            raise BenchOutOfMemory("CUDA out of memory. Tried to allocate 20.00 GiB")
        self.prepared.append((cap, batch))
        self.batch = batch

    def prefill(self):
        self.gpus.set_utilisation(1.0)
        self.clock.t_s += 0.01 * self.batch

    def setup_decode(self):
        self.clock.t_s += 5.0  # a graph capture: one-time, must not count in the decode window's repeats

    def decode(self):
        self.gpus.set_utilisation(0.5)
        self.clock.t_s += self.steps * (0.002 + 0.0001 * self.batch)

    def synchronize(self):
        pass

    def release(self):
        self.batch = 0


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def gpus(tmp_path, clock):
    return SimulatedGpuBackend(H100, 1, tmp_path / "driver" / "driver-state.json", clock=clock)


def _settings(tmp_path, **kw):
    values = dict(config_path=tmp_path / "cfg", out_path=tmp_path / "out.csv", prompt_tokens=512, decode_steps=64,
                  min_window_s=1.0, settle_s=0.0, batches=(1, 16, 128))
    values.update(kw)
    return ProbeSettings(**values)


def _plan(gpus, caps):
    return plan_caps(caps, default_w=gpus.default_power_limit_w(0), current_w=gpus.get_power_limit_w(0),
                     range_w=gpus.power_limit_range_w(0), can_set=gpus.can_set_power_limit())


def _run(settings, gpus, bench, clock, caps=(700.0, 300.0), **kw):
    notes = []
    run = run_probe(settings, gpus, bench, _plan(gpus, caps), settings.batches, say=notes.append,
                    progress_bar=False, state_path=gpus.driver_state_path.parent / "power-limits.json",
                    clock=clock.now_s, **kw)
    return run, notes


def _natural_w(utilisation):
    return H100.idle_context_w + utilisation * (H100.tdp_w - H100.idle_context_w)


def test_every_cap_is_measured_then_the_original_limit_is_back(tmp_path, gpus, clock):
    bench = FakeBench(gpus, clock, steps=64)
    written = []
    run, notes = _run(_settings(tmp_path), gpus, bench, clock, on_measurement=lambda ms: written.append(len(ms)))
    expected = [(cap, batch) for cap in (700.0, 300.0) for batch in (1, 16, 128)]
    assert [(m.power_cap_w, m.batch) for m in run.measurements] == expected
    assert written == [1, 2, 3, 4, 5, 6] and notes == []
    assert run.caps_measured_w == [700.0, 300.0]
    assert gpus.get_power_limit_w(0) == 700.0 and run.restored_to_w == 700.0
    state = load_state(gpus.driver_state_path.parent / "power-limits.json")
    assert state is None or not state.gpus  # the guard removed its saved entry after restoring
    for m in run.measurements:
        assert m.prefill_s == pytest.approx(0.01 * m.batch)
        assert m.decode_step_s == pytest.approx(0.002 + 0.0001 * m.batch)
        assert m.prefill_power_w == pytest.approx(min(m.power_cap_w, _natural_w(1.0)))
        assert m.decode_power_w == pytest.approx(min(m.power_cap_w, _natural_w(0.5)))
        # Repeats just fill the 1 s window: ~100 prefills of 10 ms at batch 1, one of 1.28 s at batch 128.
        assert m.prefill_repeats * m.prefill_s >= 1.0 - 1e-6 > (m.prefill_repeats - 1) * m.prefill_s - 0.011
        assert m.decode_repeats == math.ceil(1.0 / (64 * m.decode_step_s) - 1e-9)


def test_power_samples_give_the_same_power_when_the_counter_is_unreadable(tmp_path, gpus, clock):
    meter = EnergyMeter(gpus, 0, source="power-samples")
    assert not meter.uses_counter and meter.source == "test-double"
    run, _ = _run(_settings(tmp_path, batches=(16,)), gpus, FakeBench(gpus, clock, steps=64), clock, caps=(700.0,),
                  meter=meter)
    m = run.measurements[0]
    assert m.prefill_power_w == pytest.approx(_natural_w(1.0)) and m.decode_power_w == pytest.approx(_natural_w(0.5))


def test_without_permission_only_the_current_limit_is_measured_and_said(tmp_path, clock):
    gpus = SimulatedGpuBackend(H100, 1, tmp_path / "d" / "driver-state.json", clock=clock, settable=False)
    run, notes = _run(_settings(tmp_path), gpus, FakeBench(gpus, clock, steps=64), clock)
    assert {m.power_cap_w for m in run.measurements} == {700.0} and len(run.measurements) == 3
    assert len(notes) == 1 and "not settable here" in notes[0] and "700 W only" in notes[0]
    assert run.restored_to_w is None  # nothing was written


def test_a_refused_first_write_falls_back_to_the_current_limit(tmp_path, gpus, clock):
    gpus.fail_writes = ActuationError("cannot set GPU 0's power limit: NVML error: Not Supported")
    run, notes = _run(_settings(tmp_path), gpus, FakeBench(gpus, clock, steps=64), clock, caps=(500.0, 300.0))
    assert {m.power_cap_w for m in run.measurements} == {700.0} and len(run.measurements) == 3
    assert len(notes) == 1 and "could not set a power cap" in notes[0] and "700 W only" in notes[0]
    assert gpus.get_power_limit_w(0) == 700.0


class RefuseLowCaps(PowerLimitGuard):
    def set_power_limit_w(self, index, watts):
        if watts < 400:
            raise PermissionDenied("cannot set GPU 0's power limit below 400 W here")
        super().set_power_limit_w(index, watts)


def test_a_refused_later_cap_is_skipped_and_the_others_measured(tmp_path, gpus, clock):
    run, notes = _run(_settings(tmp_path), gpus, FakeBench(gpus, clock, steps=64), clock, caps=(700.0, 300.0, 500.0),
                      guard_factory=RefuseLowCaps)
    assert run.caps_measured_w == [700.0, 500.0]
    assert len(notes) == 1 and notes[0].startswith("note: could not set 300 W")
    assert gpus.get_power_limit_w(0) == 700.0


def test_out_of_memory_skips_that_batch_and_larger_ones_at_every_cap(tmp_path, gpus, clock):
    bench = FakeBench(gpus, clock, steps=64, oom_from=128)
    run, notes = _run(_settings(tmp_path), gpus, bench, clock)
    assert [(m.power_cap_w, m.batch) for m in run.measurements] == [(700.0, 1), (700.0, 16), (300.0, 1), (300.0, 16)]
    assert len(notes) == 1 and "batch 128 at 700 W ran out of device memory" in notes[0]


def test_the_time_budget_stops_new_measurements(tmp_path, gpus, clock):
    # A point takes 7-8 s of the manual clock (two 1 s windows, warm-ups, a 5 s graph capture): the first ends
    # inside an 8 s budget, so a second starts; none after it.
    run, notes = _run(_settings(tmp_path, time_budget_s=8.0), gpus, FakeBench(gpus, clock, steps=64), clock)
    assert [(m.power_cap_w, m.batch) for m in run.measurements] == [(700.0, 1), (700.0, 16)]
    assert len(notes) == 1 and "time budget of 8 s spent" in notes[0]
    assert gpus.get_power_limit_w(0) == 700.0


def test_an_error_in_the_bench_still_restores_the_limit(tmp_path, gpus, clock):
    bench = FakeBench(gpus, clock, steps=64, fail_at=(300.0, 16))
    with pytest.raises(RuntimeError, match="a bug in the bench"):
        _run(_settings(tmp_path), gpus, bench, clock)
    assert gpus.get_power_limit_w(0) == 700.0
    assert (300.0, 1) in bench.prepared
