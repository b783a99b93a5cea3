"""The project's narrow GPU interface, in W, J and s.

Everything above this module (the real node, `pals doctor`, the power-limit
guard) talks to GPUs only through `GpuBackend`. Implementations translate
their vendor's units (NVML and Zeus speak mW and mJ) and exceptions at the
boundary, so no Zeus or NVML type escapes:

- `pals.node.zeus_gpu.ZeusGpuBackend`: real GPUs through Zeus (NVIDIA via NVML,
  AMD via amdsmi, and the zeusd daemon for setting caps without root).
- `pals.node.nvml_gpu.NvmlGpuBackend`: NVIDIA GPUs through raw pynvml
  (nvidia-ml-py), for hosts where Zeus cannot initialise.
- `pals.node.simulated_gpu.SimulatedGpuBackend`: a GPU TEST DOUBLE driven by
  the simulator's power physics, for hosts without a GPU.

Errors (all `pals.errors`):
- `HardwareUnavailable`: no GPU or no management library (raised by
  `open_gpus` and the backend constructors).
- `PermissionDenied`: the process may read but not set power limits.
- `ConfigError`: a requested limit is outside the GPU's range.
- `ActuationError`: any other failed read or write.

Example:
    >>> from pals.node.gpu import open_gpus
    >>> gpus = open_gpus("simulated", sim_gpus=2)      # doctest: +SKIP
    >>> lo_w, hi_w = gpus.power_limit_range_w(0)       # doctest: +SKIP

Always change limits through `pals.node.hwstate.PowerLimitGuard`, which saves
the original limits first and restores them on exit, on SIGINT/SIGTERM and
through `pals restore` after a crash.
"""

from __future__ import annotations

import os
from typing import Callable, Protocol, runtime_checkable

from pals.errors import ConfigError, HardwareUnavailable

BACKEND_KINDS = ("auto", "zeus", "nvml", "simulated")


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
    from pals.units import w_to_mw

    check_index(backend, index)
    check_limit_in_range(backend, index, watts)
    target_mw = w_to_mw(watts)
    if w_to_mw(backend.get_power_limit_w(index)) != target_mw:
        write_mw(target_mw)


def process_has_sys_admin() -> bool:
    """True if this process has CAP_SYS_ADMIN (root has it), which NVML needs to set limits."""
    try:
        from zeus.device.common import has_sys_admin

        return bool(has_sys_admin())
    except Exception:
        return hasattr(os, "geteuid") and os.geteuid() == 0


def check_index(backend: GpuBackend, index: int) -> None:
    """Raise ConfigError if `index` is not a GPU of `backend`."""
    n = backend.count()
    if not 0 <= index < n:
        raise ConfigError(f"GPU index {index} does not exist; this host has GPUs 0-{n - 1}")


def open_gpus(kind: str = "auto", **kwargs) -> GpuBackend:
    """Open the host's GPUs through one backend.

    Args:
        kind: "zeus" (NVIDIA/AMD/zeusd through Zeus), "nvml" (raw pynvml),
            "simulated" (the GPU test double) or "auto" (Zeus, then raw NVML).
            "auto" never falls back to the test double: a host without GPUs
            must say so, not pretend.
        **kwargs: passed to `SimulatedGpuBackend.open` for kind="simulated"
            (`sim_gpus`, `sim_gpu`, `driver_state_path`, ...); ignored otherwise.

    Raises:
        HardwareUnavailable: no GPU or no management library, with the fix.
        ConfigError: unknown `kind`.
    """
    if kind not in BACKEND_KINDS:
        raise ConfigError(f"unknown GPU backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}")
    if kind == "simulated":
        from pals.node.simulated_gpu import SimulatedGpuBackend

        return SimulatedGpuBackend.open(**kwargs)
    if kind == "zeus":
        from pals.node.zeus_gpu import ZeusGpuBackend

        return ZeusGpuBackend()
    if kind == "nvml":
        return _open_nvml()
    # auto: Zeus covers NVML, AMD and zeusd; raw NVML is the fallback when Zeus
    # cannot initialise (e.g. an unofficial `pynvml` package shadows nvidia-ml-py).
    from pals.node.zeus_gpu import ZeusGpuBackend

    try:
        return ZeusGpuBackend()
    except HardwareUnavailable as zeus_error:
        try:
            return _open_nvml()
        except HardwareUnavailable:
            raise zeus_error from None


def _open_nvml() -> GpuBackend:
    try:
        from pals.node.nvml_gpu import NvmlGpuBackend
    except ImportError as e:
        raise HardwareUnavailable(f"cannot import pynvml ({e}): pip install nvidia-ml-py, or run with --node sim") from e
    return NvmlGpuBackend()
