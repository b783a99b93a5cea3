"""`pals sweep`: a power cap x batch cap sweep on the simulated node, with a table and plots.

A sweep is a profile run on the simulated node (same profiler, same file
format), followed by a printed table and the characterization figures (the
PALS paper's Figures 1 and 3) written beside the CSV.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pals.cli._common import add_command
from pals.errors import ConfigError
from pals.cli.profile import add_deployment_arguments, build_sim, format_table, measure_grid

DESCRIPTION = """\
Sweep every (power cap, batch cap) pair on the simulated node, print a table,
write the CSV (the profile format, readable by `pals fit`) and PNG plots beside
it: tokens/J vs cap, tokens/J vs batch, and the Pareto frontiers of throughput
vs tokens/J for batch-only, cap-only and joint configurations.

The load is saturating by default (requests always waiting); --rate R offers a
fixed Poisson load of R requests/s instead (the PALS paper's batch results fit
a fixed moderate load better than saturation).

Examples:
  pals sweep --model Mixtral-8x7B --out mixtral_sweep.csv
  pals sweep --model Qwen1.5-MoE-A2.7B --tp 4 --rate 6 --out qwen.csv --report
  pals sweep --model config.json --gpu H100-SXM --num-gpus 1 --tp 1 --caps 700 --batches 8,16,32,64,128,256 --out h100.csv
  pals sweep --model config.json --gpu H100-SXM --physics h100-physics.json --out h100.csv
"""


def add_parser(subparsers) -> None:
    parser = add_command(
        subparsers, "sweep", "power cap x batch cap sweep on the simulated node (table, CSV, plots)", DESCRIPTION, run
    )
    add_deployment_arguments(parser, model_required=True)
    parser.add_argument("--out", required=True, metavar="FILE.csv", help="CSV to write (profile format); plots go beside it")
    parser.add_argument("--resume", action="store_true", help="keep points already in --out instead of starting over")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write this sweep's summary (<out>.md) and the characterization report: the paper's Fig 1 and 3 "
        "shapes beside ours (Mixtral, Qwen-MoE, OLMoE at TP 4 and the batch ratio of all 8 paper models, at "
        "saturation and a fixed load, on --gpu; about 1-2 minutes) in <out>_characterization/characterization.md",
    )
    parser.add_argument(
        "--report-quick",
        action="store_true",
        help="with --report: a quick characterization (one model, 2 caps, 3 batches, short windows; a smoke test)",
    )


def run(args) -> int:
    from pals.experiments.characterization import write_characterization_report
    from pals.model.plots import plot_profile

    if args.report_quick and not args.report:
        raise ConfigError("--report-quick only applies with --report; add --report or drop --report-quick")
    setup = build_sim(args)
    profile = measure_grid(args, setup, "sim", resume=args.resume, metadata_extra={"kind": "sweep"})
    print(format_table(profile))
    out = Path(args.out)
    written = [out]
    plots: list[Path] = []
    if not args.no_plots:
        plots = plot_profile(profile, out.with_suffix(""))
        written += plots
    if args.report:
        written.append(write_characterization_report(profile, out.with_suffix(".md"), plots))
        written.append(_characterization_report(args, out))
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _characterization_report(args, out: Path) -> Path:
    """The paper-shape characterization (`pals.experiments.characterization`), beside the sweep's CSV."""
    from pals.cli.profile import DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS
    from pals.experiments.characterization import characterize, write_report
    from pals.sim.physics import load_physics

    report_dir = out.with_name(out.stem + "_characterization")
    params = None if args.physics is None else load_physics(args.physics, args.gpu)
    result = characterize(
        gpu=args.gpu,
        tp=4,
        out_dir=report_dir,
        quick=args.report_quick,
        seed=args.seed,
        progress=not args.no_progress,
        prompt_tokens=args.prompt_tokens or DEFAULT_PROMPT_TOKENS,
        output_tokens=args.output_tokens or DEFAULT_OUTPUT_TOKENS,
        params=params,
        physics_label=f"fitted, from {args.physics}" if args.physics is not None else "the GPU preset's",
    )
    return write_report(result, report_dir)
