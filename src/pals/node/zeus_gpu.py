"""Real GPUs through Zeus: NVIDIA (NVML), AMD (amdsmi) and the zeusd daemon.

`ZeusGpuBackend` implements `pals.node.gpu_backend.GpuBackend` on top of
`zeus.device.gpu.get_gpus()`, which picks NVML, then amdsmi, and, when
`ZEUSD_SOCK_PATH` or `ZEUSD_HOST_PORT` is set, routes the privileged setters
through zeusd so the process needs no root. The returned Zeus `GPUs` object
is fetched once and held by the backend (or injected for tests); nothing here
keeps module-level state.

Units are converted at this boundary (Zeus speaks mW and mJ) and every Zeus
exception is translated with `raise ... from e` through the GPU layer's one
table (`pals.node.gpu_backend.VENDOR_ERRORS`); anything else from Zeus (zeusd
errors included), or from the call itself, becomes `ActuationError`.

Zeus is imported on first use, not with this module: its device layer takes a
noticeable fraction of a second to import, which the simulated backend and
`pals --help` should not pay.

Energy: `get_total_energy_consumption` (mJ since driver load) where the GPU
supports it (NVIDIA Volta and newer); otherwise this backend integrates the
instantaneous power between calls (coarse, noted in `notes()`).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, TypeVar

from pals.errors import ActuationError, HardwareUnavailable, PalsError
from pals.node.gpu_backend import (
    NO_LIBRARY_FIX,
    check_index,
    process_has_sys_admin,
    set_limit_mw_if_changed,
    translate_zeus_error,
)
from pals.units import mj_to_j, mw_to_w

T = TypeVar("T")


class ZeusGpuBackend:
    """`GpuBackend` over Zeus's `GPUs` (NVML, AMD, zeusd).

    Args:
        gpus: a Zeus `GPUs` object to wrap; by default `zeus.device.gpu.get_gpus()`
            is called once here and the result held.

    Raises:
        HardwareUnavailable: no GPU or no management library.
    """

    kind = "zeus"

    def __init__(self, gpus: Any | None = None) -> None:
        if gpus is None:
            gpus = self._get_zeus_gpus()
        self._gpus = gpus
        self._count = len(gpus)
        if self._count == 0:
            raise HardwareUnavailable(f"no GPU found by Zeus; {NO_LIBRARY_FIX}")
        # Software energy counter for GPUs without a hardware one: (last time, last power, joules).
        self._soft_energy: dict[int, tuple[float, float, float]] = {}
        self._has_energy_counter: dict[int, bool] = {}

    @staticmethod
    def _get_zeus_gpus() -> Any:
        try:
            import zeus.device.gpu as zeus_gpu
        except ImportError as e:  # zeus is a pinned dependency; only a broken install lands here
            raise HardwareUnavailable(f"cannot import zeus ({e}): reinstall pals, or run with --node sim") from e
        try:
            return zeus_gpu.get_gpus()
        except ImportError as e:  # unofficial `pynvml` package detected by Zeus
            raise HardwareUnavailable(f"{e} (or run with --node sim)") from e
        except Exception as e:  # Zeus raises ZeusBaseError subclasses; translate them all
            raise _translate_or_reraise(e, "initialise the GPU management library") from e

    def _call(self, action: str, fn: Callable[[], T]) -> T:
        """Run one Zeus call, translating its exceptions at this boundary."""
        try:
            return fn()
        except PalsError:
            raise
        except Exception as e:
            raise _translate_or_reraise(e, action) from e

    # --- GpuBackend -------------------------------------------------------------

    def count(self) -> int:
        return self._count

    def name(self, index: int) -> str:
        check_index(self, index)
        return str(self._call(f"read GPU {index}'s name", lambda: self._gpus.get_name(index)))

    def uuid(self, index: int) -> str:
        check_index(self, index)
        gpu = self._gpus.gpus[index]
        handle = getattr(gpu, "handle", None)
        if handle is not None:
            try:
                import pynvml

                value = pynvml.nvmlDeviceGetUUID(handle)
                return value.decode() if isinstance(value, bytes) else str(value)
            except Exception:  # AMD handles or old drivers: fall back below
                pass
        return f"{self.name(index)}#{getattr(gpu, 'gpu_index', index)}"

    def power_limit_range_w(self, index: int) -> tuple[float, float]:
        check_index(self, index)
        low_mw, high_mw = self._call(
            f"read GPU {index}'s power-limit range",
            lambda: self._gpus.get_power_management_limit_constraints(index),
        )
        return mw_to_w(low_mw), mw_to_w(high_mw)

    def default_power_limit_w(self, index: int) -> float:
        check_index(self, index)
        handle = getattr(self._gpus.gpus[index], "handle", None)
        if handle is not None:
            try:
                import pynvml

                return mw_to_w(pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle))
            except Exception:
                pass
        # Zeus has no default-limit getter for AMD; the maximum is the default there.
        return self.power_limit_range_w(index)[1]

    def get_power_limit_w(self, index: int) -> float:
        check_index(self, index)
        return mw_to_w(
            self._call(f"read GPU {index}'s power limit", lambda: self._gpus.get_power_management_limit(index))
        )

    def set_power_limit_w(self, index: int, watts: float) -> None:
        # Zeus's NVML setter skips an unchanged limit too; the shared check keeps that
        # guarantee for AMD and keeps restore idempotent without permission.
        set_limit_mw_if_changed(self, index, watts, lambda target_mw: self._call(
            f"set GPU {index}'s power limit to {watts:g} W",
            lambda: self._gpus.set_power_management_limit(index, target_mw, block=True),
        ))

    def power_w(self, index: int) -> float:
        check_index(self, index)
        from zeus.device.gpu.common import ZeusGPUNotSupportedError

        try:
            return mw_to_w(self._gpus.get_instant_power_usage(index))
        except ZeusGPUNotSupportedError:
            # Older GPUs have no instant field; the 1 s average is the next best reading.
            return mw_to_w(
                self._call(f"read GPU {index}'s power", lambda: self._gpus.get_average_power_usage(index))
            )
        except Exception as e:
            raise _translate_or_reraise(e, f"read GPU {index}'s power") from e

    def energy_j(self, index: int) -> float:
        check_index(self, index)
        if index not in self._has_energy_counter:
            self._has_energy_counter[index] = bool(
                self._call(
                    f"check GPU {index}'s energy counter",
                    lambda: self._gpus.supports_get_total_energy_consumption(index),
                )
            )
        if self._has_energy_counter[index]:
            return mj_to_j(
                self._call(
                    f"read GPU {index}'s energy counter",
                    lambda: self._gpus.get_total_energy_consumption(index),
                )
            )
        now_s = time.monotonic()
        power_w = self.power_w(index)
        last = self._soft_energy.get(index)
        energy_j = 0.0 if last is None else last[2] + 0.5 * (last[1] + power_w) * (now_s - last[0])
        self._soft_energy[index] = (now_s, power_w, energy_j)
        return energy_j

    def can_set_power_limit(self) -> bool:
        return zeus_can_set_power_limit()

    def notes(self) -> list[str]:
        """Degradations worth surfacing in a status line."""
        out = []
        if not self.can_set_power_limit():
            out.append("power caps not settable (no root, CAP_SYS_ADMIN or zeusd): batch-only control")
        if any(v is False for v in self._has_energy_counter.values()):
            out.append("GPU has no energy counter: energy integrated from power readings")
        return out


def zeus_can_set_power_limit() -> bool:
    """True if zeusd is configured or the process has CAP_SYS_ADMIN (root has it)."""
    if os.environ.get("ZEUSD_SOCK_PATH") or os.environ.get("ZEUSD_HOST_PORT"):
        return True
    return process_has_sys_admin()


def _translate_or_reraise(error: Exception, action: str) -> Exception:
    """Translate Zeus errors; a PalsError passes through; anything else becomes ActuationError."""
    if isinstance(error, PalsError):
        return error
    try:
        from zeus.exception import ZeusBaseError
    except ImportError:  # pragma: no cover - zeus is a dependency
        ZeusBaseError = ()  # type: ignore[assignment]
    if isinstance(error, ZeusBaseError):
        return translate_zeus_error(error, action)
    return ActuationError(f"cannot {action}: {type(error).__name__}: {error}")
