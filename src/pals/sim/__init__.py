"""The simulated GPU serving node.

Modules, each with one job:

- `hardware`: GPU presets (`GpuSpec`, `get_gpu`), every constant with its source.
- `llm`: model architectures (`LlmSpec`, `get_llm`, `load_hf_config`) and their parameter counts.
- `step`: the per-engine-step cost and power model under a power cap (`StepModel`).
- `workload`, `engine`, `node`: request streams, the continuous-batching engine and `SimNode`.

The equations, switches and constants are described in docs/simulator.md.
"""
