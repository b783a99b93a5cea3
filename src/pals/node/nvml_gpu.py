"""NVIDIA GPUs through raw pynvml (nvidia-ml-py), without Zeus.

`NvmlGpuBackend` implements `pals.node.gpu_backend.GpuBackend` with the NVML calls
Zeus itself uses. It is the fallback of `open_gpus("auto")` when Zeus cannot
initialise, and `--gpu-backend nvml` selects it directly. It does not know
zeusd: without root it can read but not set limits.

The module refers to NVML only through the module-level name `pynvml`, which
is the seam tests replace with an autospec'd mock. NVML errors are translated
here (`raise ... from e`) through the GPU layer's one table
(`pals.node.gpu_backend.VENDOR_ERRORS`). Units are converted from mW/mJ.
"""

from __future__ import annotations

import os
from typing import Callable, TypeVar

import pynvml

from pals.errors import HardwareUnavailable
from pals.node.gpu_backend import (
    NO_LIBRARY_FIX,
    check_index,
    process_has_sys_admin,
    set_limit_mw_if_changed,
    translate_nvml_error,
)
from pals.units import mj_to_j, mw_to_w

T = TypeVar("T")


class NvmlGpuBackend:
    """`GpuBackend` over raw NVML. Respects CUDA_VISIBLE_DEVICES (integer indices only).

    Raises:
        HardwareUnavailable: NVML missing, driver not loaded, or no GPU.
    """

    kind = "nvml"

    def __init__(self) -> None:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise translate_nvml_error(e, "initialise NVML") from e
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            try:
                indices = [int(x) for x in visible.split(",") if x.strip()]
            except ValueError:
                raise HardwareUnavailable(
                    f"CUDA_VISIBLE_DEVICES={visible!r} is not a list of integer GPU indices "
                    "(MIG and UUID forms are not supported): set integer indices"
                ) from None
        else:
            indices = list(range(self._call("count GPUs", pynvml.nvmlDeviceGetCount)))
        if not indices:
            raise HardwareUnavailable(f"NVML found no GPU; {NO_LIBRARY_FIX}")
        self._handles = [self._call(f"open GPU {i}", lambda i=i: pynvml.nvmlDeviceGetHandleByIndex(i)) for i in indices]

    @staticmethod
    def _call(action: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except pynvml.NVMLError as e:
            raise translate_nvml_error(e, action) from e

    def close(self) -> None:
        """Shut NVML down (reference-counted by the library)."""
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass

    # --- GpuBackend -------------------------------------------------------------

    def count(self) -> int:
        return len(self._handles)

    def name(self, index: int) -> str:
        check_index(self, index)
        value = self._call(f"read GPU {index}'s name", lambda: pynvml.nvmlDeviceGetName(self._handles[index]))
        return value.decode() if isinstance(value, bytes) else str(value)

    def uuid(self, index: int) -> str:
        check_index(self, index)
        value = self._call(f"read GPU {index}'s UUID", lambda: pynvml.nvmlDeviceGetUUID(self._handles[index]))
        return value.decode() if isinstance(value, bytes) else str(value)

    def power_limit_range_w(self, index: int) -> tuple[float, float]:
        check_index(self, index)
        low_mw, high_mw = self._call(
            f"read GPU {index}'s power-limit range",
            lambda: pynvml.nvmlDeviceGetPowerManagementLimitConstraints(self._handles[index]),
        )
        return mw_to_w(low_mw), mw_to_w(high_mw)

    def default_power_limit_w(self, index: int) -> float:
        check_index(self, index)
        return mw_to_w(
            self._call(
                f"read GPU {index}'s default power limit",
                lambda: pynvml.nvmlDeviceGetPowerManagementDefaultLimit(self._handles[index]),
            )
        )

    def get_power_limit_w(self, index: int) -> float:
        check_index(self, index)
        return mw_to_w(
            self._call(
                f"read GPU {index}'s power limit",
                lambda: pynvml.nvmlDeviceGetPowerManagementLimit(self._handles[index]),
            )
        )

    def set_power_limit_w(self, index: int, watts: float) -> None:
        set_limit_mw_if_changed(self, index, watts, lambda target_mw: self._call(
            f"set GPU {index}'s power limit to {watts:g} W",
            lambda: pynvml.nvmlDeviceSetPowerManagementLimit(self._handles[index], target_mw),
        ))

    def power_w(self, index: int) -> float:
        check_index(self, index)
        return mw_to_w(self._call(f"read GPU {index}'s power", lambda: pynvml.nvmlDeviceGetPowerUsage(self._handles[index])))

    def energy_j(self, index: int) -> float:
        check_index(self, index)
        return mj_to_j(
            self._call(
                f"read GPU {index}'s energy counter",
                lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[index]),
            )
        )

    def can_set_power_limit(self) -> bool:
        # zeusd does not help this backend: only CAP_SYS_ADMIN counts.
        return process_has_sys_admin()
