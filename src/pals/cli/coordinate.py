"""`pals coordinate`: split a cluster power budget across PALS nodes, every few seconds."""

from __future__ import annotations

import argparse
import json
import math
import sys

from pals.cli._common import add_command, positive_float
from pals.errors import ConfigError

DESCRIPTION = """\
Every --interval-s seconds: read each node's status from its control endpoint
(GET /status), give each node the power it needs for its throughput target,
then the slack where it buys the most tokens/J, never more than
--cluster-budget-w in total, and write each node's budget and target back
(PUT /budget, PUT /target). Budgets that go down are written first.

Each node is a running PALS controller endpoint (`pals run --port` or `pals serve`).
Frontiers come from each node's GET /frontier when it serves one, else from a
linear estimate of its status (power-proportional throughput).

Example:
  pals coordinate --node ds=http://10.0.0.1:9100 --node mx=http://10.0.0.2:9100 \\
      --target ds=1800 --target mx=900 --cluster-budget-w 4800 --interval-s 5
"""


def _named(text: str) -> tuple[str | None, str]:
    name, sep, value = text.partition("=")
    if sep and "://" not in name:
        return name.strip(), value.strip()
    return None, text.strip()


def _named_number(text: str) -> tuple[str, float]:
    name, value = _named(text)
    if name is None:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{name}: must be a non-negative number, got {value!r}")
    return name, number


def add_parser(subparsers):
    parser = add_command(
        subparsers, "coordinate", "split a cluster power budget across PALS nodes (HTTP)", DESCRIPTION, run
    )
    parser.add_argument("--node", action="append", default=[], metavar="[NAME=]URL",
                        help="a node's control endpoint, e.g. mx=http://127.0.0.1:9100 (repeat per node)")
    parser.add_argument("--cluster-budget-w", type=positive_float, required=True,
                        help="total node (wall) power of all nodes, W")
    parser.add_argument("--target", action="append", default=[], type=_named_number, metavar="NAME=TPS",
                        help="throughput target of one node, tokens/s (repeat per node)")
    parser.add_argument("--priority", action="append", default=[], type=_named_number, metavar="NAME=WEIGHT",
                        help="weight on a node's QoS when targets do not all fit (default 1)")
    parser.add_argument("--interval-s", type=positive_float, default=5.0, help="seconds between rounds (default 5)")
    parser.add_argument("--duration-s", type=positive_float, default=None, help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--once", action="store_true", help="one round, then exit")
    parser.add_argument("--timeout-s", type=positive_float, default=5.0, help="HTTP timeout per request (default 5)")
    parser.add_argument("--log", default=None, metavar="FILE", help="append one JSON line per round to FILE")
    parser.add_argument("--quiet", action="store_true", help="print nothing per round")
    return parser


def run(args) -> int:
    from pals.core.clock import WallClock
    from pals.cluster.client import HttpNodeClient
    from pals.cluster.coordinator import Coordinator

    if not args.node:
        raise ConfigError("no nodes given; add --node NAME=http://HOST:PORT for each PALS node")
    clients = []
    for spec in args.node:
        name, url = _named(spec)
        clients.append(HttpNodeClient(url, name=name, timeout_s=args.timeout_s))
    coordinator = Coordinator(
        clients,
        cluster_budget_w=args.cluster_budget_w,
        targets_tps=dict(args.target),
        priorities=dict(args.priority),
    )
    log_file = None
    if args.log:
        try:
            log_file = open(args.log, "a", encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"cannot open --log {args.log} ({error}); give a writable file") from None

    def on_round(record) -> None:
        line = record.as_dict()
        if log_file is not None:
            log_file.write(json.dumps(line) + "\n")
            log_file.flush()
        if not args.quiet:
            budgets = ", ".join(f"{k} {v:.0f} W" for k, v in record.allocation.budgets_w.items())
            print(
                f"round {record.round_index}: {budgets} (total {record.allocation.total_w:.0f} of "
                f"{args.cluster_budget_w:.0f} W, QoS fraction {record.allocation.qos_fraction:.2f})",
                file=sys.stdout,
                flush=True,
            )

    try:
        if args.once:
            on_round(coordinator.step())
        else:
            coordinator.run(WallClock(), args.interval_s, args.duration_s, on_round=on_round)
    finally:
        if log_file is not None:
            log_file.close()
        for client in clients:
            client.close()
    return 0
