#!/usr/bin/env python3
"""Compare two run folders' summary.json files number for number (a refactor must not move them).

    python scripts/compare_summaries.py BEFORE_DIR AFTER_DIR

Walks both folders for `summary.json`, pairs them by relative path and compares every value
exactly, except wall-clock measurements (keys matching `wall`, `decide_ms`, `_took`) and file
paths, which differ from run to run by nature. Prints one line per difference and a total;
exits 1 when anything differs or a file is missing on one side.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

WALL_CLOCK_KEY = re.compile(r"wall|decide_ms|took")


def _diff(before, after, where: str, out: list[str]) -> int:
    """Append the differences between two JSON values to `out`; return how many values were compared."""
    if isinstance(before, dict) and isinstance(after, dict):
        count = 0
        for key in sorted(set(before) | set(after)):
            if WALL_CLOCK_KEY.search(str(key)):
                continue
            if key not in before or key not in after:
                out.append(f"{where}/{key}: only in {'after' if key in after else 'before'}")
                continue
            count += _diff(before[key], after[key], f"{where}/{key}", out)
        return count
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            out.append(f"{where}: length {len(before)} != {len(after)}")
            return 1
        return sum(_diff(b, a, f"{where}[{i}]", out) for i, (b, a) in enumerate(zip(before, after)))
    if isinstance(before, str) and isinstance(after, str) and ("/" in before or "/" in after):
        return 0  # a path: differs by the folder the run wrote to
    if before != after and not (before != before and after != after):  # NaN equals NaN here
        out.append(f"{where}: {before!r} != {after!r}")
    return 1


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    before_dir, after_dir = Path(argv[0]), Path(argv[1])
    before = {p.relative_to(before_dir) for p in before_dir.rglob("summary.json")}
    after = {p.relative_to(after_dir) for p in after_dir.rglob("summary.json")}
    problems: list[str] = [f"{p}: missing after" for p in sorted(before - after)]
    problems += [f"{p}: missing before" for p in sorted(after - before)]
    compared = 0
    for rel in sorted(before & after):
        found: list[str] = []
        compared += _diff(json.loads((before_dir / rel).read_text()), json.loads((after_dir / rel).read_text()),
                          str(rel), found)
        problems += found
    for line in problems:
        print(line)
    print(f"{len(before & after)} summary files, {compared} values compared, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
