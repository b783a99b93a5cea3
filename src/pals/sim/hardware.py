"""GPU presets for the simulator.

Every constant names its source; docs/calibration.md §3 has the full citations.
Tags: [P] primary (vendor sheet, nvidia-smi dump, raw data file); [Q] a quote
from a paper not yet checked against the PDF; [S] secondary (blog, summary);
[D] derived by us from cited data; "assumption" where nothing was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pals.errors import ConfigError

_MIB = 1024**2
_GB = 1e9
_TF = 1e12


@dataclass(frozen=True)
class GpuSpec:
    """Constants of one GPU model. Units are in the field names (W, MHz, bytes, s)."""

    name: str
    peak_bf16_flops: float
    """Dense BF16 tensor-core peak. Units: FLOP/s."""
    hbm_bandwidth_bytes_per_s: float
    """Spec memory bandwidth. Units: B/s."""
    memory_bytes: float
    """Device memory as nvidia-smi reports it. Units: B."""
    link_bandwidth_bytes_per_s: float
    """GPU-to-GPU link, total of both directions (NVLink, or PCIe without it). Units: B/s."""
    nvlink: bool
    tdp_w: float
    """Default power limit. Units: W."""
    power_limit_min_w: float
    """Lowest limit NVML accepts. Units: W."""
    power_limit_max_w: float
    """Highest limit NVML accepts. Units: W."""
    max_sm_clock_mhz: float
    min_sm_clock_mhz: float
    """Lowest supported SM clock (the clock grid's floor; not verified, see sources)."""
    idle_bare_w: float
    """Idle draw with no CUDA context (deep idle). Units: W."""
    idle_context_w: float
    """Idle draw with the serving engine's context and weights loaded. Units: W."""
    eta_compute: float
    """Achieved share of peak FLOP/s in large GEMMs (roofline compute efficiency)."""
    eta_memory: float
    """Achieved share of spec HBM bandwidth (roofline memory efficiency)."""
    allreduce_latency_s: float
    """Fixed cost of one intra-node all-reduce of a decode-sized message. Units: s."""
    allreduce_busbw_bytes_per_s: dict[int, float] = field(hash=False)
    """Large-message all-reduce bus bandwidth by group size (2, 4, 8 GPUs). Units: B/s."""
    sm_clock_step_mhz: float = 15.0
    """Spacing of the supported SM clocks (assumption: `nvidia-smi -q -d SUPPORTED_CLOCKS` not read)."""

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


# A100 efficiencies: the tuned set of docs/calibration.md §7 (eta_c 0.65: Vidur prefill layers reach 68-72 %,
# cuBLASLt 82 %; eta_m 0.83: STREAM triad 1.70 of 2.04 TB/s) [P -> D]. 0.70-0.80 / 0.75 also pass its checks.
# A100 all-reduce: vidur data/profiling/network/a100_dgx/all_reduce.csv, small messages 20-60 us,
# large-message busbw 172 / 190 / 198 GB/s for 2 / 4 / 8 GPUs [D]; latency 60 us is the tuned value.
_A100_ALLREDUCE = {2: 172 * _GB, 4: 190 * _GB, 8: 198 * _GB}
# H100 all-reduce: vidur h100_dgx all_reduce.csv: 30-40 us, busbw 290 / 340 / 379 GB/s [D].
_H100_ALLREDUCE = {2: 290 * _GB, 4: 340 * _GB, 8: 379 * _GB}

GPU_PRESETS: dict[str, GpuSpec] = {
    "A100-SXM4-40GB": GpuSpec(
        name="A100-SXM4-40GB",
        peak_bf16_flops=312 * _TF,  # NVIDIA A100 datasheet r4 [P]
        hbm_bandwidth_bytes_per_s=1555 * _GB,  # HBM2, datasheet [P]
        memory_bytes=40960 * _MIB,  # nvidia-smi -q, NVIDIA/nvidia-docker#1648 [P]
        link_bandwidth_bytes_per_s=600 * _GB,  # NVLink3, 12 links (fudzilla 50832) [S]
        nvlink=True,
        tdp_w=400.0,  # datasheet; PALS section 3.1 [P]
        power_limit_min_w=100.0,  # nvidia-smi -q Min Power Limit, nvidia-docker#1648 [P]
        power_limit_max_w=400.0,  # same dump [P]
        max_sm_clock_mhz=1410.0,  # same dump [P]
        min_sm_clock_mhz=210.0,  # assumption: supported-clocks table not read
        idle_bare_w=53.7,  # Vadari arXiv 2605.23918 [Q]
        idle_context_w=60.0,  # vLLM loaded: 59-62 W (chuyishang/inference-energy) [S]; tuned set
        eta_compute=0.65,
        eta_memory=0.83,
        allreduce_latency_s=60e-6,
        allreduce_busbw_bytes_per_s=_A100_ALLREDUCE,
    ),
    "A100-SXM4-80GB": GpuSpec(
        name="A100-SXM4-80GB",
        peak_bf16_flops=312 * _TF,  # datasheet r4 [P]
        hbm_bandwidth_bytes_per_s=2039 * _GB,  # HBM2e, datasheet [P]
        memory_bytes=81920 * _MIB,  # nvidia-smi -q, NVIDIA/DCGM#152 [P]
        link_bandwidth_bytes_per_s=600 * _GB,  # NVLink3 [S]
        nvlink=True,
        tdp_w=400.0,  # [P]
        power_limit_min_w=100.0,  # DCGM#152 [P]
        power_limit_max_w=400.0,  # DCGM#152 [P]
        max_sm_clock_mhz=1410.0,  # DCGM#152 [P]
        min_sm_clock_mhz=210.0,  # assumption
        idle_bare_w=53.7,  # Vadari [Q] (measured on an A100; variant not stated)
        idle_context_w=60.0,  # vLLM loaded 59-62 W [S]; tuned set
        eta_compute=0.65,
        eta_memory=0.83,
        allreduce_latency_s=60e-6,
        allreduce_busbw_bytes_per_s=_A100_ALLREDUCE,
    ),
    "H100-SXM": GpuSpec(
        name="H100-SXM",
        peak_bf16_flops=989.4 * _TF,  # glennklockwood.com/garden/processors/h100 (dense) [S]
        hbm_bandwidth_bytes_per_s=3350 * _GB,  # HBM3 [S]
        memory_bytes=81559 * _MIB,  # H100 80GB as nvidia-smi reports it [S]
        link_bandwidth_bytes_per_s=900 * _GB,  # NVLink4 [S]
        nvlink=True,
        tdp_w=700.0,  # [P]
        power_limit_min_w=200.0,  # Hopper SXM nvidia-smi -q dump (H800, same board) [P]
        power_limit_max_w=700.0,  # same dump [P]
        max_sm_clock_mhz=1980.0,  # same dump [P]
        min_sm_clock_mhz=345.0,  # lowest clock seen in that dump (idle); assumption as the floor
        idle_bare_w=71.8,  # Vadari [Q]
        idle_context_w=121.7,  # Vadari, CUDA context pins the clock [Q]
        eta_compute=0.74,  # vidur h100 prefill-sized layers 74-78 % [D]
        eta_memory=0.80,  # vidur h100 decode-sized layers 75-80 % [D]
        allreduce_latency_s=35e-6,  # vidur h100_dgx 30-40 us [D]
        allreduce_busbw_bytes_per_s=_H100_ALLREDUCE,
    ),
    "H200": GpuSpec(
        name="H200",
        peak_bf16_flops=989 * _TF,  # same GH100 die; aiwiki nvidia_h200 (1,979 TF is sparse) [S]
        hbm_bandwidth_bytes_per_s=4800 * _GB,  # HBM3e [S]
        memory_bytes=143771 * _MIB,  # H200 141GB as nvidia-smi reports it [S]
        link_bandwidth_bytes_per_s=900 * _GB,  # NVLink4 [S]
        nvlink=True,
        tdp_w=700.0,  # [S]
        power_limit_min_w=200.0,  # probably as H100, not checked (assumption)
        power_limit_max_w=700.0,  # [S]
        max_sm_clock_mhz=1980.0,  # ~1980 MHz [S]
        min_sm_clock_mhz=345.0,  # assumption, as H100
        idle_bare_w=80.3,  # [S]
        idle_context_w=121.7,  # assumption: H100's context idle (same die)
        eta_compute=0.74,  # as H100 [D]
        eta_memory=0.86,  # STREAM 4.15 of 4.8 TB/s, Azure ND_H200_v5_results.md [P]
        allreduce_latency_s=35e-6,  # as H100 [D]
        # Same NVLink4 fabric as H100 (vidur [D]); Azure's 480 GB/s (8 GPUs, 8 GB message) [P] is an upper bound.
        allreduce_busbw_bytes_per_s=_H100_ALLREDUCE,
    ),
    "L40S": GpuSpec(
        name="L40S",
        peak_bf16_flops=362 * _TF,  # NVIDIA datasheet table (mullet.se 355414), dense [S]
        hbm_bandwidth_bytes_per_s=864 * _GB,  # GDDR6 [S]
        memory_bytes=46068 * _MIB,  # 48 GB board as nvidia-smi reports it [S]
        link_bandwidth_bytes_per_s=64 * _GB,  # PCIe Gen4 x16, both directions; no NVLink [S]
        nvlink=False,
        tdp_w=350.0,  # [S]
        power_limit_min_w=150.0,  # not known; 100-150 W floors seen on 350 W Ada boards (assumption)
        power_limit_max_w=350.0,  # [S]
        max_sm_clock_mhz=2520.0,  # boost [S]
        min_sm_clock_mhz=210.0,  # assumption
        idle_bare_w=35.6,  # Vadari [Q]
        idle_context_w=102.1,  # Vadari [Q]
        eta_compute=0.65,  # assumption: as A100
        eta_memory=0.80,  # assumption
        allreduce_latency_s=50e-6,  # assumption (PCIe, no NVLink)
        # assumption: ~1/3 of the 64 GB/s PCIe total survives as all-reduce bus bandwidth.
        allreduce_busbw_bytes_per_s={2: 22 * _GB, 4: 20 * _GB, 8: 18 * _GB},
    ),
}


def get_gpu(name: str) -> GpuSpec:
    """Look up a GPU preset by name, case-insensitively.

    Raises:
        ConfigError: unknown name; the message lists the known ones.
    """
    wanted = name.strip().lower()
    for key, spec in GPU_PRESETS.items():
        if key.lower() == wanted:
            return spec
    raise ConfigError(f"unknown GPU '{name}'; known GPUs: {', '.join(GPU_PRESETS)}")
