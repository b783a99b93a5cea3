"""The host a probe ran on: which GPU preset it is, and the JSON description written beside the profile.

`preset_for_gpu_name` maps a driver's GPU name ('NVIDIA H200', 'NVIDIA H100 80GB HBM3') to a simulator preset
so the profile's `gpu` column and the measured-vs-simulated table need no flag. `model_column` says what the
CSV's `model` column holds so `pals calibrate` finds the architecture again. `nvml_details` reads what the GPU
layer does not expose (driver and CUDA driver versions, clocks, memory) straight from NVML, best effort.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from pals.core.io import atomic_write_text, dumps_json
from pals.node.gpu_backend import GpuBackend

HOST_FORMAT = "pals-probe-host"
HOST_VERSION = 1

_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"(?<!G)H200(?!.*NVL)", "H200"),
    (r"(?<!G)H100(?!.*(PCIe|NVL))", "H100-SXM"),
    (r"A100.*80\s*GB", "A100-SXM4-80GB"),
    (r"A100", "A100-SXM4-40GB"),
    (r"L40S", "L40S"),
)
"""Driver GPU name (regex, case-insensitive) -> preset; first match wins. The PCIe and NVL boards (350-600 W) and
Grace Hopper's GH200 have no preset: their names fall through and the user names one (--gpu-preset)."""
TEST_DOUBLE_SUFFIX = " (simulated test double)"


def preset_for_gpu_name(name: str) -> str | None:
    """The simulator preset for a driver's GPU name, or None when none matches.

    The GPU test double reports '<preset> (simulated test double)': that preset is returned as it is.
    """
    if name.endswith(TEST_DOUBLE_SUFFIX):
        return name[: -len(TEST_DOUBLE_SUFFIX)]
    for pattern, preset in _NAME_RULES:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return preset
    return None


def config_file(path: str | Path) -> Path:
    """config.json itself, given it or its folder."""
    p = Path(path)
    return p / "config.json" if p.is_dir() else p


def model_column(config_path: str | Path, out_path: str | Path, shipped_models: Path) -> str:
    """What the CSV's `model` column holds so `pals calibrate` resolves the same architecture.

    A config shipped with pals (`pals/data/measurements/models/NAME/config.json`) is written as NAME; any other
    as its folder's path relative to the CSV's folder (calibrate resolves relative paths against it).
    """
    folder = config_file(config_path).resolve().parent
    try:
        if folder.parent == shipped_models.resolve():
            return folder.name
    except OSError:
        pass
    return os.path.relpath(folder, Path(out_path).resolve().parent)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def software_versions() -> dict[str, Any]:
    """Python, pals and the libraries the probe uses (None: not installed)."""
    from pals import __version__

    return {"python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}",
            "pals": __version__, **{d: _version(d) for d in ("torch", "transformers", "nvidia-ml-py", "zeus")}}


def gpu_description(backend: GpuBackend, index: int) -> dict[str, Any]:
    """Name, UUID, preset and power limits through the GPU layer; NVML extras for real GPUs."""
    name = backend.name(index)
    low_w, high_w = backend.power_limit_range_w(index)
    info: dict[str, Any] = {
        "index": index, "name": name, "uuid": backend.uuid(index), "preset": preset_for_gpu_name(name),
        "backend": getattr(backend, "kind", "?"), "test_double": getattr(backend, "kind", "") == "simulated",
        "power_limit_w": backend.get_power_limit_w(index),
        "default_power_limit_w": backend.default_power_limit_w(index),
        "power_limit_range_w": [low_w, high_w], "can_set_power_limit": backend.can_set_power_limit(),
    }
    if info["backend"] in ("nvml", "zeus"):
        info.update(nvml_details(info["uuid"]))
    return info


def nvml_details(uuid: str) -> dict[str, Any]:
    """Driver and CUDA driver versions, clocks, memory and temperature of the GPU with this UUID (best effort:
    a value NVML will not give is left out, and `nvml_error` says why)."""
    out: dict[str, Any] = {}
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    except Exception as error:  # no NVML here (or another vendor): the description is just shorter
        return {"nvml_error": str(error).splitlines()[0][:200]}
    reads = {
        "driver_version": lambda: pynvml.nvmlSystemGetDriverVersion(),
        "cuda_driver_version": lambda: pynvml.nvmlSystemGetCudaDriverVersion_v2(),
        "memory_total_bytes": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).total,
        "sm_clock_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
        "mem_clock_max_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM),
        "sm_clock_now_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
        "mem_clock_now_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
        "temperature_c": lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
        "persistence_mode": lambda: pynvml.nvmlDeviceGetPersistenceMode(handle),
    }
    for key, read in reads.items():
        try:
            value = read()
            out[key] = value.decode() if isinstance(value, bytes) else value
        except Exception as error:  # a field this GPU or driver does not report
            out.setdefault("nvml_unavailable", []).append(f"{key}: {str(error)[:80]}")
    return out


def host_description(*, gpu: dict[str, Any], torch_info: dict[str, Any], model: dict[str, Any],
                     settings: dict[str, Any], caps: dict[str, Any], notes: list[str], timings_s: dict[str, float],
                     argv: list[str]) -> dict[str, Any]:
    """The JSON object written beside the profile."""
    return {
        "format": HOST_FORMAT, "version": HOST_VERSION,
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": argv, "gpu": gpu, "torch": torch_info, "software": software_versions(), "model": model,
        "settings": settings, "caps": caps, "notes": notes, "timings_s": timings_s,
    }


def write_host_description(path: str | Path, description: dict[str, Any]) -> None:
    atomic_write_text(path, dumps_json(description, indent=2, sort_keys=True) + "\n")


def host_path_for(out_path: str | Path) -> Path:
    """profile.csv -> profile.host.json (beside it)."""
    out = Path(out_path)
    return out.with_name(out.stem + ".host.json")
