"""Restore across processes, on the GPU test double (SimulatedGpuBackend).

A child process lowers every cap under a PowerLimitGuard and waits. The
double's driver-state file outlives the child, as a real driver would:
- SIGTERM: the child restores every limit itself before it dies.
- SIGKILL: the limits stay lowered until `python -m pals restore` sets them back.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pals.node.simulated_gpu import SimulatedGpuBackend

CHILD = Path(__file__).with_name("guard_child.py")
ORIGINAL_W = [400.0, 400.0, 400.0, 400.0]
LOWERED_W = 140.0


def limits(driver_path):
    gpus = SimulatedGpuBackend.open(sim_gpus=4, sim_gpu="A100-SXM4-40GB", driver_state_path=driver_path)
    return [gpus.get_power_limit_w(i) for i in range(4)]


def start_child(driver_path, state_path):
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(driver_path), str(state_path), str(LOWERED_W)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # Hang guard only (not a timing assertion): a broken child must not stall the suite.
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "READY":
        proc.kill()
        pytest.fail(f"child did not start: {line!r} {proc.stderr.read()}")
    return proc


@pytest.fixture
def paths(tmp_path):
    return tmp_path / "driver" / "driver-state.json", tmp_path / "state" / "power-limits.json"


def test_sigterm_restores_every_limit(paths):
    driver_path, state_path = paths
    proc = start_child(driver_path, state_path)
    assert limits(driver_path) == [LOWERED_W] * 4
    assert state_path.exists()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGTERM  # died of the signal, conventionally
    assert limits(driver_path) == ORIGINAL_W
    assert not state_path.exists()


def test_kill_9_then_pals_restore_restores_every_limit(paths):
    driver_path, state_path = paths
    proc = start_child(driver_path, state_path)
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert limits(driver_path) == [LOWERED_W] * 4  # nothing could restore them
    assert state_path.exists()

    restore = subprocess.run(
        [sys.executable, "-m", "pals", "restore", "--state", str(state_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert restore.returncode == 0, restore.stderr
    assert restore.stdout.count("restored to 400 W") == 4
    assert limits(driver_path) == ORIGINAL_W
    assert not state_path.exists()

    again = subprocess.run(
        [sys.executable, "-m", "pals", "restore", "--state", str(state_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 0 and "nothing to restore" in again.stdout
