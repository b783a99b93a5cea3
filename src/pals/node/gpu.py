"""Open the host's GPUs: the factory on top of the GPU layer.

`open_gpus(kind)` picks one backend; the protocol every backend implements, its checks and the
vendor-error table are in `pals.node.gpu_backend` (the bottom of the layer, which imports no
backend):

- `pals.node.zeus_gpu.ZeusGpuBackend`: real GPUs through Zeus (NVIDIA via NVML,
  AMD via amdsmi, and the zeusd daemon for setting caps without root).
- `pals.node.nvml_gpu.NvmlGpuBackend`: NVIDIA GPUs through raw pynvml
  (nvidia-ml-py), for hosts where Zeus cannot initialise.
- `pals.node.simulated_gpu.SimulatedGpuBackend`: a GPU TEST DOUBLE driven by
  the simulator's power physics, for hosts without a GPU.

Example:
    >>> from pals.node.gpu import open_gpus
    >>> gpus = open_gpus("simulated", sim_gpus=2)      # doctest: +SKIP
    >>> lo_w, hi_w = gpus.power_limit_range_w(0)       # doctest: +SKIP

Always change limits through `pals.node.hwstate.PowerLimitGuard`, which saves
the original limits first and restores them on exit, on SIGINT/SIGTERM and
through `pals restore` after a crash.
"""

from __future__ import annotations

from pals.errors import ConfigError, HardwareUnavailable
from pals.node.gpu_backend import GpuBackend
from pals.node.simulated_gpu import SimulatedGpuBackend
from pals.node.zeus_gpu import ZeusGpuBackend

BACKEND_KINDS = ("auto", "zeus", "nvml", "simulated")


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
        return SimulatedGpuBackend.open(**kwargs)
    if kind == "zeus":
        return ZeusGpuBackend()
    if kind == "nvml":
        return _open_nvml()
    # auto: Zeus covers NVML, AMD and zeusd; raw NVML is the fallback when Zeus
    # cannot initialise (e.g. an unofficial `pynvml` package shadows nvidia-ml-py).
    try:
        return ZeusGpuBackend()
    except HardwareUnavailable as zeus_error:
        try:
            return _open_nvml()
        except HardwareUnavailable:
            raise zeus_error from None


def _open_nvml() -> GpuBackend:
    # Imported here, not above: `pynvml` (nvidia-ml-py) is imported by that module at load time,
    # and a host without it must still reach the Zeus and simulated backends.
    try:
        from pals.node.nvml_gpu import NvmlGpuBackend
    except ImportError as e:
        raise HardwareUnavailable(f"cannot import pynvml ({e}): pip install nvidia-ml-py, or run with --node sim") from e
    return NvmlGpuBackend()
