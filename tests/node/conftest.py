"""Fixtures for the GPU-layer tests: the GPU test double, a manual clock, isolated state dirs."""

from __future__ import annotations

from unittest import mock

import pynvml as real_pynvml
import pytest

from pals.core.paper import PAPER_GPU
from pals.node.simulated_gpu import SimulatedGpuBackend
from pals.sim.hardware import get_gpu


class ManualClock:
    """A clock the test moves by hand (no sleeping, no timed assertions)."""

    def __init__(self, t_s: float = 0.0) -> None:
        self.t_s = t_s

    def now_s(self) -> float:
        return self.t_s

    def wait_until(self, t_s: float) -> None:
        self.t_s = max(self.t_s, t_s)


@pytest.fixture(autouse=True)
def isolated_state(tmp_path, monkeypatch):
    """Keep every state file of these tests out of the user's ~/.local/state and away from zeusd."""
    monkeypatch.setenv("PALS_STATE_DIR", str(tmp_path / "pals-state"))
    for name in ("ZEUSD_SOCK_PATH", "ZEUSD_HOST_PORT", "ZEUSD_TOKEN", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "pals-state"


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def a100():
    return get_gpu(PAPER_GPU)


@pytest.fixture
def driver_path(tmp_path):
    return tmp_path / "sim-driver" / "driver-state.json"


@pytest.fixture
def sim(a100, driver_path, clock):
    """Four simulated A100s (GPU test double) sharing one driver-state file."""
    return SimulatedGpuBackend(a100, 4, driver_path, utilisation=0.5, clock=clock)


@pytest.fixture
def kill9():
    """Play kill -9 on a PowerLimitGuard in this process: no restore, and its locks dropped (as the
    kernel drops a dead process's flocks); its saved entries stay behind for `pals restore`."""

    def crash(guard) -> None:
        from pals.node import exit_signals

        guard._closed = True
        exit_signals.unregister(guard._signals)
        guard.release()

    return crash


@pytest.fixture
def make_fake_pynvml():
    """Factory of fake pynvml modules (see `_make_fake_pynvml`)."""
    return _make_fake_pynvml


def _make_fake_pynvml(limit_range_mw: tuple[int, int], limit_mw: int, count: int = 2):
    """An autospec'd pynvml that keeps the real constants and exception classes (stands in for
    the driver library of a GPU host; each test sets the calls it exercises)."""
    fake = mock.create_autospec(real_pynvml)
    for name in dir(real_pynvml):
        if name.startswith(("NVML_", "NVMLError")):
            setattr(fake, name, getattr(real_pynvml, name))
    fake.nvmlDeviceGetCount.return_value = count
    fake.nvmlDeviceGetHandleByIndex.side_effect = lambda i: f"handle{i}"
    fake.nvmlDeviceGetPowerManagementLimitConstraints.return_value = limit_range_mw
    fake.nvmlDeviceGetPowerManagementLimit.return_value = limit_mw
    return fake
