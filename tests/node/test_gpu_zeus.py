"""ZeusGpuBackend: units and error translation, with autospec'd mocks at Zeus's import seams.

Two seams, as in Zeus's own tests: `zeus.device.gpu.get_gpus` (what the backend
calls) and `zeus.device.gpu.nvidia.pynvml` (what Zeus's real NVIDIAGPUs calls),
so the second set runs Zeus's real code from an NVML error code up to our
PalsError.
"""

from __future__ import annotations

import warnings
from unittest import mock

import pynvml as real_pynvml
import pytest
import zeus.device.gpu as zeus_gpu
import zeus.device.gpu.nvidia as zeus_nvidia
from zeus.device.gpu.common import GPUs, ZeusGPUInitError, ZeusGPUNoPermissionError

from pals.errors import ActuationError, ConfigError, HardwareUnavailable, PermissionDenied
from pals.node.gpu import open_gpus
from pals.node.zeus_gpu import ZeusGpuBackend


def _one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def _mock_gpus(n=2, limit_mw=300_000):
    gpus = mock.create_autospec(GPUs, instance=True)
    gpus.__len__.return_value = n
    gpus.gpus = [mock.Mock(spec=["gpu_index"], gpu_index=i) for i in range(n)]
    gpus.get_name.return_value = "NVIDIA A100-SXM4-40GB"
    gpus.get_power_management_limit_constraints.return_value = (100_000, 400_000)
    gpus.get_power_management_limit.return_value = limit_mw
    gpus.get_instant_power_usage.return_value = 123_400
    gpus.supports_get_total_energy_consumption.return_value = True
    gpus.get_total_energy_consumption.return_value = 5_000_000
    return gpus


def test_no_library_is_hardware_unavailable_with_the_fix():
    with mock.patch.object(zeus_gpu, "get_gpus", autospec=True) as get_gpus:
        get_gpus.side_effect = ZeusGPUInitError("NVML and AMDSMI unavailable.")
        with pytest.raises(HardwareUnavailable) as info:
            ZeusGpuBackend()
    text = _one_line(info.value)
    assert "install the NVIDIA driver" in text and "--node sim" in text
    assert isinstance(info.value.__cause__, ZeusGPUInitError)


def test_auto_never_falls_back_to_the_test_double():
    with mock.patch.object(zeus_gpu, "get_gpus", autospec=True) as get_gpus, \
            mock.patch("pals.node.nvml_gpu.pynvml.nvmlInit", autospec=True) as nvml_init:
        get_gpus.side_effect = ZeusGPUInitError("NVML and AMDSMI unavailable.")
        nvml_init.side_effect = real_pynvml.NVMLError(real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        with pytest.raises(HardwareUnavailable, match="no NVIDIA/AMD GPU management library"):
            open_gpus("auto")


def test_units_are_converted_at_the_boundary():
    gpus = _mock_gpus()
    backend = ZeusGpuBackend(gpus)
    assert backend.count() == 2
    assert backend.power_limit_range_w(1) == (100.0, 400.0)
    assert backend.get_power_limit_w(0) == 300.0
    assert backend.power_w(0) == pytest.approx(123.4)
    assert backend.energy_j(0) == pytest.approx(5000.0)
    backend.set_power_limit_w(1, 250.0)
    gpus.set_power_management_limit.assert_called_once_with(1, 250_000, block=True)


def test_unchanged_limit_is_not_rewritten():
    gpus = _mock_gpus(limit_mw=300_000)
    ZeusGpuBackend(gpus).set_power_limit_w(0, 300.0)
    gpus.set_power_management_limit.assert_not_called()


def test_permission_error_becomes_permission_denied():
    gpus = _mock_gpus()
    gpus.set_power_management_limit.side_effect = ZeusGPUNoPermissionError("Insufficient Permissions")
    with pytest.raises(PermissionDenied) as info:
        ZeusGpuBackend(gpus).set_power_limit_w(0, 200.0)
    text = _one_line(info.value)
    assert "run as root" in text and "ZEUSD_SOCK_PATH" in text


def test_out_of_range_never_reaches_zeus():
    gpus = _mock_gpus()
    with pytest.raises(ConfigError, match="outside GPU 0's range"):
        ZeusGpuBackend(gpus).set_power_limit_w(0, 999.0)
    gpus.set_power_management_limit.assert_not_called()


def test_zero_gpus_is_hardware_unavailable():
    with pytest.raises(HardwareUnavailable):
        ZeusGpuBackend(_mock_gpus(n=0))


# --- through Zeus's real NVIDIAGPUs, with NVML mocked at zeus.device.gpu.nvidia.pynvml ---


@pytest.fixture
def fake_nvml(make_fake_pynvml):
    """An autospec'd pynvml that keeps the real constants and exception classes."""
    fake = make_fake_pynvml((100_000, 400_000), 400_000)
    fake.nvmlDeviceGetC2cModeInfoV.side_effect = real_pynvml.NVMLError(real_pynvml.NVML_ERROR_NOT_SUPPORTED)
    with mock.patch.object(zeus_nvidia, "pynvml", fake), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Zeus warns once when SYS_ADMIN is missing
        yield fake


def test_nvml_no_permission_maps_through_zeus_to_permission_denied(fake_nvml):
    fake_nvml.nvmlDeviceSetPowerManagementLimit.side_effect = real_pynvml.NVMLError(
        real_pynvml.NVML_ERROR_NO_PERMISSION
    )
    backend = ZeusGpuBackend(zeus_nvidia.NVIDIAGPUs())
    assert backend.count() == 2
    with pytest.raises(PermissionDenied) as info:
        backend.set_power_limit_w(1, 150.0)
    _one_line(info.value)
    fake_nvml.nvmlDeviceSetPowerManagementLimit.assert_called_once_with("handle1", 150_000)


def test_nvml_other_error_maps_to_actuation_error(fake_nvml):
    fake_nvml.nvmlDeviceSetPowerManagementLimit.side_effect = real_pynvml.NVMLError(real_pynvml.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(ActuationError, match="cannot set GPU 0's power limit"):
        ZeusGpuBackend(zeus_nvidia.NVIDIAGPUs()).set_power_limit_w(0, 150.0)


def test_nvml_library_missing_at_init_is_hardware_unavailable(fake_nvml):
    fake_nvml.nvmlInit.side_effect = real_pynvml.NVMLError(real_pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with mock.patch.object(zeus_gpu, "get_gpus", autospec=True) as get_gpus:
        get_gpus.side_effect = lambda *a, **k: zeus_nvidia.NVIDIAGPUs()
        with pytest.raises(HardwareUnavailable) as info:
            ZeusGpuBackend()
    assert "NVML Shared Library Not Found" in _one_line(info.value)
