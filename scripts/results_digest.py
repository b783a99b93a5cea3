#!/usr/bin/env python3
"""One Markdown page from the experiments' summary.json files: what each compared with the paper, and its checks.

    python scripts/results_digest.py RUNS_DIR [--title TEXT] > docs/results.md

RUNS_DIR is the --out folder of `pals experiment all` (or any folder holding experiment folders,
each with its summary.json). Every number on the page is copied from those summaries; nothing is
typed by hand, so the page is regenerated, never edited, when the experiments rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def digest(runs_dir: Path, title: str) -> str:
    summaries = sorted(runs_dir.glob("*/summary.json"))
    if not summaries:
        raise SystemExit(f"error: no */summary.json under {runs_dir}; give the --out folder of `pals experiment all`")
    lines = [f"# {title}", ""]
    overview = ["| experiment | mode | wall time s | checks holding |", "|---|---|---|---|"]
    sections: list[str] = []
    for path in summaries:
        s = json.loads(path.read_text())
        checks = s.get("checks", [])
        held = sum(bool(c.get("passed")) for c in checks)
        mode = "quick" if s.get("quick") else "full"
        overview.append(f"| {s['experiment']} | {mode} | {float(s.get('wall_s', 0.0)):.0f} | {held} of {len(checks)} |")
        sections += ["", f"## {s['experiment']}: {_cell(s.get('title', ''))}", ""]
        comparisons = s.get("comparisons", [])
        if comparisons:
            sections += ["| quantity | paper | ours | verdict |", "|---|---|---|---|"]
            sections += [f"| {_cell(c['quantity'])} | {_cell(c['paper'])} | {_cell(c['ours'])} | {_cell(c['verdict'])} |"
                         for c in comparisons]
            sections.append("")
        failing = [c for c in checks if not c.get("passed")]
        if failing:
            sections += ["Checks that do not hold:", ""]
            sections += [f"- {_cell(c['claim'])}: {_cell(c.get('evidence', ''))}" for c in failing]
        elif checks:
            sections.append(f"All {len(checks)} checks hold.")
    return "\n".join(lines + overview + sections) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs_dir", type=Path, metavar="RUNS_DIR")
    parser.add_argument("--title", default="Experiment results", help="the page's heading")
    args = parser.parse_args(argv)
    sys.stdout.write(digest(args.runs_dir, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
