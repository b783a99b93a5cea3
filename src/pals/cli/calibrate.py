"""`pals calibrate`: fit the simulator's step physics to measured points and write physics.json."""

from __future__ import annotations

import shlex
import sys

from pals.cli._common import add_command, positive_int
from pals.errors import ConfigError

DESCRIPTION = """\
Fit the simulated GPU's physics (power terms, efficiencies, overheads) to
measurements, so that the simulator reproduces *your* hardware. Input: a
profile (`pals profile --node vllm ... --out real.csv`: a few GPU-minutes of a
saturating load at a few caps and batch caps is enough) or a plain CSV with the
profile's column names (num_gpus, tp, power_cap_w, batch_cap,
mean_prompt_tokens, mean_output_tokens, throughput_tps, gpu_power_w; optional
model, gpu, tpot_p50_s, ttft_p50_s, prefill_power_w, decode_power_w, source,
batching, engine), or a `pals probe` CSV (its prefill and decode windows'
power are fitted apart).

The fit is bounded least squares with a prior toward the GPU preset's values:
parameters the data cannot see stay where they were, and the printout says
which. It prints every point beside its fitted value, the held-out error of a
cross-validation, and the parameters the data did not constrain. Use the result
with --physics physics.json in pals sweep / profile --node sim / run / demo /
experiment.

Examples:
  pals calibrate real.csv --gpu H100-SXM --out h100-physics.json
  pals calibrate points.csv --gpu A100-SXM4-80GB --model Llama-3-8B/config.json --out physics.json
  pals calibrate --shipped --gpu A100-SXM4-80GB --out a100.json   (refit the shipped default)
"""


def add_parser(subparsers) -> None:
    parser = add_command(subparsers, "calibrate", "fit the simulator's physics to measured points (physics.json)",
                         DESCRIPTION, run)
    parser.add_argument("measured", nargs="?", metavar="MEASURED.csv",
                        help="a profile or a CSV with the profile's column names")
    parser.add_argument("--gpu", required=True, help="GPU preset the points were measured on (or a preset JSON)")
    parser.add_argument("--model", default=None,
                        help="model of every row (preset, HF id or config.json path); else the CSV's model column")
    parser.add_argument("--out", required=True, metavar="physics.json", help="physics file to write")
    parser.add_argument("--shipped", action="store_true",
                        help="fit the calibration data shipped with pals for --gpu, with its per-engine settings")
    parser.add_argument("--free", default=None, metavar="P[,P...]",
                        help="parameters to fit (default: the power terms, efficiencies, overheads and clock curve)")
    parser.add_argument("--per-engine", default=None, metavar="P[,P...]",
                        help="parameters fitted separately for each engine/source in the data (e.g. "
                        "step_overhead_s,kernel_floor_s when points come from different serving stacks)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (0: skip; default 5)")
    parser.add_argument("--max-evals", type=positive_int, default=80, help="evaluation budget of the fit (default 80)")
    parser.add_argument("--quiet", action="store_true", help="print the summary only, not every point")


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def run(args) -> int:
    from pals.calibration.fit import DEFAULT_FREE, fit_physics
    from pals.calibration.points import read_points, shipped_points
    from pals.calibration.summary import physics_json, residual_table, shipped_sources, summary_text
    from pals.core.io import atomic_write_text
    from pals.sim.hardware import get_gpu

    gpu = get_gpu(args.gpu)
    if args.shipped == bool(args.measured):
        raise ConfigError("give either MEASURED.csv or --shipped (the data shipped with pals), not both or neither")
    free = _names(args.free)
    per_engine_names = _names(args.per_engine)
    if args.shipped:
        points = shipped_points(gpu.name)
        settings = shipped_sources().get("fits", {}).get(gpu.name)
        if not points or settings is None:
            raise ConfigError(f"no shipped calibration data for {gpu.name}; its physics is carried over from the "
                              "A100 fit (docs/calibration.md section 14): measure it and pass the file")
        free = settings["free"] if free is None else free
        per_engine = settings["per_engine"] if per_engine_names is None else {
            e: per_engine_names for e in {p.engine_key for p in points}}
        data = "pals/data/measurements (shipped)"
    else:
        points = read_points(args.measured, gpu=gpu.name, model=args.model)
        per_engine = {e: per_engine_names for e in {p.engine_key for p in points}} if per_engine_names else None
        data = str(args.measured)
    free = list(DEFAULT_FREE) if free is None else free
    print(f"fitting {len(free)} shared parameter(s) of {gpu.name} to {len(points)} point(s) ...", file=sys.stderr)
    result = fit_physics(points, gpu, free=free, per_engine=per_engine, folds=args.folds, max_nfev=args.max_evals)
    if not args.quiet:
        print(residual_table(result))
    print(summary_text(result))
    command = " ".join(["pals calibrate", shlex.quote(args.measured) if args.measured else "--shipped",
                        "--gpu", shlex.quote(gpu.name)] + (["--model", shlex.quote(args.model)] if args.model else [])
                       + ["--free", ",".join(free)] + (["--per-engine", args.per_engine] if args.per_engine else []))
    atomic_write_text(args.out, physics_json(result, data, command))
    print(f"wrote {args.out} ({len(result.changed())} value(s) differ from the {gpu.name} preset)", file=sys.stderr)
    return 0
