"""The GPU test double's default driver-state file: per user, per configuration, never in a shared $TMPDIR."""

from __future__ import annotations

import tempfile

import pytest

from pals.errors import ConfigError
from pals.node.hwstate import PowerLimitGuard, default_lock_dir, default_state_path
from pals.node.simulated_gpu import MAX_SIM_GPUS, SimulatedGpuBackend, default_driver_state_path


def test_default_driver_state_is_per_user_and_per_configuration(isolated_state, monkeypatch, tmp_path):
    assert default_driver_state_path(4, "A100-SXM4-40GB") == isolated_state / "sim-gpu-4xA100-SXM4-40GB" / "driver-state.json"
    assert default_driver_state_path(2, "H100 SXM/80") == isolated_state / "sim-gpu-2xH100_SXM_80" / "driver-state.json"
    monkeypatch.delenv("PALS_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_driver_state_path(1, "A100-SXM4-80GB") == tmp_path / "xdg" / "pals" / "sim-gpu-1xA100-SXM4-80GB" / "driver-state.json"
    assert not str(default_driver_state_path(1, "A100-SXM4-80GB")).startswith(tempfile.gettempdir() + "/pals-simulated")


def test_two_configurations_do_not_share_a_driver_file(isolated_state):
    four = SimulatedGpuBackend.open(sim_gpus=4, sim_gpu="A100-SXM4-40GB")
    two = SimulatedGpuBackend.open(sim_gpus=2, sim_gpu="A100-SXM4-40GB")  # was: "describes 4x, not 2x" error
    assert four.driver_state_path != two.driver_state_path
    assert four.driver_state_path.is_relative_to(isolated_state)
    # Its saved limits and locks live beside it, apart from real GPUs' state.
    assert default_state_path(four) == four.driver_state_path.parent / "power-limits.json"
    assert default_lock_dir(four) == four.driver_state_path.parent / "locks"
    with PowerLimitGuard(four, handle_signals=False, register_atexit=False) as guard:
        guard.set_power_limit_w(0, 200.0)
        assert default_state_path(four).exists() and not default_state_path().exists()
    assert four.get_power_limit_w(0) == 400.0


@pytest.mark.parametrize("count", [0, -1, MAX_SIM_GPUS + 1, 10**9, True])
def test_absurd_gpu_counts_are_one_clear_error(tmp_path, count):
    with pytest.raises(ConfigError, match=f"within 1-{MAX_SIM_GPUS}"):
        SimulatedGpuBackend.open(sim_gpus=count, driver_state_path=tmp_path / "d.json")


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x80" * 100, b"[" * 100_000, b'{"gpus": [{"power_limit_w": NaN}]}',
                                     b'{"gpus": "x"}', b" " * (2 << 20)])
def test_a_garbage_driver_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "driver-state.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="is unreadable.*delete it") as info:
        SimulatedGpuBackend.open(sim_gpus=1, driver_state_path=path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 600
