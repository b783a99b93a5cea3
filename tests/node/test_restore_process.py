"""Restore across processes, on the GPU test double (SimulatedGpuBackend).

A child process (guard_child.py) lowers every cap under a PowerLimitGuard and waits. The
double's driver-state file outlives the child, as a real driver would:
- every terminating signal: the child restores every limit itself, then dies of the signal
  (status 128 + signal number in a shell);
- a signal ignored when the guard was made (nohup, background jobs) stays ignored;
- SIGKILL: the limits stay lowered until `python -m pals restore` sets them back, to the true
  originals, even after a second owner adopted the crashed owner's state, and without touching
  the GPUs of an owner that still runs.
"""

from __future__ import annotations

import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pals.node.hwstate import load_state
from pals.node.simulated_gpu import SimulatedGpuBackend

CHILD = Path(__file__).with_name("guard_child.py")
ORIGINAL_W = [400.0, 400.0, 400.0, 400.0]
LOWERED_W = 140.0
HANG_GUARD_S = 60
"""Only stops a broken child from stalling the suite; nothing here is timed."""

SIGNALS_THAT_RESTORE = ["SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU",
                        "SIGPIPE", "SIGXFSZ"]


def limits(driver_path):
    gpus = SimulatedGpuBackend.open(sim_gpus=4, sim_gpu="A100-SXM4-40GB", driver_state_path=driver_path)
    return [gpus.get_power_limit_w(i) for i in range(4)]


def read_line(proc) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], HANG_GUARD_S)
    return proc.stdout.readline().strip() if ready else ""


def start_child(driver_path, state_path, *extra, cap_w=LOWERED_W, preexec_fn=None):
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(driver_path), str(state_path), str(cap_w), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
    )
    line = read_line(proc)
    if line != "READY":
        proc.kill()
        pytest.fail(f"child did not start: {line!r} {proc.stderr.read()}")
    return proc


def pals_restore(state_path):
    return subprocess.run([sys.executable, "-m", "pals", "restore", "--state", str(state_path)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def paths(tmp_path):
    return tmp_path / "driver" / "driver-state.json", tmp_path / "driver" / "power-limits.json"


@pytest.mark.parametrize("name", SIGNALS_THAT_RESTORE)
def test_every_terminating_signal_restores_then_dies_of_it(paths, name):
    driver_path, state_path = paths
    signum = getattr(signal, name)
    # The default action, whatever this test runner inherited (nohup ignores SIGHUP; Python ignores SIGPIPE).
    proc = start_child(driver_path, state_path, "--default-action", name)
    assert limits(driver_path) == [LOWERED_W] * 4
    assert state_path.exists()
    proc.send_signal(signum)
    proc.wait(timeout=HANG_GUARD_S)
    assert proc.returncode == -signum, proc.stderr.read()  # died of the signal, conventionally
    assert limits(driver_path) == ORIGINAL_W
    assert not state_path.exists()


def test_a_shell_sees_status_128_plus_the_signal(paths):
    driver_path, state_path = paths
    script = (
        f'"{sys.executable}" "{CHILD}" "{driver_path}" "{state_path}" {LOWERED_W} --default-action SIGHUP > "$1" 2>&1 &'
        ' child=$!\n'
        ' i=0; until grep -q READY "$1"; do i=$((i+1)); [ $i -gt 6000 ] && exit 99; sleep 0.01; done\n'
        ' kill -HUP $child; wait $child; echo "status $?"\n'
    )
    out = subprocess.run(["bash", "-c", script, "bash", str(paths[0].parent.parent / "child.out")],
                         capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.stdout.strip() == f"status {128 + signal.SIGHUP}", (out.stdout, out.stderr)
    assert limits(driver_path) == ORIGINAL_W


def test_an_ignored_sighup_stays_ignored_as_under_nohup(paths):
    driver_path, state_path = paths
    proc = start_child(driver_path, state_path, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    proc.send_signal(signal.SIGHUP)  # ignored: the child keeps its caps and keeps running...
    proc.send_signal(signal.SIGTERM)  # ...so it is SIGTERM it dies of, after restoring
    proc.wait(timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGTERM
    assert limits(driver_path) == ORIGINAL_W


def test_sigpipe_stays_ignored_as_python_sets_it(paths):
    driver_path, state_path = paths
    proc = start_child(driver_path, state_path)  # no --default-action: Python's SIG_IGN
    proc.send_signal(signal.SIGPIPE)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGTERM
    assert limits(driver_path) == ORIGINAL_W


def test_kill_9_then_pals_restore_restores_every_limit(paths):
    driver_path, state_path = paths
    proc = start_child(driver_path, state_path)
    proc.kill()
    proc.wait(timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGKILL
    assert limits(driver_path) == [LOWERED_W] * 4  # nothing could restore them
    assert state_path.exists()

    restore = pals_restore(state_path)
    assert restore.returncode == 0, restore.stderr
    assert restore.stdout.count("restored to 400 W") == 4
    assert limits(driver_path) == ORIGINAL_W
    assert not state_path.exists()

    again = pals_restore(state_path)
    assert again.returncode == 0 and "nothing to restore" in again.stdout


def test_after_two_crashes_pals_restore_brings_back_the_true_originals(paths):
    # The case: GPU 0 'restored' to a crashed run's 200 W instead of its original 400 W.
    driver_path, state_path = paths
    first = start_child(driver_path, state_path, cap_w=200.0)
    first.kill()
    first.wait(timeout=HANG_GUARD_S)
    second = start_child(driver_path, state_path, cap_w=150.0)  # starts on 200 W caps: adopts 400 W
    assert [g.original_limit_w for g in load_state(state_path).gpus] == ORIGINAL_W
    second.kill()
    second.wait(timeout=HANG_GUARD_S)
    assert limits(driver_path) == [150.0] * 4
    restore = pals_restore(state_path)
    assert restore.returncode == 0, restore.stderr
    assert limits(driver_path) == ORIGINAL_W


def test_pals_restore_after_kill_9_leaves_a_live_owner_alone(paths):
    driver_path, state_path = paths
    live = start_child(driver_path, state_path, "--gpus", "0,1", cap_w=250.0)
    dead = start_child(driver_path, state_path, "--gpus", "2,3", cap_w=150.0)
    dead.kill()
    dead.wait(timeout=HANG_GUARD_S)
    assert limits(driver_path) == [250.0, 250.0, 150.0, 150.0]

    restore = pals_restore(state_path)
    assert restore.returncode == 2  # not everything is back: a live owner holds GPUs 0-1
    assert restore.stdout.count("restored to 400 W") == 2
    assert restore.stdout.count(f"held by PALS pid {live.pid}") == 2
    assert restore.stderr.count("\n") == 1 and f"pid {live.pid}" in restore.stderr
    assert limits(driver_path) == [250.0, 250.0, 400.0, 400.0]
    assert {g.owner.pid for g in load_state(state_path).gpus} == {live.pid}  # its state intact

    live.send_signal(signal.SIGTERM)
    live.wait(timeout=HANG_GUARD_S)
    assert limits(driver_path) == ORIGINAL_W and not state_path.exists()
