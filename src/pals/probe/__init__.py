"""`pals probe`: measure a real GPU with a random-weight model, for `pals calibrate`.

A decode and prefill micro-benchmark on a model built from a Hugging Face config.json (transformers, random
weights, nothing downloaded), at batch 1-256 and at several power caps where they may be set, with the GPU's
energy read through PALS's GPU layer. The result is a calibration CSV (static-batch rows, docs/probe.md) and a
JSON host description. Modules, each with one job:

- `plan`: settings, the caps to try (`plan_caps`), which batches fit in memory (`batches_that_fit`);
- `measure`: timing and energy of one (cap, batch) point around a `Bench` (`measure_point`);
- `bench`: the torch side (`TorchBench`; torch is imported lazily, `require_torch`);
- `attention`: a decode attention that reads each KV head once (registered with transformers as `pals_probe`);
- `runner`: the caps x batches loop under `PowerLimitGuard`, with the time budget and OOM skips;
- `rows`: a measurement -> a calibration row; the CSV;
- `host`: GPU preset matching, the model column, the host description;
- `compare`: measured beside the simulator's estimate;
- `session`: one run end to end (what `pals probe` calls).

This package sits at the runtime level: it imports `pals.node`, `pals.sim` and `pals.calibration`; nothing
below imports it (import-linter contract `probe`).
"""
