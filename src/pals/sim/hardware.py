"""GPU presets for the simulator, as data: one JSON file per GPU.

The built-in presets are `pals/data/gpus/*.json`; each field carries its source in the file's
`sources` block (tags: [P] primary, [Q] quote not checked against the paper, [S] secondary, [D] derived
by us, "assumption"), and docs/calibration.md §3 has the full citations. A user adds a GPU without code:
drop `NAME.json` (same format) into a directory named by `PALS_GPU_PRESETS_DIR` (several directories
separated by `os.pathsep`; a user file of the same name replaces a built-in one), or pass the file's
path wherever a GPU name is taken. Every file is validated on load, with one error line that names
the file, the field and the fix.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pals.errors import ConfigError
from pals.sim.physics import PhysicsParams, physics_from_mapping

_MIB = 1024**2
_GB = 1e9
_TF = 1e12

PRESETS_DIR_ENV = "PALS_GPU_PRESETS_DIR"
"""Environment variable: directories (os.pathsep-separated) of extra GPU preset files."""
GPU_FORMAT = "pals-gpu"
GPU_VERSION = 1


@dataclass(frozen=True)
class GpuSpec:
    """Constants of one GPU model. Units are in the field names (W, MHz, bytes, s)."""

    name: str
    """Preset name (what `--gpu` takes)."""
    peak_bf16_flops: float
    """Dense BF16 tensor-core peak. Units: FLOP/s."""
    hbm_bandwidth_bytes_per_s: float
    """Spec memory bandwidth. Units: B/s."""
    memory_bytes: float
    """Device memory as nvidia-smi reports it. Units: B."""
    link_bandwidth_bytes_per_s: float
    """GPU-to-GPU link, total of both directions (NVLink, or PCIe without it). Units: B/s."""
    nvlink: bool
    """Whether GPUs of a node talk over NVLink (else PCIe)."""
    tdp_w: float
    """Default power limit. Units: W."""
    power_limit_min_w: float
    """Lowest limit NVML accepts. Units: W."""
    power_limit_max_w: float
    """Highest limit NVML accepts. Units: W."""
    max_sm_clock_mhz: float
    """Highest SM clock. Units: MHz."""
    min_sm_clock_mhz: float
    """Lowest supported SM clock (the clock grid's floor; not verified, see sources). Units: MHz."""
    idle_bare_w: float
    """Idle draw with no CUDA context (deep idle). Units: W."""
    idle_context_w: float
    """Idle draw with the serving engine's context and weights loaded (between steps). Units: W."""
    eta_compute: float
    """Achieved share of peak FLOP/s in large GEMMs (roofline compute efficiency)."""
    eta_memory: float
    """Achieved share of spec HBM bandwidth (roofline memory efficiency)."""
    allreduce_latency_s: float
    """Fixed cost of one intra-node all-reduce of a decode-sized message. Units: s."""
    allreduce_busbw_bytes_per_s: dict[int, float] = field(hash=False)
    """Large-message all-reduce bus bandwidth by group size (2, 4, 8 GPUs). Units: B/s."""
    sm_clock_step_mhz: float = 15.0
    """Spacing of the supported SM clocks (assumption: `nvidia-smi -q -d SUPPORTED_CLOCKS` not read). Units: MHz."""
    vllm_max_num_batched_tokens: int = 2048
    """vLLM's default per-step token budget on this GPU (`vllm serve`, chunked prefill)."""
    vllm_max_num_seqs: int = 256
    """vLLM's default max_num_seqs on this GPU: the largest batch cap a default deployment allows."""
    batch_grid_max: int = 64
    """Largest batch cap of the default profiling grid (`pals.sim.steady.default_batch_grid`)."""
    physics: PhysicsParams = field(default_factory=PhysicsParams, hash=False)
    """The step model's tunables for this GPU (the preset's `physics` block over `PhysicsParams()`)."""
    sources: dict[str, str] = field(default_factory=dict, hash=False, compare=False, repr=False)
    """Field -> where its value comes from (tagged), as the preset file states it."""

    def __post_init__(self) -> None:
        if not 0 < self.min_sm_clock_mhz < self.max_sm_clock_mhz:
            raise ConfigError(f"{self.name}: SM clock range {self.min_sm_clock_mhz}-{self.max_sm_clock_mhz} MHz is empty")
        if not 0 < self.power_limit_min_w <= self.power_limit_max_w:
            raise ConfigError(f"{self.name}: power-limit range {self.power_limit_min_w}-{self.power_limit_max_w} W is empty")
        if not 0 < self.idle_bare_w <= self.idle_context_w < self.power_limit_min_w:
            raise ConfigError(f"{self.name}: need 0 < idle_bare_w <= idle_context_w < power_limit_min_w")
        for eta_name in ("eta_compute", "eta_memory"):
            if not 0 < getattr(self, eta_name) <= 1:
                raise ConfigError(f"{self.name}: {eta_name} must be in (0, 1], got {getattr(self, eta_name)}")
        if not self.allreduce_busbw_bytes_per_s:
            raise ConfigError(f"{self.name}: allreduce_busbw_bytes_per_s needs at least one group size")
        if self.vllm_max_num_batched_tokens < self.vllm_max_num_seqs:
            raise ConfigError(f"{self.name}: vllm_max_num_batched_tokens must be >= vllm_max_num_seqs, as vLLM requires")
        if not 1 <= self.batch_grid_max <= self.vllm_max_num_seqs:
            raise ConfigError(f"{self.name}: batch_grid_max must be in 1..vllm_max_num_seqs")
        if self.physics.busy_floor_frac_tdp * self.tdp_w < self.idle_bare_w:
            raise ConfigError(f"{self.name}: physics busy_floor_frac_tdp x tdp_w must be at least idle_bare_w")

    def allreduce_busbw(self, num_gpus: int) -> float:
        """Bus bandwidth of an all-reduce over `num_gpus` GPUs: the measured value of the
        nearest tabled group size not below it (the largest tabled one beyond the table). Units: B/s."""
        table = self.allreduce_busbw_bytes_per_s
        sizes = sorted(table)
        for size in sizes:
            if size >= num_gpus:
                return table[size]
        return table[sizes[-1]]

    def clock_grid_mhz(self) -> list[float]:
        """Supported SM clocks, lowest first."""
        grid = []
        clock = self.min_sm_clock_mhz
        while clock < self.max_sm_clock_mhz - 1e-9:
            grid.append(clock)
            clock += self.sm_clock_step_mhz
        grid.append(self.max_sm_clock_mhz)
        return grid


# ------------------------------------------------------------------ preset files

# JSON key -> (GpuSpec field, scale to SI, kind). Keys carry their units; the spec holds SI values.
_KEYS: dict[str, tuple[str, float, str]] = {
    "peak_bf16_tflops": ("peak_bf16_flops", _TF, "positive"),
    "hbm_bandwidth_gb_per_s": ("hbm_bandwidth_bytes_per_s", _GB, "positive"),
    "memory_mib": ("memory_bytes", _MIB, "positive"),
    "link_bandwidth_gb_per_s": ("link_bandwidth_bytes_per_s", _GB, "positive"),
    "nvlink": ("nvlink", 1.0, "bool"),
    "tdp_w": ("tdp_w", 1.0, "positive"),
    "power_limit_min_w": ("power_limit_min_w", 1.0, "positive"),
    "power_limit_max_w": ("power_limit_max_w", 1.0, "positive"),
    "max_sm_clock_mhz": ("max_sm_clock_mhz", 1.0, "positive"),
    "min_sm_clock_mhz": ("min_sm_clock_mhz", 1.0, "positive"),
    "sm_clock_step_mhz": ("sm_clock_step_mhz", 1.0, "positive"),
    "idle_bare_w": ("idle_bare_w", 1.0, "positive"),
    "idle_context_w": ("idle_context_w", 1.0, "positive"),
    "eta_compute": ("eta_compute", 1.0, "positive"),
    "eta_memory": ("eta_memory", 1.0, "positive"),
    "allreduce_latency_us": ("allreduce_latency_s", 1e-6, "nonnegative"),
    "vllm_max_num_batched_tokens": ("vllm_max_num_batched_tokens", 1.0, "int"),
    "vllm_max_num_seqs": ("vllm_max_num_seqs", 1.0, "int"),
    "batch_grid_max": ("batch_grid_max", 1.0, "int"),
}
_OPTIONAL = {"sm_clock_step_mhz": 15.0, "vllm_max_num_batched_tokens": 2048, "vllm_max_num_seqs": 256,
             "batch_grid_max": 64}
_OTHER_KEYS = {"format", "version", "name", "description", "allreduce_busbw_gb_per_s", "physics", "sources"}


def _number(file: Path, key: str, value: Any, kind: str) -> Any:
    fix = f"fix \"{key}\" in {file}"
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"GPU preset {file}: \"{key}\" must be true or false, got {value!r}; {fix}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"GPU preset {file}: \"{key}\" must be a number, got {value!r}; {fix}")
    if kind == "int" and (value != int(value) or value < 1):
        raise ConfigError(f"GPU preset {file}: \"{key}\" must be a positive integer, got {value!r}; {fix}")
    if (kind == "positive" and value <= 0) or value < 0:
        raise ConfigError(f"GPU preset {file}: \"{key}\" must be positive, got {value!r}; {fix}")
    return int(value) if kind == "int" else float(value)


def gpu_from_dict(data: Any, file: Path | str = "<GPU preset>") -> GpuSpec:
    """Build a `GpuSpec` from a preset file's JSON object.

    Raises:
        ConfigError: one line naming the file, the field and the fix.
    """
    file = Path(file)
    if not isinstance(data, dict):
        raise ConfigError(f"GPU preset {file}: expected a JSON object at the top level")
    if data.get("format") != GPU_FORMAT or data.get("version") != GPU_VERSION:
        raise ConfigError(f"GPU preset {file}: needs \"format\": \"{GPU_FORMAT}\" and \"version\": {GPU_VERSION}; "
                          "copy the layout of a built-in preset (pals/data/gpus/*.json)")
    unknown = sorted(set(data) - set(_KEYS) - _OTHER_KEYS)
    if unknown:
        raise ConfigError(f"GPU preset {file}: unknown field(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(set(_KEYS) | _OTHER_KEYS))}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"GPU preset {file}: \"name\" must be a non-empty string (what --gpu takes)")
    values: dict[str, Any] = {"name": name.strip()}
    for key, (attr, scale, kind) in _KEYS.items():
        if key not in data:
            if key in _OPTIONAL:
                values[attr] = _OPTIONAL[key]
                continue
            raise ConfigError(f"GPU preset {file}: missing \"{key}\"; add it (units are in the name)")
        number = _number(file, key, data[key], kind)
        values[attr] = number * scale if kind not in ("bool", "int") else number
    busbw = data.get("allreduce_busbw_gb_per_s")
    if not isinstance(busbw, dict) or not busbw:
        raise ConfigError(f"GPU preset {file}: \"allreduce_busbw_gb_per_s\" must map group sizes to GB/s, "
                          "e.g. {\"2\": 172, \"4\": 190, \"8\": 198}")
    table: dict[int, float] = {}
    for size, value in busbw.items():
        if not str(size).isdigit() or int(size) < 2:
            raise ConfigError(f"GPU preset {file}: allreduce_busbw_gb_per_s key {size!r} must be a group size >= 2")
        table[int(size)] = _number(file, f"allreduce_busbw_gb_per_s.{size}", value, "positive") * _GB
    values["allreduce_busbw_bytes_per_s"] = table
    values["physics"] = physics_from_mapping(data.get("physics") or {}, where=f"GPU preset {file} \"physics\"")
    sources = data.get("sources") or {}
    if not isinstance(sources, dict):
        raise ConfigError(f"GPU preset {file}: \"sources\" must map field names to citations")
    values["sources"] = {str(k): str(v) for k, v in sources.items()}
    try:
        return GpuSpec(**values)
    except ConfigError as error:
        raise ConfigError(f"GPU preset {file}: {error}") from None


def load_gpu_file(path: str | Path) -> GpuSpec:
    """Read and validate one GPU preset file.

    Raises:
        ConfigError: unreadable file, bad JSON, or a bad field (one line naming the fix).
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"GPU preset {file} does not exist; give a preset name or the path of a preset JSON") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"GPU preset {file} cannot be read ({error})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"GPU preset {file} is not valid JSON ({error.msg}, line {error.lineno}); fix the file") from None
    return gpu_from_dict(data, file)


def _builtin_presets() -> dict[str, GpuSpec]:
    folder = resources.files("pals") / "data" / "gpus"
    presets = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            spec = gpu_from_dict(json.loads(entry.read_text(encoding="utf-8")), Path("pals/data/gpus") / entry.name)
            presets[spec.name] = spec
    return presets


GPU_PRESETS: dict[str, GpuSpec] = _builtin_presets()
"""The built-in presets by name (`pals/data/gpus/*.json`)."""


def user_presets() -> dict[str, GpuSpec]:
    """Presets from the directories in `PALS_GPU_PRESETS_DIR` (read on every call; later directories win).

    Raises:
        ConfigError: a directory that does not exist, or a bad preset file in one.
    """
    found: dict[str, GpuSpec] = {}
    for folder in filter(None, os.environ.get(PRESETS_DIR_ENV, "").split(os.pathsep)):
        directory = Path(folder)
        if not directory.is_dir():
            raise ConfigError(f"{PRESETS_DIR_ENV} names {directory}, which is not a directory; fix or unset it")
        for file in sorted(directory.glob("*.json")):
            spec = load_gpu_file(file)
            found[spec.name] = spec
    return found


def all_presets() -> dict[str, GpuSpec]:
    """Built-in presets, with the user's (`PALS_GPU_PRESETS_DIR`) added or replacing them by name."""
    return {**GPU_PRESETS, **user_presets()}


def get_gpu(name: str) -> GpuSpec:
    """Look up a GPU preset by name (case-insensitively), or load a preset file by path.

    Raises:
        ConfigError: unknown name (the message lists the known ones), or a bad preset file.
    """
    wanted = str(name).strip()
    if wanted.lower().endswith(".json"):
        return load_gpu_file(wanted)
    presets = all_presets()
    for key, spec in presets.items():
        if key.lower() == wanted.lower():
            return spec
    raise ConfigError(
        f"unknown GPU '{name}'; known GPUs: {', '.join(presets)} "
        f"(or pass a preset JSON path, or add one in ${PRESETS_DIR_ENV})"
    )
