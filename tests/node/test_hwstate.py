"""PowerLimitGuard and restore_from_state, on the GPU test double (SimulatedGpuBackend)."""

from __future__ import annotations

import json
import os
import signal

import pytest

import pals.node.simulated_gpu as simulated_gpu
from pals.errors import ActuationError, ConfigError, PermissionDenied
from pals.node.hwstate import PowerLimitGuard, default_lock_dir, default_state_path, load_state, restore_from_state
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
        assert saved["backend_kind"] == "simulated"
        assert {g["owner"]["pid"] for g in saved["gpus"]} == {os.getpid()}
        assert {g["owner"]["owner_id"] for g in saved["gpus"]} == {guard.owner.owner_id}
        assert [g["uuid"] for g in saved["gpus"]] == [sim.uuid(i) for i in range(4)]
        guard.set_all_power_limits_w(200.0)
        assert limits(sim) == [200.0] * 4
    assert limits(sim) == originals
    assert not state_path.exists()


def test_state_is_written_atomically(sim, state_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    guard = PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    monkeypatch.setattr(simulated_gpu.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        guard.set_power_limit_w(0, 150.0)
    # No partial state file, no temporary left behind (only the state's lock file), limit untouched.
    assert not state_path.exists()
    assert [p.name for p in state_path.parent.iterdir()] == [".power-limits.json.lock"]
    monkeypatch.undo()
    assert sim.get_power_limit_w(0) == 400.0
    guard.close()


def test_existing_saved_state_is_never_overwritten(sim, a100, driver_path, state_path, kill9):
    # A run saved 400 W, lowered the caps to 250 W and was killed.
    crashed = PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    crashed.set_all_power_limits_w(250.0)
    kill9(crashed)
    before = json.loads(state_path.read_text())
    # A new run starts while the caps are still 250 W.
    again = SimulatedGpuBackend(a100, 4, driver_path)
    with PowerLimitGuard(again, state_path) as guard:
        guard.set_power_limit_w(1, 180.0)
        after = json.loads(state_path.read_text())
        assert [g["original_limit_w"] for g in after["gpus"]] == [g["original_limit_w"] for g in before["gpus"]]
        assert {g["owner"]["owner_id"] for g in after["gpus"]} == {guard.owner.owner_id}  # adopted
        assert any("reused saved original limit 400 W" in n for n in guard.notes)
    assert limits(again) == [400.0] * 4  # the true originals, not the crashed run's 250 W


def test_a_live_owner_is_refused_and_named(sim, state_path):
    owner = PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    owner.set_power_limit_w(0, 300.0)
    with pytest.raises(ConfigError, match=f"already controlled by PALS pid {os.getpid()}"):
        PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    assert limits(sim) == [300.0, 400.0, 400.0, 400.0]
    owner.close()
    assert limits(sim) == [400.0] * 4
    PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False).close()  # free again


def test_a_refused_guard_takes_no_gpu(sim, state_path):
    # Owner of GPU 2 only; a guard asking for all four gets none (not GPUs 0-1 and then a failure).
    owner = PowerLimitGuard(sim, state_path, gpu_indices=[2], handle_signals=False, register_atexit=False)
    with pytest.raises(ConfigError, match="SIM-GPU-.*-2 is already controlled"):
        PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    other = PowerLimitGuard(sim, state_path, gpu_indices=[0, 1, 3], handle_signals=False, register_atexit=False)
    other.close()
    owner.close()


def test_a_guard_writes_only_its_own_gpus(sim, state_path):
    guard = PowerLimitGuard(sim, state_path, gpu_indices=[1], handle_signals=False, register_atexit=False)
    with pytest.raises(ConfigError, match="not owned by this PowerLimitGuard"):
        guard.set_power_limit_w(0, 200.0)
    guard.set_all_power_limits_w(200.0)
    assert limits(sim) == [400.0, 200.0, 400.0, 400.0]
    assert [g.uuid for g in load_state(state_path).gpus] == [sim.uuid(1)]
    guard.close()
    assert limits(sim) == [400.0] * 4


def test_two_owners_share_a_state_file_and_restore_only_their_own(sim, state_path):
    a = PowerLimitGuard(sim, state_path, gpu_indices=[0, 1], handle_signals=False, register_atexit=False)
    b = PowerLimitGuard(sim, state_path, gpu_indices=[2, 3], handle_signals=False, register_atexit=False)
    a.set_all_power_limits_w(150.0)
    b.set_all_power_limits_w(250.0)
    owners = {g.uuid: g.owner.owner_id for g in load_state(state_path).gpus}
    assert owners == {sim.uuid(0): a.owner.owner_id, sim.uuid(1): a.owner.owner_id,
                      sim.uuid(2): b.owner.owner_id, sim.uuid(3): b.owner.owner_id}
    a.close()
    assert limits(sim) == [400.0, 400.0, 250.0, 250.0]  # B's caps untouched
    left = load_state(state_path)
    assert [(g.uuid, g.original_limit_w, g.owner.owner_id) for g in left.gpus] == [
        (sim.uuid(2), 400.0, b.owner.owner_id), (sim.uuid(3), 400.0, b.owner.owner_id)]
    b.close()
    assert limits(sim) == [400.0] * 4 and not state_path.exists()


def test_restore_from_state_leaves_a_live_owners_gpus_alone(sim, state_path, kill9):
    dead = PowerLimitGuard(sim, state_path, gpu_indices=[0, 1], handle_signals=False, register_atexit=False)
    live = PowerLimitGuard(sim, state_path, gpu_indices=[2, 3], handle_signals=False, register_atexit=False)
    dead.set_all_power_limits_w(150.0)
    live.set_all_power_limits_w(250.0)
    kill9(dead)
    report = restore_from_state(state_path, sim)  # what `pals restore` runs
    assert [g.uuid for g in report.gpus if g.ok] == [sim.uuid(0), sim.uuid(1)]
    assert [g.uuid for g in report.held] == [sim.uuid(2), sim.uuid(3)]
    assert all(f"pid {os.getpid()}" in g.held_by for g in report.held)
    assert limits(sim) == [400.0, 400.0, 250.0, 250.0]
    assert [g.owner.owner_id for g in load_state(state_path).gpus] == [live.owner.owner_id] * 2
    live.close()  # the live owner still restores its own, from its own entries
    assert limits(sim) == [400.0] * 4 and not state_path.exists()


def test_a_lost_state_file_is_rewritten_from_memory_not_resaved(sim, state_path):
    guard = PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    guard.set_all_power_limits_w(200.0)
    state_path.unlink()  # someone deleted it while the caps are on
    guard.set_power_limit_w(0, 150.0)
    assert [g.original_limit_w for g in load_state(state_path).gpus] == [400.0] * 4  # not 200 W
    guard.close()
    assert limits(sim) == [400.0] * 4


def test_a_legacy_state_file_is_still_restorable(sim, state_path):
    sim.set_power_limit_w(0, 222.0)  # the caps an older PALS left behind
    state_path.parent.mkdir(parents=True)
    state_path.write_text(json.dumps({
        "schema": "pals-power-limits/1", "backend_kind": "simulated", "pid": 999_999_999, "host": "h",
        "saved_at": "t", "backend_info": {},
        "gpus": [{"index": 0, "uuid": sim.uuid(0), "name": "n", "original_limit_w": 400.0}]}))
    report = restore_from_state(state_path, sim)
    assert report.ok and report.state_removed and sim.get_power_limit_w(0) == 400.0


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


@pytest.mark.parametrize("content", [
    b'{"schema": "pals-power-limits/2", "gpus": [{"index": 0}]}',
    b"\xff\xfe\x00garbage\x80" * 50,  # binary garbage (not UTF-8)
    b"[" * 100_000,  # nested too deep for the parser
    b'{"schema": "pals-power-limits/2", "backend_kind": "nvml", "gpus": [{"index": 0, "uuid": "u", '
    b'"name": "n", "original_limit_w": NaN, "owner": {"pid": 1, "owner_id": "o", "host": "h", "since": "s"}}]}',
    b'{"schema": "pals-power-limits/2", "backend_kind": "nvml", "gpus": [{"index": true, "uuid": "u", '
    b'"name": "n", "original_limit_w": 300, "owner": {"pid": 1, "owner_id": "o", "host": "h", "since": "s"}}]}',
    b'"just a string"',
    b" " * (2 << 20),  # larger than any state file
], ids=["missing-keys", "binary", "deep", "nan-limit", "bool-index", "not-object", "huge"])
def test_bad_state_is_one_clear_error(state_path, content):
    state_path.parent.mkdir(parents=True)
    state_path.write_bytes(content)
    with pytest.raises(ConfigError, match="corrupt.*delete that file") as info:
        load_state(state_path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600


def test_state_from_another_backend_kind_is_refused(sim, state_path, kill9):
    guard = PowerLimitGuard(sim, state_path, handle_signals=False, register_atexit=False)
    guard.set_power_limit_w(0, 300.0)
    kill9(guard)
    data = json.loads(state_path.read_text())
    data["backend_kind"] = "zeus"
    state_path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="--gpu-backend zeus"):
        restore_from_state(state_path, sim)
    assert sim.get_power_limit_w(0) == 300.0 and state_path.exists()


def test_default_state_paths(sim, isolated_state, monkeypatch):
    assert default_state_path() == isolated_state / "power-limits.json"
    assert default_lock_dir() == isolated_state / "locks"
    assert default_state_path(sim) == sim.driver_state_path.parent / "power-limits.json"
    assert default_lock_dir(sim) == sim.driver_state_path.parent / "locks"
    monkeypatch.delenv("PALS_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", "/x")
    assert str(default_state_path()) == "/x/pals/power-limits.json"


def test_a_signal_during_a_write_is_acted_on_after_it(sim, state_path, monkeypatch):
    # SIGTERM lands while the driver write is in flight. Restoring in the middle would let the write
    # land afterwards: a cap left on with no saved state. The guard acts once the write is done.
    seen = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append((limits(sim), state_path.exists())))
    real_set = sim.set_power_limit_w

    def set_and_get_signalled(index, watts):
        if watts == 150.0:  # the guard's write, not the restore's
            os.kill(os.getpid(), signal.SIGTERM)
        real_set(index, watts)

    try:
        guard = PowerLimitGuard(sim, state_path)
        monkeypatch.setattr(sim, "set_power_limit_w", set_and_get_signalled)
        guard.set_power_limit_w(1, 150.0)
        monkeypatch.undo()
        assert seen == [([400.0] * 4, False)]  # restored after the write, then the previous handler ran
        assert limits(sim) == [400.0] * 4
        guard.close()
    finally:
        signal.signal(signal.SIGTERM, old)


def test_other_signals_are_taken_only_from_their_default_action(sim, state_path):
    app_handler = lambda signum, frame: None  # noqa: E731 - an application's own SIGALRM use
    saved = {s: signal.getsignal(s) for s in (signal.SIGALRM, signal.SIGHUP, signal.SIGUSR1)}
    signal.signal(signal.SIGALRM, app_handler)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        guard = PowerLimitGuard(sim, state_path)
        assert signal.getsignal(signal.SIGALRM) is app_handler  # left to the application
        assert signal.getsignal(signal.SIGUSR1) == signal.SIG_IGN  # ignored stays ignored
        assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN)  # would kill: taken
        assert any("SIGALRM has the application's own handler" in n for n in guard.notes)
        assert any("SIGUSR1 is ignored" in n for n in guard.notes)
        guard.close()
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL  # put back as it was
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_a_signal_while_a_loop_thread_writes_leaves_no_cap_behind(sim, state_path):
    # A control loop writes caps on its own thread; SIGTERM arrives on the main thread. The restore
    # waits for a write in flight, and no write lands after it.
    import threading

    old = signal.signal(signal.SIGTERM, lambda signum, frame: None)  # survive, to look afterwards
    written = threading.Event()
    stopped = []

    def loop():
        watts = 150.0
        while True:
            try:
                guard.set_power_limit_w(0, watts)
            except ActuationError as e:
                stopped.append(str(e))
                return
            written.set()
            watts = 310.0 - watts  # 150 <-> 160

    try:
        guard = PowerLimitGuard(sim, state_path)
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        assert written.wait(timeout=60)
        os.kill(os.getpid(), signal.SIGTERM)
        thread.join(timeout=60)
        assert not thread.is_alive()
        assert stopped and "restored on SIGTERM" in stopped[0]
        assert limits(sim) == [400.0] * 4 and not state_path.exists()
        guard.close()
    finally:
        signal.signal(signal.SIGTERM, old)
