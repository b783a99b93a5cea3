#!/usr/bin/env python3
"""Check the A100 -> H100 power transfer against points measured on both GPUs with one harness.

    PYTHONPATH=src python scripts/transfer_check.py

The H100-SXM preset's power terms are the A100 fit carried over by `pals.calibration.fit.transfer_physics`
(docs/calibration.md §14.5). The shipped `llm-inference-bench` points measure the same static batches (model,
batch, 1024/1024 tokens) on an H100-SXM and an A100-SXM4-40GB with the same vLLM harness, so the ratio of their
powers tests the transfer with the harness's own errors (engine overheads, its NVML sampling) largely cancelled.
Each point is simulated with its GPU preset's physics and the engine overheads fitted for that GPU
(sources.json `engine_params`). Prints one row per pair and a verdict computed from the ratio errors.
"""

from __future__ import annotations

import math
from dataclasses import replace

from pals.calibration.points import CalibrationPoint, shipped_points
from pals.calibration.simulate import StepModels, estimate
from pals.calibration.summary import shipped_sources
from pals.sim.hardware import get_gpu

SOURCE = "llm-inference-bench"
TARGET, REFERENCE = "H100-SXM", "A100-SXM4-40GB"
TOLERANCE = 0.15
"""Issue 10's bar, applied to the power ratio."""


def _simulated_power_w(point: CalibrationPoint, engines: dict) -> float:
    gpu = get_gpu(point.gpu)
    params = replace(gpu.physics, **engines.get(gpu.name, {}).get(point.engine_key, {}))
    return estimate(point, StepModels(gpu, params)).gpu_power_w


def main() -> int:
    engines = shipped_sources().get("engine_params", {})
    points = [p for p in shipped_points() if p.source == SOURCE and math.isfinite(p.gpu_power_w)]
    by_key = {(p.gpu, p.model, p.batch_cap): p for p in points}
    rows = []
    for (gpu, model, batch), target in sorted(by_key.items()):
        reference = by_key.get((REFERENCE, model, batch))
        if gpu != TARGET or reference is None:
            continue
        measured = target.gpu_power_w / reference.gpu_power_w
        simulated = _simulated_power_w(target, engines) / _simulated_power_w(reference, engines)
        rows.append((model, batch, measured, simulated, simulated / measured - 1.0))
    if not rows:
        print(f"no {SOURCE} points measured on both {TARGET} and {REFERENCE}")
        return 1
    print(f"{'model':12s} {'batch':>5s} {'measured H100/A100 W':>21s} {'simulated':>10s} {'error':>8s}")
    for model, batch, measured, simulated, error in rows:
        print(f"{model:12s} {batch:5d} {measured:21.3f} {simulated:10.3f} {100 * error:+7.1f} %")
    errors = sorted(abs(r[4]) for r in rows)
    median, worst = errors[len(errors) // 2], errors[-1]
    verdict = (f"every pair within {100 * TOLERANCE:.0f} %" if worst <= TOLERANCE
               else f"{sum(e > TOLERANCE for e in errors)} pair(s) outside {100 * TOLERANCE:.0f} %")
    print(f"power ratio error: median {100 * median:.1f} %, max {100 * worst:.1f} % over {len(rows)} pairs: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
