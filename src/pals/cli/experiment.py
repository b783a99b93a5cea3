"""`pals experiment NAME`: run a paper-reproduction experiment and write its report."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pals.cli._common import add_command
from pals.core.paper import PAPER_GPU
from pals.experiments import EXPERIMENTS

DESCRIPTION = "Experiments (each writes OUT/report.md, OUT/summary.json, OUT/tables/*.csv, OUT/*.png):\n" + "\n".join(
    f"  {name:<16} {text}" for name, (_, text) in EXPERIMENTS.items()
) + ("\n  all              every experiment, each into OUT/NAME/\n\nAll run on the simulated node (--physics: a GPU "
     "fitted by `pals calibrate`); --quick uses smaller grids and shorter runs.")


def add_parser(subparsers):
    parser = add_command(subparsers, "experiment", "paper-reproduction experiments (reports + plots)", DESCRIPTION, run)
    parser.add_argument("name", choices=[*EXPERIMENTS, "all"], metavar="NAME", help="experiment to run (see above)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--quick", action="store_true", help="small grids, short runs (seconds; numbers indicative)")
    parser.add_argument("--seed", type=int, default=0, help="seed of workloads and noise (default 0)")
    parser.add_argument(
        "--physics", metavar="PHYSICS.json", default=None,
        help=f"step physics fitted by `pals calibrate` for the experiments' GPU ({PAPER_GPU}); every simulated node "
        "of every experiment runs it, and each report's setup line names it (fidelity: its points of that GPU); "
        "default: the preset's",
    )
    return parser


def run(args) -> int:
    from pals.experiments import run_experiment
    from pals.sim.physics import load_physics

    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    if args.physics is not None:
        load_physics(args.physics, PAPER_GPU)  # a bad file, or one of another GPU: one line, before anything runs
    for name in names:
        out = Path(args.out) / name if args.name == "all" else Path(args.out)
        start = time.perf_counter()
        summary = run_experiment(name, out, quick=args.quick, seed=args.seed, physics=args.physics)
        wall_s = time.perf_counter() - start
        checks = summary.get("checks", [])
        passed = sum(1 for c in checks if c["passed"])
        print(f"{name}: {passed}/{len(checks)} checks hold, {wall_s:.1f} s -> {out / 'report.md'}", flush=True)
        for comparison in summary.get("comparisons", []):
            print(f"  {comparison['quantity']}: paper {comparison['paper']} | ours {comparison['ours']}")
        for check in checks:
            if not check["passed"]:
                print(f"  check does not hold: {check['claim']} ({check['evidence']})", file=sys.stderr)
    if args.name == "all":
        index = {name: str(Path(args.out) / name / "summary.json") for name in names}
        (Path(args.out) / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    # A check that does not hold is a finding, reported, not a crash: exit 0 either way.
    return 0
