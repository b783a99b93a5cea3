"""The step model's switches (`Mechanisms`) and tunables (`PhysicsParams`), and physics files.

Every GPU preset carries its own `PhysicsParams` (the `physics` block of its JSON file,
`pals.sim.hardware`); `PhysicsParams()` with no arguments is the A100-SXM4-80GB fit. A physics file
(what `pals calibrate` writes) overrides some of a preset's values:

    {"format": "pals-physics", "version": 1, "gpu": "H100-SXM",
     "params": {"mem_sm_activity": 0.52, "busy_floor_frac_tdp": 0.27}, "fit": {...}}

`load_physics(path, gpu)` returns the preset's physics with the file's values applied; it is what
`SimNodeSpec(params=...)` and `StepModel(params=...)` take. docs/simulator.md lists every field with
its source and status; docs/calibration.md §14 how the defaults were fitted.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from pals.core.io import dumps_json
from pals.errors import ConfigError

_GIB = 1024**3

PHYSICS_FORMAT = "pals-physics"
PHYSICS_VERSION = 1


@dataclass(frozen=True)
class Mechanisms:
    """Explicit switches for the mechanisms behind the paper's shapes (docs/calibration.md §7).

    Defaults are on; turning one off is how to see what it contributes.
    """

    per_step_limiter: bool = True
    """Assumption. Each step shape gets its own clock (the cap acts on every step). False: one clock held over
    a window of steps (`PowerLimiter`, long-window averaging). The long window loses the Qwen/OLMoE peak at 200 W."""
    bandwidth_scales_with_clock: bool = True
    """Assumption, against the decode sources (Splitwise, Illusion of Power Capping); arXiv 2604.11391 reports
    H100/H200 memory power moving with the cap. Effective HBM bandwidth falls as min(1, x / bandwidth_knee)."""
    collective_spin_power: bool = True
    """Assumption (unmeasured). NCCL kernels busy-poll, drawing spin_power_frac x SM power x g(f) during
    collectives; without it tokens/J of communication-heavy models only flattens above 200 W instead of falling."""
    kernel_launch_floor: bool = True
    """Assumption. Each layer takes at least kernels_per_layer x kernel_floor_s (small-batch steps)."""
    cpu_overhead: bool = True
    """Unmeasured, fitted. Per-step CPU / scheduling time (step_overhead_s + seq_overhead_s x sequences) at
    always-on power."""
    busy_floor: bool = True
    """Fitted (Splitwise A100 decode power against streamed bandwidth, docs/calibration.md §14). While the engine
    runs steps, the always-on power is P_bare + (P_busy - P_bare) x g(f) with P_busy = busy_floor_frac_tdp x TDP;
    off: the idle-with-context level (`GpuSpec.idle_context_w`) as before the recalibration."""


@dataclass(frozen=True)
class PhysicsParams:
    """Tunables of the step model. Defaults: the A100-SXM4-80GB fit (docs/calibration.md §14); every GPU preset
    carries its own set (`GpuSpec.physics`). Power terms are fractions of the GPU's TDP."""

    eta_compute: float | None = None
    """Override of `GpuSpec.eta_compute` (None: the GPU's)."""
    eta_memory: float | None = None
    """Override of `GpuSpec.eta_memory`."""
    eta_attention: float = 0.50
    """Assumption. Share of peak FLOP/s reached by attention kernels."""
    sm_power_frac_tdp: float = 0.8377
    """Fitted: SM dynamic power at full clock and full activity (P_sm), TDP fraction; a full-clock prefill
    then draws about TDP (Splitwise peaks 1.00-1.09 TDP, Zeus compute-bound jobs 0.9)."""
    busy_floor_frac_tdp: float = 0.2479
    """Fitted (P_busy): always-on power at full clock while steps run (clock tree, leakage at full voltage, uncore),
    TDP fraction. Splitwise A100 decode: ~121 W intercept against streamed bandwidth [D]."""
    hbm_power_frac_tdp: float = 0.3043
    """Fitted (P_hbm): HBM, PHY, L2 and fabric power at the full achieved bandwidth (eta_memory x spec), TDP
    fraction; it scales with the bytes moved. Lumped with k_m in the data (docs/calibration.md §14)."""
    mem_sm_activity: float = 0.3931
    """Fitted (k_m): SM activity of a memory-bound operator, as a share of full SM power (load/store issue at full
    clock). Not separable from P_hbm at one clock: the prior splits them."""
    spin_power_frac: float = 0.222
    """Unmeasured (c_w): SM power share burnt by NCCL spinning during collectives (0.1-0.6 pass; 0 fails)."""
    voltage_floor: float = 0.7884
    """Fitted to the Zeus cap tables with the recalibrated power terms (v0): relative voltage below the knee."""
    voltage_knee: float = 0.7844
    """Fitted to the Zeus cap tables (x_k): clock ratio where voltage starts rising linearly to 1 at the maximum clock."""
    bandwidth_knee: float = 1.0
    """Not sourced (x_bw): bandwidth factor is min(1, x / bandwidth_knee); >= 0.9 needed for the 200 W peak."""
    step_overhead_s: float = 0.86e-3
    """Unmeasured (o_step), fitted; <= 1.5 ms needed."""
    seq_overhead_s: float = 0.0
    """Unmeasured (o_seq): CPU time per running sequence per step. Units: s."""
    kernel_floor_s: float = 4e-6
    """Assumption: shortest kernel (CUDA graphs). Units: s."""
    kernel_floor_fixed_frac: float = 0.15
    """Assumption (k_fix): share of the kernel floor that does not speed up with the clock."""
    kernels_per_dense_layer: int = 14
    """Assumption: kernels one dense layer launches."""
    kernels_per_moe_layer: int = 18
    """Assumption: kernels one MoE layer launches."""
    allreduce_latency_s: float | None = None
    """Override of `GpuSpec.allreduce_latency_s`. Units: s."""
    internode_bandwidth_bytes_per_s: float = 25e9
    """Assumption: one HDR InfiniBand port (200 Gb/s) per GPU, for expert parallelism across nodes. Units: B/s."""
    internode_latency_s: float = 10e-6
    """Assumption: extra latency of a collective that crosses nodes. Units: s."""
    gpus_per_node: int = 4
    """PALS nodes: 4 GPUs. EP groups larger than this cross nodes."""
    activation_reserve_bytes: float = 2 * _GIB
    """Assumption: memory vLLM keeps for activations and CUDA graphs, per GPU. Units: B."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"PhysicsParams.{f.name} must be a finite number, got {value!r}")
            if value < 0:
                raise ConfigError(f"PhysicsParams.{f.name} must be non-negative, got {value}")
        for name in ("eta_compute", "eta_memory", "eta_attention"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ConfigError(f"PhysicsParams.{name} must be in (0, 1], got {value}")
        if not 0 < self.voltage_floor <= 1 or not 0 < self.voltage_knee < 1:
            raise ConfigError("PhysicsParams: voltage_floor must be in (0, 1] and voltage_knee in (0, 1)")
        if self.bandwidth_knee <= 0 or self.gpus_per_node < 1:
            raise ConfigError("PhysicsParams: bandwidth_knee must be > 0 and gpus_per_node >= 1")
        if not 0 < self.sm_power_frac_tdp <= 1.5 or self.busy_floor_frac_tdp > 1 or self.hbm_power_frac_tdp > 1:
            raise ConfigError(
                "PhysicsParams: sm_power_frac_tdp must be in (0, 1.5], busy_floor_frac_tdp and hbm_power_frac_tdp "
                "at most 1 (fractions of TDP)"
            )
        if self.mem_sm_activity > 1 or self.spin_power_frac > 1 or self.kernel_floor_fixed_frac > 1:
            raise ConfigError("PhysicsParams: mem_sm_activity, spin_power_frac and kernel_floor_fixed_frac are shares "
                              "in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        """Every field (None kept)."""
        return asdict(self)


PHYSICS_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(PhysicsParams))
_INT_FIELDS = {"kernels_per_dense_layer", "kernels_per_moe_layer", "gpus_per_node"}


def physics_from_mapping(values: Mapping[str, Any], base: PhysicsParams | None = None,
                         where: str = "physics") -> PhysicsParams:
    """`base` (default `PhysicsParams()`) with `values` applied; one clear error for a bad name or value.

    Raises:
        ConfigError: an unknown field (the message lists the known ones) or a bad value.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a JSON object of physics parameters, got {type(values).__name__}")
    unknown = sorted(set(values) - set(PHYSICS_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown physics parameter(s) {', '.join(unknown)}; "
                          f"known: {', '.join(PHYSICS_FIELDS)}")
    clean: dict[str, Any] = {}
    for name, value in values.items():
        if value is None and name in ("eta_compute", "eta_memory", "allreduce_latency_s"):
            clean[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: physics parameter {name} must be a number, got {value!r}")
        if name in _INT_FIELDS:
            if value != int(value):
                raise ConfigError(f"{where}: physics parameter {name} must be an integer, got {value!r}")
            value = int(value)
        clean[name] = value
    try:
        return replace(base if base is not None else PhysicsParams(), **clean)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


@dataclass(frozen=True)
class PhysicsFile:
    """A physics file: parameter overrides for one GPU preset, plus what the fit recorded."""

    gpu: str
    """The GPU preset the values were fitted for."""
    params: dict[str, Any]
    """Overrides of that preset's `PhysicsParams` (field name -> value)."""
    fit: dict[str, Any] = field(default_factory=dict)
    """Free-form record of the fit (data, residuals, date); not read back."""
    path: Path | None = None

    def params_for(self, gpu: Any) -> PhysicsParams:
        """The GPU's preset physics with this file's overrides.

        Raises:
            ConfigError: the file was fitted for another GPU.
        """
        name = getattr(gpu, "name", str(gpu))
        if name.strip().lower() != self.gpu.strip().lower():
            where = self.path if self.path is not None else "the physics file"
            raise ConfigError(
                f"{where} was fitted for {self.gpu}, not {name}; use --gpu {self.gpu}, or fit this GPU with "
                f"`pals calibrate MEASURED.csv --gpu {name} --out physics.json`"
            )
        base = getattr(gpu, "physics", None) or PhysicsParams()
        return physics_from_mapping(self.params, base, where=str(self.path or "physics file"))


def read_physics_file(path: str | Path) -> PhysicsFile:
    """Read and validate a physics file (values checked against `PhysicsParams`, not yet against a GPU).

    Raises:
        ConfigError: missing, unreadable or malformed file, wrong format/version, unknown or bad parameters.
    """
    file = Path(path)
    fix = f"write it with `pals calibrate MEASURED.csv --gpu GPU --out {file}`"
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"physics file {file} does not exist; {fix}") from None
    except IsADirectoryError:
        raise ConfigError(f"physics file {file} is a directory; pass the physics.json file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"physics file {file} cannot be read ({error}); {fix}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"physics file {file} is not valid JSON ({error.msg}, line {error.lineno}); {fix}") from None
    if not isinstance(data, dict) or data.get("format") != PHYSICS_FORMAT:
        raise ConfigError(f"{file} is not a PALS physics file (no \"format\": \"{PHYSICS_FORMAT}\"); {fix}")
    if data.get("version") != PHYSICS_VERSION:
        raise ConfigError(f"physics file {file} has version {data.get('version')!r}, this pals reads "
                          f"{PHYSICS_VERSION}; {fix}")
    gpu = data.get("gpu")
    if not isinstance(gpu, str) or not gpu.strip():
        raise ConfigError(f"physics file {file} names no \"gpu\"; {fix}")
    params = data.get("params", {})
    physics_from_mapping(params, where=f"physics file {file}")  # validate names and values now
    fit = data.get("fit", {})
    return PhysicsFile(gpu=gpu, params=dict(params), fit=fit if isinstance(fit, dict) else {}, path=file)


def load_physics(path: str | Path, gpu: Any = None) -> PhysicsParams:
    """The physics of a physics file: its GPU preset's `PhysicsParams` with the file's values applied.

    Args:
        path: a file `pals calibrate` wrote.
        gpu: the GPU it will be used with (a preset name or `GpuSpec`); when given it must match the file's.

    Raises:
        ConfigError: a bad file (see `read_physics_file`), an unknown GPU, or a GPU other than the file's.
    """
    from pals.sim.hardware import get_gpu

    physics = read_physics_file(path)
    spec = get_gpu(physics.gpu) if gpu is None else (get_gpu(gpu) if isinstance(gpu, str) else gpu)
    return physics.params_for(spec)


def physics_file_text(gpu: str, params: Mapping[str, Any], fit: Mapping[str, Any] | None = None) -> str:
    """The JSON text of a physics file (validated before it is returned)."""
    physics_from_mapping(params, where="physics to write")
    data = {"format": PHYSICS_FORMAT, "version": PHYSICS_VERSION, "gpu": gpu, "params": dict(params),
            "fit": dict(fit or {})}
    return dumps_json(data, indent=2, sort_keys=False) + "\n"
