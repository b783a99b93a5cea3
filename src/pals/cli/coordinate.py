"""`pals coordinate`: split a cluster power budget across PALS nodes, every few seconds."""

from __future__ import annotations

import argparse
import math
import os
import stat
import sys

from pals.cli._common import add_command
from pals.errors import ConfigError

DESCRIPTION = """\
Every --interval-s seconds: read each node's status from its control endpoint
(GET /status), give each node the power it needs for its throughput target,
then the slack where it buys the most tokens/J, never more than
--cluster-budget-w in total, and write each node's budget and target back
(PUT /budget, PUT /target).

The budgets are checked against what each node reports, every round: a budget
changed by hand or lost in a node restart is rewritten. Budgets that go down are
written before budgets that go up, so the budgets in force never sum above the
cluster budget. A node that is down, slow or answers garbage does not stop the
coordinator: its last known budget (its maximum draw if never seen, see
--node-max-w) stays counted against the cluster and the rest is split among the
nodes that answer. Each request ends within --timeout-s, retries included.

Each node is a running PALS controller endpoint (`pals run --endpoint-port` or
`pals serve`). Frontiers come from each node's GET /frontier when it serves one,
else from a linear estimate of its status (power-proportional throughput).
Nodes started with an endpoint token need it: --endpoint-token-file FILE or the
PALS_ENDPOINT_TOKEN environment variable.

With --metrics-port P the coordinator serves its Prometheus metrics (pals_coordinator_*:
cluster budget, each node's budget planned, written, reported and counted, nodes up, budgets
rewritten, round time; docs/metrics.md) at http://127.0.0.1:P/metrics. A Prometheus on another
host needs --metrics-host (e.g. 0.0.0.0 in a Kubernetes pod); the metrics change nothing, so they
need no token.

Example:
  pals coordinate --node ds=http://10.0.0.1:9100 --node mx=http://10.0.0.2:9100 \\
      --target ds=1800 --target mx=900 --cluster-budget-w 4800 --interval-s 5 --metrics-port 9500
"""

TOKEN_ENV = "PALS_ENDPOINT_TOKEN"
MAX_TOKEN_FILE_BYTES = 64 * 1024
# The library's limits (pals.cluster.coordinator, pals.cluster.client), repeated here so that
# `pals --help` does not import the cluster package; a test checks that they agree.
MIN_BUDGET_W, MAX_CLUSTER_BUDGET_W, MAX_TARGET_TPS = 1.0, 1e9, 1e7
MAX_TIMEOUT_S, MAX_RETRIES = 600.0, 5


def _bounded(low: float, high: float, unit: str, low_open: bool = False):
    """An argparse type: a finite number in [low, high] (or (low, high]); one clear line otherwise."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {unit}, got {text!r}") from None
        inside = math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
        if not inside:
            bound = f"above {low:g}" if low_open else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound} and at most {high:g} {unit}, got {text!r}")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return value


def _named(text: str) -> tuple[str | None, str]:
    name, sep, value = text.partition("=")
    if sep and "://" not in name:
        return name.strip(), value.strip()
    return None, text.strip()


def _named_number(low: float, high: float, unit: str, low_open: bool = False):
    number = _bounded(low, high, unit, low_open)

    def parse(text: str) -> tuple[str, float]:
        name, value = _named(text)
        if not name:
            raise argparse.ArgumentTypeError(f"expected NAME=NUMBER (a node name from --node), got {text!r}")
        try:
            return name, number(value)
        except argparse.ArgumentTypeError as error:
            raise argparse.ArgumentTypeError(f"{name}: {error}") from None

    return parse


def add_parser(subparsers):
    parser = add_command(
        subparsers, "coordinate", "split a cluster power budget across PALS nodes (HTTP)", DESCRIPTION, run
    )
    parser.add_argument("--node", action="append", default=[], metavar="[NAME=]URL",
                        help="a node's control endpoint, e.g. mx=http://127.0.0.1:9100 (repeat per node)")
    parser.add_argument("--cluster-budget-w", type=_bounded(MIN_BUDGET_W, MAX_CLUSTER_BUDGET_W, "W"), required=True,
                        help="total node (wall) power of all nodes, W")
    parser.add_argument("--target", action="append", default=[], metavar="NAME=TPS",
                        type=_named_number(0.0, MAX_TARGET_TPS, "tokens/s"),
                        help="throughput target of one node, tokens/s (repeat per node)")
    parser.add_argument("--priority", action="append", default=[], metavar="NAME=WEIGHT",
                        type=_named_number(0.0, 1e6, "", low_open=True),
                        help="weight on a node's QoS when targets do not all fit (default 1)")
    parser.add_argument("--node-max-w", action="append", default=[], metavar="NAME=W",
                        type=_named_number(MIN_BUDGET_W, MAX_CLUSTER_BUDGET_W, "W"),
                        help="a node's maximum draw, counted while it runs without a budget or is down and was "
                             "never seen (default: from its status; 2025 W if never seen)")
    parser.add_argument("--interval-s", type=_bounded(0.05, 86400.0, "s"), default=5.0,
                        help="seconds between rounds (default 5)")
    parser.add_argument("--duration-s", type=_bounded(0.0, 1e9, "s", low_open=True), default=None,
                        help="stop after this long (default: run until Ctrl-C)")
    parser.add_argument("--once", action="store_true",
                        help="one round, then exit (status 1 if a node was down or refused a write)")
    parser.add_argument("--timeout-s", type=_bounded(0.01, MAX_TIMEOUT_S, "s"), default=5.0,
                        help="most time one request to a node may take, retries included (default 5)")
    parser.add_argument("--retries", type=int, choices=range(0, MAX_RETRIES + 1), default=1, metavar="N",
                        help=f"further attempts after a failed request, within --timeout-s (0-{MAX_RETRIES}, default 1)")
    parser.add_argument("--endpoint-token-file", default=None, metavar="PATH",
                        help=f"file holding the nodes' endpoint bearer token (default: ${TOKEN_ENV} if set)")
    parser.add_argument("--log", default=None, metavar="FILE", help="append one JSON line per round to FILE")
    parser.add_argument("--metrics-port", type=_port, default=None, metavar="P",
                        help="serve Prometheus metrics on port P (0: any free port, printed; default: none)")
    parser.add_argument("--metrics-host", default=None, metavar="HOST",
                        help="address the metrics port listens on (default 127.0.0.1)")
    parser.add_argument("--quiet", action="store_true", help="print nothing per round")
    return parser


def read_token(path: str | None, environ=os.environ) -> str | None:
    """The endpoint token: the file's content stripped, else $PALS_ENDPOINT_TOKEN, else None."""
    from pals.cluster.client import check_token

    if path is None:
        value = environ.get(TOKEN_ENV)
        return None if value is None else check_token(value.strip())
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):  # checked before opening: a FIFO would block the open
            raise ConfigError(f"--endpoint-token-file {path} is not a regular file; give the token file")
        with open(path, "rb") as handle:
            raw = handle.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read --endpoint-token-file {path} ({error.strerror}); give a readable file") from None
    if len(raw) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"--endpoint-token-file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes; is it the token?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--endpoint-token-file {path} is not text; give the file holding the token") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        print(f"pals coordinate: warning: {path} is readable by other users; chmod 600 it", file=sys.stderr)
    try:
        return check_token(text.strip())
    except ConfigError as error:
        raise ConfigError(f"--endpoint-token-file {path}: {error}") from None


def _clients(args, token):
    from pals.cluster.client import HttpNodeClient

    if not args.node:
        raise ConfigError("no nodes given; add --node NAME=http://HOST:PORT for each PALS node")
    clients = []
    for spec in args.node:
        name, url = _named(spec)
        if name == "":
            raise ConfigError(f"--node {spec!r}: the name before '=' is empty; give NAME=http://HOST:PORT")
        if name is not None and any(c.isspace() for c in name):
            raise ConfigError(f"--node {spec!r}: a node name cannot contain spaces")
        clients.append(HttpNodeClient(url, name=name, timeout_s=args.timeout_s, retries=args.retries, token=token))
    return clients


def run(args) -> int:
    from pals.cluster.coordinator import Coordinator
    from pals.core.clock import WallClock

    token = read_token(args.endpoint_token_file)
    clients = _clients(args, token)
    coordinator = Coordinator(
        clients,
        cluster_budget_w=args.cluster_budget_w,
        targets_tps=dict(args.target),
        priorities=dict(args.priority),
        max_node_power_w=dict(args.node_max_w),
        # Status and frontier each end within --timeout-s; the rest is scheduling slack.
        node_deadline_s=2 * args.timeout_s + 5.0,
        history_rounds=100,  # reports go to stdout and --log; keep memory flat on a long run
    )
    if args.metrics_host is not None and args.metrics_port is None:
        raise ConfigError("--metrics-host needs --metrics-port; give the port the metrics are served on")
    log = _RoundLog(args.log)
    try:
        metrics, server = _start_metrics(args, coordinator, clients)
    except BaseException:
        log.close()
        raise

    def on_round(report) -> None:
        log.write(report)
        if metrics is not None:
            metrics.update(report, coordinator.targets_tps)
        if not args.quiet:
            print(report.summary_line(), file=sys.stdout)
            for line in report.actions:
                print(f"  {line}", file=sys.stdout)
            sys.stdout.flush()

    try:
        if args.once:
            report = coordinator.step()
            on_round(report)
            faulty = [n for n in report.nodes.values() if not n.up or n.error is not None]
            return 1 if faulty else 0
        coordinator.run(WallClock(), args.interval_s, args.duration_s, on_round=on_round)
    finally:
        if server is not None:
            server.stop()
        log.close()
        for client in clients:
            client.close()
    return 0


def _start_metrics(args, coordinator, clients):
    """(metrics, server) for --metrics-port, listening before the first round; (None, None) without it."""
    if args.metrics_port is None:
        return None, None
    from pals.cluster.metrics import CoordinatorMetrics, MetricsServer

    metrics = CoordinatorMetrics(coordinator.cluster_budget_w, nodes=[c.name for c in clients])
    server = MetricsServer.start(metrics.registry, args.metrics_port, args.metrics_host or "127.0.0.1")
    print(f"pals coordinate: metrics on {server.url}", file=sys.stderr, flush=True)
    return metrics, server


class _RoundLog:
    """`--log FILE`: one JSON line per round; a failing disk is reported once, never fatal."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._file = None
        self._failed = False
        if path is not None:
            if os.path.isdir(path):
                raise ConfigError(f"--log {path} is a directory; give a file")
            try:
                self._file = open(path, "a", encoding="utf-8")
            except OSError as error:
                raise ConfigError(f"cannot open --log {path} ({error.strerror}); give a writable file") from None

    def write(self, report) -> None:
        from pals.core.io import dumps_json

        if self._file is None or self._failed:
            return
        try:
            self._file.write(dumps_json(report.as_dict()) + "\n")
            self._file.flush()
        except (OSError, ValueError) as error:
            self._failed = True
            print(f"pals coordinate: warning: cannot write --log {self.path} ({error}); "
                  "no more rounds are logged, coordination goes on", file=sys.stderr)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
