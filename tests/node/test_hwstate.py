"""PowerLimitGuard and restore_from_state, on the GPU test double (SimulatedGpuBackend)."""

from __future__ import annotations

import json
import os
import signal

import pytest

import pals.node.simulated_gpu as simulated_gpu
from pals.errors import ActuationError, ConfigError, PermissionDenied
from pals.node.hwstate import PowerLimitGuard, default_state_path, load_state, restore_from_state
from pals.node.simulated_gpu import SimulatedGpuBackend


def limits(backend):
    return [backend.get_power_limit_w(i) for i in range(backend.count())]


@pytest.fixture
def state_path(tmp_path):
    return tmp_path / "state" / "power-limits.json"


def test_nothing_is_saved_before_the_first_write(sim, state_path):
    with PowerLimitGuard(sim, state_path):
        assert not state_path.exists()
    assert not state_path.exists()


def test_first_write_saves_every_original_then_close_restores(sim, state_path):
    sim.set_power_limit_w(3, 320.0)  # someone else's setting, which must come back
    originals = limits(sim)
    with PowerLimitGuard(sim, state_path) as guard:
        guard.set_power_limit_w(0, 150.0)
        saved = json.loads(state_path.read_text())
        assert [g["original_limit_w"] for g in saved["gpus"]] == originals
        assert saved["backend_kind"] == "simulated" and saved["pid"] == os.getpid()
        assert [g["uuid"] for g in saved["gpus"]] == [sim.uuid(i) for i in range(4)]
        guard.set_all_power_limits_w(200.0)
        assert limits(sim) == [200.0] * 4
    assert limits(sim) == originals
    assert not state_path.exists()


def test_state_is_written_atomically(sim, state_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(simulated_gpu.os, "replace", broken_replace)
    guard = PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    with pytest.raises(OSError, match="disk full"):
        guard.set_power_limit_w(0, 150.0)
    # No partial state file, no temporary left behind, and the limit was not touched.
    assert not state_path.exists()
    assert list(state_path.parent.iterdir()) == []
    monkeypatch.undo()
    assert sim.get_power_limit_w(0) == 400.0


def test_existing_saved_state_is_never_overwritten(sim, a100, driver_path, state_path):
    # A run saved 400 W, lowered the caps to 250 W and was killed.
    crashed = PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    crashed.set_all_power_limits_w(250.0)
    crashed._closed = True  # plays kill -9: no restore happens
    before = json.loads(state_path.read_text())
    # A new run starts while the caps are still 250 W.
    again = SimulatedGpuBackend(a100, 4, driver_path)
    with PowerLimitGuard(again, state_path) as guard:
        guard.set_power_limit_w(1, 180.0)
        after = json.loads(state_path.read_text())
        assert [g["original_limit_w"] for g in after["gpus"]] == [g["original_limit_w"] for g in before["gpus"]]
        assert any("reused saved original limits" in n for n in guard.notes)
    assert limits(again) == [400.0] * 4  # the true originals, not the crashed run's 250 W


def test_a_live_owner_is_refused(sim, state_path):
    owner = PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    owner.set_power_limit_w(0, 300.0)
    data = json.loads(state_path.read_text())
    data["pid"] = os.getppid()  # a process that is alive and not us
    state_path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=f"pid {os.getppid()}"):
        PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False).set_power_limit_w(1, 300.0)
    assert sim.get_power_limit_w(1) == 400.0
    owner.close()
    assert limits(sim) == [400.0] * 4


def test_restore_failure_keeps_the_state_and_names_pals_restore(sim, state_path):
    guard = PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    guard.set_all_power_limits_w(150.0)
    sim.fail_writes = ActuationError("simulated driver refused the write")
    with pytest.raises(ActuationError, match="pals restore"):
        guard.close()
    assert load_state(state_path).gpus[0].original_limit_w == 400.0
    # Once the cause is fixed, restore_from_state (what `pals restore` calls) finishes the job.
    sim.fail_writes = None
    report = restore_from_state(state_path, sim)
    assert report.ok and report.state_removed
    assert limits(sim) == [400.0] * 4 and not state_path.exists()


def test_bad_input_never_changes_a_limit(sim, state_path):
    with PowerLimitGuard(sim, state_path) as guard:
        with pytest.raises(ConfigError):
            guard.set_all_power_limits_w(40.0)
        with pytest.raises(ConfigError):
            guard.set_power_limit_w(9, 200.0)
        assert not state_path.exists()
    assert limits(sim) == [400.0] * 4


def test_without_permission_limits_stay_and_close_is_clean(a100, driver_path, state_path):
    gpus = SimulatedGpuBackend(a100, 2, driver_path, settable=False)
    guard = PowerLimitGuard(gpus, state_path, handle_signals=False, register_atexit=False)
    with pytest.raises(PermissionDenied):
        guard.set_power_limit_w(0, 200.0)
    guard.close()  # nothing changed, so nothing to write: no permission needed
    assert limits(gpus) == [400.0, 400.0] and not state_path.exists()


def test_sigint_restores_before_keyboard_interrupt_propagates(sim, state_path):
    # Python's own SIGINT handler, as in a foreground process (CI may start us with SIGINT ignored).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        guard = PowerLimitGuard(sim, state_path)
        guard.set_all_power_limits_w(120.0)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert limits(sim) == [400.0] * 4 and not state_path.exists()
        guard.close()
        assert signal.getsignal(signal.SIGINT) == signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)


def test_an_ignored_sigint_stays_ignored(sim, state_path):
    outer = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as under nohup or in a background job
    try:
        guard = PowerLimitGuard(sim, state_path)
        guard.set_all_power_limits_w(120.0)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing stops, nothing is restored yet
        assert limits(sim) == [120.0] * 4
        guard.close()
        assert limits(sim) == [400.0] * 4
    finally:
        signal.signal(signal.SIGINT, outer)


def test_signal_handlers_chain_to_the_previous_one(sim, state_path):
    seen = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(limits(sim)))
    try:
        guard = PowerLimitGuard(sim, state_path)
        guard.set_power_limit_w(2, 222.0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [[400.0] * 4]  # previous handler ran, after the restore
        guard.close()
    finally:
        signal.signal(signal.SIGTERM, old)


def test_restore_from_state_without_a_file_is_a_no_op(sim, state_path):
    report = restore_from_state(state_path, sim)
    assert report.ok and report.gpus == ()


def test_corrupt_state_is_one_clear_error(state_path):
    state_path.parent.mkdir(parents=True)
    state_path.write_text('{"schema": "pals-power-limits/1", "gpus": [{"index": 0}]}')
    with pytest.raises(ConfigError, match="corrupt.*delete that file") as info:
        load_state(state_path)
    assert "\n" not in str(info.value)


def test_state_from_another_backend_kind_is_refused(sim, state_path):
    guard = PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    guard.set_power_limit_w(0, 300.0)
    data = json.loads(state_path.read_text())
    data["backend_kind"] = "zeus"
    state_path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="--gpu-backend zeus"):
        restore_from_state(state_path, sim)
    assert sim.get_power_limit_w(0) == 300.0 and state_path.exists()


def test_default_state_paths(sim, isolated_state, monkeypatch):
    assert default_state_path() == isolated_state / "power-limits.json"
    assert default_state_path(sim) == sim.driver_state_path.parent / "power-limits.json"
    monkeypatch.delenv("PALS_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", "/x")
    assert str(default_state_path()) == "/x/pals/power-limits.json"
