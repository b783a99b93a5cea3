"""Default batch-cap grids that scale with the GPU and the engine's KV cache."""

from __future__ import annotations

from pals.core.paper import PAPER_BATCH_CAPS
from pals.errors import ConfigError
from pals.sim.hardware import GpuSpec


def default_batch_grid(gpu: GpuSpec, kv_capacity_tokens: int, mean_context_tokens: float) -> tuple[int, ...]:
    """Batch caps to profile on `gpu`: the paper's grid (1, 4, 8, 16, 32, 64), extended by powers of two up to the
    GPU's `batch_grid_max` (256 on H100/H200, 64 on A100/L40S), keeping only batches whose sequences fit in the
    KV cache at the mean context (prompt + half the output); at least batch 1.

    Args:
        gpu: the GPU preset.
        kv_capacity_tokens: KV-cache capacity of one engine replica (`StepModel.kv_cache_tokens()`). Units: tokens.
        mean_context_tokens: mean tokens a running sequence holds. Units: tokens.

    Raises:
        ConfigError: a non-positive capacity or context.
    """
    if kv_capacity_tokens < 1 or not mean_context_tokens > 0:
        raise ConfigError(f"default_batch_grid needs a KV capacity >= 1 and a positive mean context, got "
                          f"{kv_capacity_tokens} and {mean_context_tokens}")
    grid = list(PAPER_BATCH_CAPS)
    batch = grid[-1] * 2
    while batch <= gpu.batch_grid_max:
        grid.append(batch)
        batch *= 2
    fits = kv_capacity_tokens / mean_context_tokens
    kept = tuple(b for b in grid if b <= gpu.batch_grid_max and b <= fits)
    return kept or (1,)
