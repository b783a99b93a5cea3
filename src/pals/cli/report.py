"""`pals report RUN_DIR`: a run's decision log as one PNG (the dashboard's views, without Grafana)."""

from __future__ import annotations

from pathlib import Path

from pals.cli._common import add_command, positive_int

DESCRIPTION = """\
Draw the node views of the Grafana dashboard from a run's decisions.jsonl, for people without
Grafana: power vs budget, throughput vs target (intervals that missed it shaded), power cap and
batch cap over time, tokens per joule over time, and TTFT / TPOT when the log has them. The header
quotes tokens/J, mean power, the share of intervals that missed the target and the configuration
changes. A log a restarted controller appended to is drawn end to end, restarts marked.

RUN_DIR is the --out folder of `pals run` (or a decisions.jsonl file, e.g. `pals serve
--decision-log`); rotated history beside it (decisions.jsonl.N.gz) is read too.

Examples:
  pals run --model Mixtral-8x7B --policy pals --rate 4 --target-tps 1500 --budget-w 1500 \\
      --duration-s 120 --out runs/mx && pals report runs/mx        # writes runs/mx/report.png
  pals report /var/log/pals/decisions.jsonl --out /tmp/node7.png
"""


def add_parser(subparsers):
    parser = add_command(subparsers, "report", "a run's decision log as a PNG report", DESCRIPTION, run)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder holding decisions.jsonl (or the file itself)")
    parser.add_argument("--out", metavar="PNG", default=None, help="where to write (default: RUN_DIR/report.png)")
    parser.add_argument("--title", default=None, help="name in the header (default: the folder's name)")
    parser.add_argument("--dpi", type=positive_int, default=110, help="resolution (default 110)")
    return parser


def run(args) -> int:
    from pals.experiments.run_report import write_report
    from pals.experiments.run_series import load_run

    series = load_run(args.run_dir)
    out = Path(args.out) if args.out else series.source.parent / "report.png"
    write_report(series, out, title=args.title, dpi=args.dpi)
    totals = series.totals()
    print(f"{len(series)} intervals, {totals['tokens_per_joule']:.3f} tokens/J, "
          f"mean node power {totals['mean_node_power_w']:.0f} W")
    print(f"wrote {out}")
    return 0
