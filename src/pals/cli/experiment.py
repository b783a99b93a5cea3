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
) + "\n  all              every experiment, each into OUT/NAME/\n\nAll run on the simulated node; --quick uses smaller grids and shorter runs."


def add_parser(subparsers):
    parser = add_command(subparsers, "experiment", "paper-reproduction experiments (reports + plots)", DESCRIPTION, run)
    parser.add_argument("name", choices=[*EXPERIMENTS, "all"], metavar="NAME", help="experiment to run (see above)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--quick", action="store_true", help="small grids, short runs (seconds; numbers indicative)")
    parser.add_argument("--seed", type=int, default=0, help="seed of workloads and noise (default 0)")
    parser.add_argument(
        "--physics", metavar="PHYSICS.json", default=None,
        help=f"step physics fitted by `pals calibrate` for the experiments' GPU ({PAPER_GPU}); default: the preset's. "
        "Taken by: characterize (the others build their nodes with the preset's physics for now)",
    )
    return parser


def run(args) -> int:
    from pals.errors import ConfigError
    from pals.experiments import run_experiment, takes_physics
    from pals.sim.physics import load_physics

    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    if args.physics is not None:
        load_physics(args.physics, PAPER_GPU)  # a bad file, or one of another GPU: one line, before anything runs
        refused = [name for name in names if not takes_physics(name)]
        if refused:
            raise ConfigError(f"--physics is not wired into {', '.join(refused)} yet (their nodes use the preset's "
                              f"physics); run {', '.join(n for n in EXPERIMENTS if takes_physics(n))} with it, "
                              "or drop --physics")
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
