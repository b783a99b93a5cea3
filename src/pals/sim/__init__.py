"""The simulated GPU serving node.

Modules, each with one job:

- `hardware`: GPU presets as data (`GpuSpec`, `get_gpu`; `pals/data/gpus/*.json`, `PALS_GPU_PRESETS_DIR`), every
  constant with its source.
- `physics`: the step model's switches and tunables (`Mechanisms`, `PhysicsParams`) and physics files
  (`load_physics`: what `pals calibrate` writes).
- `llm`: model architectures (`LlmSpec`, `get_llm`, `load_hf_config`) and their parameter counts.
- `step`: the per-engine-step cost and power model under a power cap (`StepModel`).
- `steady`: steady-state estimates of a configuration from the step model (continuous batching, static batch).
- `grid`: default batch-cap grids that scale with the GPU and the KV cache (`default_batch_grid`).
- `workload`, `engine`, `node`: request streams, the continuous-batching engine and `SimNode`.

The equations, switches and constants are described in docs/simulator.md.
"""
