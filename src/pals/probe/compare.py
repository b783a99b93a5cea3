"""Measured beside simulated: every probe row as `pals calibrate` reads it, next to the simulator's estimate.

The rows are read back through `pals.calibration.points.read_points` (so the table shows exactly what
calibrate would fit) and simulated with `pals.calibration.simulate.estimate` (the steady-state static-batch
estimate, `pals.sim.steady.static_batch`) on the GPU preset's physics, or on a physics file.

    python -m pals.probe.compare profile.csv --gpu H200 [--physics physics.json]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from pals.calibration.points import read_points
from pals.calibration.simulate import StepModels, estimate
from pals.errors import PalsError
from pals.sim.hardware import GpuSpec, get_gpu
from pals.sim.physics import load_physics

QUANTITIES: tuple[tuple[str, str, float], ...] = (
    ("throughput_tps", "throughput tok/s", 1.0),
    ("gpu_power_w", "GPU power W", 1.0),
    ("prefill_power_w", "prefill power W", 1.0),
    ("decode_power_w", "decode power W", 1.0),
    ("tpot_p50_s", "TPOT ms", 1e3),
    ("ttft_p50_s", "TTFT ms", 1e3),
)
"""(quantity, heading with the unit shown, scale to that unit) in table order."""


@dataclass(frozen=True)
class Compared:
    """One row: a point, its measured and simulated values per quantity."""

    label: str
    measured: dict[str, float]
    simulated: dict[str, float]

    def error(self, quantity: str) -> float:
        """(simulated - measured) / measured; NaN where either is missing."""
        m, s = self.measured[quantity], self.simulated[quantity]
        return (s - m) / m if math.isfinite(m) and math.isfinite(s) and m != 0 else math.nan


def compare(csv_path: str | Path, gpu: str | GpuSpec, physics_path: str | Path | None = None) -> list[Compared]:
    """Every row of a probe CSV beside the simulator's estimate on `gpu` (physics file optional)."""
    spec = get_gpu(gpu) if isinstance(gpu, str) else gpu
    params = load_physics(physics_path, spec) if physics_path else spec.physics
    models = StepModels(spec, params)
    out = []
    for point in read_points(csv_path, gpu=spec.name):
        sim = estimate(point, models)
        out.append(Compared(point.label, {q: point.measured(q) for q, _, _ in QUANTITIES},
                            {q: sim.value(q) for q, _, _ in QUANTITIES}))
    return out


def table_text(rows: list[Compared]) -> str:
    """Fixed-width: per quantity measured / simulated / error %, then the mean absolute error per quantity."""
    head = f"{'configuration':<44}" + "".join(f" {heading:>24}" for _, heading, _ in QUANTITIES)
    sub = f"{'':<44}" + "".join(f" {'meas':>8}{'sim':>8}{'err':>8}" for _ in QUANTITIES)
    lines = [head, sub]
    for r in rows:
        cells = []
        for q, _, scale in QUANTITIES:
            cells.append(f" {_num(r.measured[q] * scale):>8}{_num(r.simulated[q] * scale):>8}{_pct(r.error(q)):>8}")
        lines.append(f"{r.label[:44]:<44}" + "".join(cells))
    summary = []
    for q, heading, _ in QUANTITIES:
        errors = [abs(r.error(q)) for r in rows if math.isfinite(r.error(q))]
        if errors:
            summary.append(f"{heading.rsplit(' ', 1)[0]} {100 * sum(errors) / len(errors):.0f} %")
    lines.append("mean |error|: " + ("; ".join(summary) if summary else "-"))
    return "\n".join(lines)


def _num(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:+.0f}%"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pals.probe.compare", description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="a probe profile (or any calibration CSV)")
    parser.add_argument("--gpu", required=True, help="GPU preset to simulate")
    parser.add_argument("--physics", default=None, help="physics file (pals calibrate --out) instead of the preset's")
    args = parser.parse_args(argv)
    try:
        print(table_text(compare(args.csv, args.gpu, args.physics)))
    except PalsError as error:
        print(f"pals.probe.compare: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
