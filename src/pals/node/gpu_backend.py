"""The project's narrow GPU interface, in W, J and s: the protocol, its shared checks, one error table.

This is the bottom of the GPU layer. The backends import it; it imports none of them:

    pals.node.gpu            open_gpus(kind): the factory (imports the backends)
      |
    pals.node.zeus_gpu       ZeusGpuBackend: real GPUs through Zeus (NVIDIA via NVML, AMD via
    pals.node.nvml_gpu       amdsmi, zeusd for caps without root); NvmlGpuBackend: raw pynvml,
    pals.node.simulated_gpu  for hosts where Zeus cannot initialise; SimulatedGpuBackend: the
      |                      GPU TEST DOUBLE driven by the simulator's power physics
    pals.node.gpu_backend    GpuBackend, index/range checks, the vendor-error table (this module)

Everything above the GPU layer (the real node, `pals doctor`, the power-limit guard) talks to
GPUs only through `GpuBackend`. Implementations translate their vendor's units (NVML and Zeus
speak mW and mJ) and exceptions at the boundary, so no Zeus or NVML type escapes. Both vendor
libraries' errors go through one table, `VENDOR_ERRORS`, to these `pals.errors` classes:

- `HardwareUnavailable`: no GPU or no management library (raised by `open_gpus` and the
  backend constructors).
- `PermissionDenied`: the process may read but not set power limits.
- `ConfigError`: a requested limit is outside the GPU's range, or the driver rejected the value.
- `ActuationError`: any other failed read or write.

Always change limits through `pals.node.hwstate.PowerLimitGuard`, which saves the original
limits first and restores them on exit, on SIGINT/SIGTERM and through `pals restore` after a crash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

from pals.errors import ActuationError, ConfigError, HardwareUnavailable, PalsError, PermissionDenied
from pals.units import w_to_mw

NO_LIBRARY_FIX = (
    "no NVIDIA/AMD GPU management library found: install the NVIDIA driver (NVML) or ROCm 6.3+ "
    "(amdsmi) on a GPU host, or run with --node sim"
)
NO_PERMISSION_FIX = (
    "no permission to set GPU power limits: run as root, grant CAP_SYS_ADMIN, "
    "or run zeusd and set ZEUSD_SOCK_PATH"
)


@runtime_checkable
class GpuBackend(Protocol):
    """The GPUs of one host. Indices are 0..count()-1 as the backend sees them.

    Attributes:
        kind: short backend name ("zeus", "nvml", "simulated"), written into
            the saved-state file so `pals restore` can check it uses the same one.
    """

    kind: str

    def count(self) -> int:
        """Number of GPUs this backend controls."""

    def name(self, index: int) -> str:
        """Model name, e.g. 'NVIDIA A100-SXM4-80GB'."""

    def uuid(self, index: int) -> str:
        """Stable identifier (NVML UUID); used to match saved state to GPUs."""

    def power_limit_range_w(self, index: int) -> tuple[float, float]:
        """(min, max) power limit the driver accepts. Units: W."""

    def default_power_limit_w(self, index: int) -> float:
        """The driver's default limit (the limit after a reboot). Units: W."""

    def get_power_limit_w(self, index: int) -> float:
        """Power limit in force. Units: W."""

    def set_power_limit_w(self, index: int, watts: float) -> None:
        """Set the power limit; a value equal to the current one is not rewritten.

        Raises:
            ConfigError: `watts` is outside `power_limit_range_w(index)`.
            PermissionDenied: the process may not set limits.
            ActuationError: the driver refused for another reason.
        """

    def power_w(self, index: int) -> float:
        """Instantaneous power draw. Units: W."""

    def energy_j(self, index: int) -> float:
        """Cumulative energy since the driver loaded (or the backend opened). Units: J."""

    def can_set_power_limit(self) -> bool:
        """True if this process may set power limits (root, CAP_SYS_ADMIN, zeusd, ...)."""


# --- checks every backend makes before the driver sees anything -----------------------


def check_index(backend: GpuBackend, index: int) -> None:
    """Raise ConfigError if `index` is not a GPU of `backend`."""
    n = backend.count()
    if not 0 <= index < n:
        raise ConfigError(f"GPU index {index} does not exist; this host has GPUs 0-{n - 1}")


def check_limit_in_range(backend: GpuBackend, index: int, watts: float) -> None:
    """Raise ConfigError if `watts` is outside GPU `index`'s settable range."""
    low_w, high_w = backend.power_limit_range_w(index)
    if not low_w <= watts <= high_w:
        raise ConfigError(
            f"power limit {watts:g} W is outside GPU {index}'s range {low_w:g}-{high_w:g} W; "
            "pick a value inside it"
        )


def set_limit_mw_if_changed(backend: GpuBackend, index: int, watts: float, write_mw: Callable[[int], None]) -> None:
    """The vendor backends' `set_power_limit_w`: validate, then write in mW unless already in force.

    Checks the index and the range before the driver sees anything, and skips the
    write when the limit in force equals `watts` to the milliwatt, so restoring
    an unchanged limit works without permission.

    Args:
        backend: The backend (its `power_limit_range_w` and `get_power_limit_w` are read).
        index: GPU index.
        watts: The requested limit. Units: W.
        write_mw: The vendor call that sets the limit, given milliwatts.
    """
    check_index(backend, index)
    check_limit_in_range(backend, index, watts)
    target_mw = w_to_mw(watts)
    if w_to_mw(backend.get_power_limit_w(index)) != target_mw:
        write_mw(target_mw)


def process_has_sys_admin() -> bool:
    """True if this process has CAP_SYS_ADMIN (root has it), which NVML needs to set limits."""
    try:
        # Zeus reads CapEff from /proc/self/status (capget as the fallback); imported here
        # because this is the only use, on a path that runs once per status check.
        from zeus.device.common import has_sys_admin

        return bool(has_sys_admin())
    except Exception:
        return hasattr(os, "geteuid") and os.geteuid() == 0


# --- the one vendor-error table ----------------------------------------------------------


@dataclass(frozen=True)
class VendorErrorRow:
    """One meaning a vendor error can have, and the `pals.errors` class that carries it."""

    pals_error: type[PalsError]
    """The class raised to the caller."""
    message: str
    """Template with {action}, {detail}, {source} and the fixes {no_library_fix}, {no_permission_fix}."""
    nvml_codes: tuple[str, ...]
    """`pynvml` return-code constants (`NVMLError.value`) with this meaning."""
    zeus_errors: tuple[str, ...]
    """Exception classes of `zeus.device.gpu.common` with this meaning (Zeus maps NVML codes and
    amdsmi errors to them; the classes are siblings, so the order of rows does not matter)."""


VENDOR_ERRORS: tuple[VendorErrorRow, ...] = (
    VendorErrorRow(
        HardwareUnavailable,
        "{no_library_fix} ({source}: {detail})",
        nvml_codes=("NVML_ERROR_LIBRARY_NOT_FOUND", "NVML_ERROR_DRIVER_NOT_LOADED"),
        zeus_errors=("ZeusGPUInitError", "ZeusGPULibraryNotFoundError", "ZeusGPUDriverNotLoadedError"),
    ),
    VendorErrorRow(
        PermissionDenied,
        "cannot {action} ({detail}): {no_permission_fix}",
        nvml_codes=("NVML_ERROR_NO_PERMISSION",),
        zeus_errors=("ZeusGPUNoPermissionError",),
    ),
    VendorErrorRow(
        ConfigError,
        "cannot {action}: the driver rejected the value ({detail})",
        nvml_codes=("NVML_ERROR_INVALID_ARGUMENT",),
        zeus_errors=("ZeusGPUInvalidArgError",),
    ),
)
"""Vendor error -> PalsError. Anything not listed (zeusd errors included) is `ActuationError`,
with the message `OTHER_VENDOR_ERROR`."""

OTHER_VENDOR_ERROR = "cannot {action}: {label}: {detail}"
"""Message of the `ActuationError` for a vendor error outside `VENDOR_ERRORS`."""


def _from_row(row: VendorErrorRow | None, action: str, detail: str, source: str, label: str) -> PalsError:
    if row is None:
        return ActuationError(OTHER_VENDOR_ERROR.format(action=action, label=label, detail=detail))
    return row.pals_error(
        row.message.format(
            action=action,
            detail=detail,
            source=source,
            no_library_fix=NO_LIBRARY_FIX,
            no_permission_fix=NO_PERMISSION_FIX,
        )
    )


def translate_nvml_error(error: Exception, action: str) -> PalsError:
    """Map one `pynvml.NVMLError` to the PalsError the caller should act on.

    Args:
        error: the exception pynvml raised (its `value` is the NVML return code).
        action: what was being done, for the message (e.g. "set GPU 0's power limit").
    """
    import pynvml  # present whenever an NVMLError exists; optional for everything else here

    code = getattr(error, "value", None)
    row = next(
        (r for r in VENDOR_ERRORS if any(code == getattr(pynvml, name) for name in r.nvml_codes)),
        None,
    )
    return _from_row(row, action, str(error), source="NVML", label="NVML error")


def translate_zeus_error(error: BaseException, action: str) -> PalsError:
    """Map one Zeus exception to the PalsError the caller should act on.

    Args:
        error: the exception Zeus raised.
        action: what was being done, for the message (e.g. "set GPU 0's power limit").
    """
    from zeus.device.gpu import common as zeus_common  # Zeus is imported only when it has raised

    row = next(
        (r for r in VENDOR_ERRORS if isinstance(error, tuple(getattr(zeus_common, n) for n in r.zeus_errors))),
        None,
    )
    detail = str(error).strip() or type(error).__name__
    return _from_row(row, action, detail, source="zeus", label=type(error).__name__)
