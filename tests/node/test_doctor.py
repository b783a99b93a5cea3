"""`pals doctor` and `pals restore` from the command line (GPU test double, or no GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from unittest import mock

import pynvml as real_pynvml
import pytest
import zeus.device.gpu as zeus_gpu
from zeus.device.gpu.common import ZeusGPUInitError

from pals.cli import main
from pals.cli.doctor import cap_checks
from pals.node.hwstate import PowerLimitGuard
from pals.node.simulated_gpu import SimulatedGpuBackend


def sim_args(driver_path, *extra):
    return ["doctor", "--gpu-backend", "simulated", "--sim-gpus", "2", "--sim-state", str(driver_path), *extra]


def test_doctor_on_the_test_double_reports_and_leaves_limits_as_they_were(driver_path, a100, capsys):
    gpus = SimulatedGpuBackend(a100, 2, driver_path)
    gpus.set_power_limit_w(0, 275.0)  # not the default: doctor must return exactly this
    assert main(sim_args(driver_path)) == 0
    out = capsys.readouterr().out
    assert "GPUs (backend simulated): 2" in out
    assert "[pass] set cap: GPU 0: set 100 W, reads back 100 W" in out
    assert "[pass] restore cap: GPU 0: back at 275 W" in out
    assert "[FAIL]" not in out
    assert [gpus.get_power_limit_w(i) for i in range(2)] == [275.0, 400.0]
    assert not (driver_path.parent / "power-limits.json").exists()


def test_doctor_json(driver_path, capsys):
    assert main(sim_args(driver_path, "--json", "--gpu", "1")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "simulated" and len(report["gpus"]) == 2
    assert report["gpus"][1]["power_limit_range_w"] == [100.0, 400.0]
    assert {c["name"]: c["status"] for c in report["checks"]}["restore cap"] == "pass"


def test_doctor_at_minimum_uses_the_maximum_to_test_a_write(driver_path, a100):
    gpus = SimulatedGpuBackend(a100, 1, driver_path)
    gpus.set_power_limit_w(0, 100.0)
    checks = {c.name: c for c in cap_checks(gpus, 0, None)}
    assert checks["set cap"].status == "pass" and "set 400 W" in checks["set cap"].detail
    assert gpus.get_power_limit_w(0) == 100.0


def test_doctor_without_permission_skips_and_says_batch_only(driver_path, a100):
    gpus = SimulatedGpuBackend(a100, 1, driver_path, settable=False)
    checks = {c.name: c for c in cap_checks(gpus, 0, None)}
    assert checks["set cap"].status == "skip" and "batch-only" in checks["set cap"].detail
    assert gpus.get_power_limit_w(0) == 400.0


def test_doctor_does_not_adopt_a_crashed_runs_state(driver_path, a100):
    gpus = SimulatedGpuBackend(a100, 1, driver_path)
    crashed = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    crashed.set_power_limit_w(0, 200.0)
    crashed._closed = True  # plays kill -9
    data = json.loads(crashed.state_path.read_text())
    data["pid"] = 999_999_999  # a dead pid
    crashed.state_path.write_text(json.dumps(data))
    checks = {c.name: c for c in cap_checks(gpus, 0, None)}
    assert checks["set cap"].status == "skip" and "pals restore" in checks["set cap"].detail
    assert gpus.get_power_limit_w(0) == 200.0 and crashed.state_path.exists()


def test_doctor_without_a_gpu_says_so_and_exits_0(capsys):
    with mock.patch.object(zeus_gpu, "get_gpus", autospec=True) as get_gpus, \
            mock.patch("pals.node.nvml_gpu.pynvml.nvmlInit", autospec=True) as nvml_init:
        get_gpus.side_effect = ZeusGPUInitError("NVML and AMDSMI unavailable.")
        nvml_init.side_effect = real_pynvml.NVMLError(real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "no GPU found: no NVIDIA/AMD GPU management library found" in out


@pytest.mark.skipif(zeus_gpu.nvml_is_available(), reason="this host has NVML (a GPU host)")
def test_real_pals_doctor_on_this_gpu_less_host():
    done = subprocess.run([sys.executable, "-m", "pals", "doctor"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "no GPU found" in done.stdout


# --- pals restore ---


def test_restore_with_nothing_saved(tmp_path, capsys):
    assert main(["restore", "--state", str(tmp_path / "none.json")]) == 0
    assert "nothing to restore" in capsys.readouterr().out


def test_restore_corrupt_state_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "power-limits.json"
    bad.write_text("{truncated")
    assert main(["restore", "--state", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is corrupt" in err
    assert bad.exists()


def test_restore_refuses_while_the_owner_runs_unless_forced(driver_path, a100, capsys):
    gpus = SimulatedGpuBackend(a100, 2, driver_path)
    guard = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    guard.set_all_power_limits_w(250.0)
    data = json.loads(guard.state_path.read_text())
    data["pid"] = os.getppid()
    guard.state_path.write_text(json.dumps(data))
    args = ["restore", "--state", str(guard.state_path)]
    assert main(args) == 2
    assert "still running" in capsys.readouterr().err
    assert gpus.get_power_limit_w(0) == 250.0
    assert main(args + ["--force"]) == 0
    assert [gpus.get_power_limit_w(i) for i in range(2)] == [400.0, 400.0]


def test_restore_by_sim_state_path(driver_path, a100, capsys):
    gpus = SimulatedGpuBackend(a100, 2, driver_path)
    guard = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    guard.set_power_limit_w(1, 123.0)
    guard._closed = True
    assert main(["restore", "--gpu-backend", "simulated", "--sim-state", str(driver_path)]) == 0
    assert gpus.get_power_limit_w(1) == 400.0
