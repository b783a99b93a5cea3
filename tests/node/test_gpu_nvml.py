"""NvmlGpuBackend (raw pynvml): error mapping with pynvml mocked at `pals.node.nvml_gpu.pynvml`."""

from __future__ import annotations

from unittest import mock

import pynvml as real_pynvml
import pytest

import pals.node.nvml_gpu as nvml_gpu
from pals.errors import ConfigError, HardwareUnavailable, PermissionDenied


@pytest.fixture
def fake_nvml(make_fake_pynvml):
    fake = make_fake_pynvml((150_000, 700_000), 700_000)
    fake.nvmlDeviceGetTotalEnergyConsumption.return_value = 12_345_678
    with mock.patch.object(nvml_gpu, "pynvml", fake):
        yield fake


def test_library_not_found_is_hardware_unavailable(fake_nvml):
    fake_nvml.nvmlInit.side_effect = real_pynvml.NVMLError(real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(HardwareUnavailable) as info:
        nvml_gpu.NvmlGpuBackend()
    assert "\n" not in str(info.value) and "install the NVIDIA driver" in str(info.value)


def test_no_permission_is_permission_denied(fake_nvml):
    fake_nvml.nvmlDeviceSetPowerManagementLimit.side_effect = real_pynvml.NVMLError(
        real_pynvml.NVML_ERROR_NO_PERMISSION
    )
    backend = nvml_gpu.NvmlGpuBackend()
    with pytest.raises(PermissionDenied, match="CAP_SYS_ADMIN"):
        backend.set_power_limit_w(0, 300.0)


def test_units_and_visible_devices(fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    backend = nvml_gpu.NvmlGpuBackend()
    assert backend.count() == 1
    assert backend.power_limit_range_w(0) == (150.0, 700.0)
    assert backend.energy_j(0) == pytest.approx(12345.678)
    backend.set_power_limit_w(0, 400.0)
    fake_nvml.nvmlDeviceSetPowerManagementLimit.assert_called_once_with("handle1", 400_000)


def test_unchanged_or_out_of_range_limit_never_reaches_nvml(fake_nvml):
    backend = nvml_gpu.NvmlGpuBackend()
    backend.set_power_limit_w(0, 700.0)  # the limit in force
    with pytest.raises(ConfigError, match="outside GPU 1's range"):
        backend.set_power_limit_w(1, 100.0)
    fake_nvml.nvmlDeviceSetPowerManagementLimit.assert_not_called()
