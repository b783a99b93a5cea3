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


def test_doctor_does_not_adopt_a_crashed_runs_state(driver_path, a100, kill9):
    gpus = SimulatedGpuBackend(a100, 1, driver_path)
    crashed = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    crashed.set_power_limit_w(0, 200.0)
    kill9(crashed)
    checks = {c.name: c for c in cap_checks(gpus, 0, None)}
    assert checks["set cap"].status == "skip" and "pals restore" in checks["set cap"].detail
    assert gpus.get_power_limit_w(0) == 200.0 and crashed.state_path.exists()


def test_doctor_skips_a_gpu_another_pals_process_holds(driver_path, a100):
    gpus = SimulatedGpuBackend(a100, 2, driver_path)
    owner = PowerLimitGuard(gpus, gpu_indices=[0], handle_signals=False, register_atexit=False)
    owner.set_power_limit_w(0, 200.0)
    checks = {c.name: c for c in cap_checks(gpus, 0, None)}
    assert checks["set cap"].status == "skip" and f"pid {os.getpid()}" in checks["set cap"].detail
    checks = {c.name: c for c in cap_checks(gpus, 1, None)}  # the other GPU is free: checked normally
    assert checks["set cap"].status == "pass" and checks["restore cap"].status == "pass"
    assert [gpus.get_power_limit_w(i) for i in range(2)] == [200.0, 400.0]
    owner.close()


def test_doctor_reports_pending_saved_limits_by_owner_liveness(isolated_state, capsys, kill9):
    from pals.cli.doctor import environment_checks
    from pals.node.hwstate import default_state_path
    from pals.node.simulated_gpu import SimulatedGpuBackend as Double
    from pals.sim.hardware import get_gpu

    gpus = Double(get_gpu("A100-SXM4-40GB"), 2, isolated_state / "drv" / "driver-state.json")
    live = PowerLimitGuard(gpus, default_state_path(), lock_dir=isolated_state / "locks", gpu_indices=[0],
                           handle_signals=False, register_atexit=False)
    dead = PowerLimitGuard(gpus, default_state_path(), lock_dir=isolated_state / "locks", gpu_indices=[1],
                           handle_signals=False, register_atexit=False)
    live.set_power_limit_w(0, 200.0)
    dead.set_power_limit_w(1, 200.0)
    kill9(dead)
    saved = [c for c in environment_checks() if c.name == "saved limits"]
    assert [(c.status, c.detail.split(" GPU(s)")[0]) for c in saved] == [("info", "1"), ("fail", "1")]
    assert f"running PALS pid {os.getpid()}" in saved[0].detail and "pals restore" in saved[1].detail
    live.close()


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


def test_restore_leaves_a_running_owners_gpus_and_says_so(driver_path, a100, capsys):
    gpus = SimulatedGpuBackend(a100, 2, driver_path)
    guard = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    guard.set_all_power_limits_w(250.0)
    for args in (["restore", "--state", str(guard.state_path)], ["restore", "--state", str(guard.state_path), "--force"]):
        assert main(args) == 2
        out, err = capsys.readouterr()
        assert out.count(f"left alone: held by PALS pid {os.getpid()}") == 2
        assert err.count("\n") == 1 and "still running" in err and "kill -TERM" in err
        assert [gpus.get_power_limit_w(i) for i in range(2)] == [250.0, 250.0]  # never under a live owner
        assert guard.state_path.exists()
    guard.close()
    assert [gpus.get_power_limit_w(i) for i in range(2)] == [400.0, 400.0]


def test_restore_by_sim_state_path(driver_path, a100, capsys, kill9):
    gpus = SimulatedGpuBackend(a100, 2, driver_path)
    guard = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    guard.set_power_limit_w(1, 123.0)
    kill9(guard)
    assert main(["restore", "--gpu-backend", "simulated", "--sim-state", str(driver_path)]) == 0
    assert gpus.get_power_limit_w(1) == 400.0


GARBAGE = b"\x00\xff\xfe\x80PALS\x9c" * 300


@pytest.mark.parametrize("args", [
    ["restore", "--state", "{garbage}"],
    ["restore", "--state", "{dir}"],
    ["restore", "--gpu-backend", "simulated", "--sim-state", "{garbage_driver}"],
    ["doctor", "--gpu-backend", "simulated", "--sim-state", "{garbage}"],
    ["doctor", "--gpu-backend", "simulated", "--sim-state", "{dir}"],
    ["doctor", "--gpu-backend", "simulated", "--sim-gpus", "100000000"],
    ["doctor", "--gpu-backend", "simulated", "--sim-gpu", "NO-SUCH-GPU"],
    ["doctor", "--gpu-backend", "simulated", "--sim-state", "{driver}", "--state", "{garbage}"],
], ids=["restore-binary-state", "restore-state-is-dir", "restore-binary-driver", "doctor-binary-driver",
        "doctor-driver-is-dir", "doctor-huge-sim-gpus", "doctor-unknown-preset", "doctor-binary-state"])
def test_bad_file_inputs_get_one_line_not_a_traceback(tmp_path, args):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(GARBAGE)
    # A state file naming a driver-state file that is garbage too.
    state_dir = tmp_path / "g"
    state_dir.mkdir()
    (state_dir / "driver-state.json").write_bytes(GARBAGE)
    (state_dir / "power-limits.json").write_text(json.dumps({
        "schema": "pals-power-limits/1", "backend_kind": "simulated", "pid": 1, "backend_info": {},
        "gpus": [{"index": 0, "uuid": "u", "name": "n", "original_limit_w": 300.0}]}))
    values = {"{garbage}": str(garbage), "{dir}": str(tmp_path), "{garbage_driver}": str(state_dir / "driver-state.json"),
              "{driver}": str(tmp_path / "ok" / "driver-state.json")}
    argv = [values.get(a, a) for a in args]
    done = subprocess.run([sys.executable, "-m", "pals", *argv], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    if args[0] == "doctor" and "--state" in args:
        assert done.returncode == 1 and "[FAIL] saved limits" in done.stdout and "is corrupt" in done.stdout
        return
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"pals {args[0]}: error: ")
