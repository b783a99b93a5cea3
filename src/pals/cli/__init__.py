"""The `pals` command line: one console script, one module per subcommand.

Each subcommand module provides `add_parser(subparsers)` and `run(args) -> int`.
Modules import their heavy dependencies inside `run`, so `pals --help` stays fast.
`main()` turns a usage error or a `PalsError` into one stderr line and exit code 2, and any
other exception (a bug) into one line and exit code 1; set PALS_DEBUG=1 to see the traceback too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from pals import __version__
from pals.cli._common import OneLineParser
from pals.errors import PalsError

DEBUG_ENV = "PALS_DEBUG"
"""Environment variable: set it to print the traceback behind an error line."""

# Order is the order `pals --help` lists them in.
SUBCOMMANDS = (
    "demo",
    "sweep",
    "profile",
    "fit",
    "calibrate",
    "probe",
    "run",
    "experiment",
    "coordinate",
    "serve",
    "report",
    "doctor",
    "restore",
)

DESCRIPTION = """\
PALS: power-aware LLM serving. Tunes GPU power caps and the serving engine's
batch cap together, every 500 ms, for the most tokens per joule that still
meets a throughput target under a power budget.

Start here:
  pals demo                 simulated 4x A100 node, Baseline vs PALS, budget step halfway
  pals sweep --help         power cap x batch cap sweep on the simulated node
  pals profile / pals fit   offline profile and the power-performance predictor
  pals run --help           one closed-loop scenario (any policy, trace or Poisson load)
  pals serve MODEL          run beside a real vLLM server on GPU hosts
"""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="pals",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pals {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"pals.cli.{name}")
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except PalsError as error:
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"pals {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pals {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug, not bad input: still one line, and how to see more
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"pals {args.command}: unexpected error: {type(error).__name__}: {_one_line(error)} "
              f"(a bug; rerun with {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    """The error's message on one line, cut to a readable length."""
    text = " ".join(str(error).split())
    return text if len(text) <= 2000 else text[:1997] + "..."
