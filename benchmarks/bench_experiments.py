"""Run the whole experiment suite (full mode) and print the wall time of each experiment.

Usage: python benchmarks/bench_experiments.py [--out DIR] [--quick] [--only NAME ...]
Target (issue 5): the full suite in under 10 minutes on the development machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pals.experiments import EXPERIMENTS, run_experiment


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help="output folder (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="quick modes instead of full")
    parser.add_argument("--only", nargs="*", default=None, choices=list(EXPERIMENTS))
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="pals-bench-"))
    total = 0.0
    for name in args.only or EXPERIMENTS:
        start = time.perf_counter()
        summary = run_experiment(name, out / name, quick=args.quick, seed=0)
        wall_s = time.perf_counter() - start
        total += wall_s
        checks = summary.get("checks", [])
        held = sum(1 for c in checks if c["passed"])
        print(f"{name:<16} {wall_s:7.1f} s   checks {held}/{len(checks)}   {out / name / 'report.md'}", flush=True)
        for c in summary.get("comparisons", []):
            print(f"    {c['quantity']}: paper {c['paper']} | ours {c['ours']}")
    print(f"{'total':<16} {total:7.1f} s ({'quick' if args.quick else 'full'}; target < 600 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
