"""Argument helpers shared by subcommands (parsers that raise one clear message)."""

from __future__ import annotations

import argparse


def add_command(subparsers, name: str, help_text: str, description: str, run) -> argparse.ArgumentParser:
    """Register a subcommand whose handler is `run(args) -> int`."""
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=run)
    return parser


def float_list(text: str) -> list[float]:
    """'150,200,250' -> [150.0, 200.0, 250.0]."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def int_list(text: str) -> list[int]:
    """'1,4,8' -> [1, 4, 8]."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value:g}")
    return value


# -- numbers at the edge -------------------------------------------------------------------------
# One place for the plausible range of every numeric flag: a flag's type is `number_flag(...)` or
# `whole_flag(...)`, so NaN, inf, 0, -1, 1e20 and garbage all get one argparse line naming the range
# (`pals.core.untrusted`), before anything is profiled, run or written.

MAX_DURATION_S = 31_536_000.0
"""Longest run accepted: one year of (simulated or real) time. Units: s."""
MIN_DURATION_S = 0.001
"""Shortest run accepted (0 or less runs nothing). Units: s."""
MIN_INTERVAL_S = 0.01
"""Shortest control interval (the GPU's power limiter needs longer to act). Units: s."""
MAX_INTERVAL_S = 3600.0
"""Longest control interval. Units: s."""
MAX_SEED = 2**32 - 1
"""Largest seed numpy's generators take."""
MAX_RATE_RPS = 100_000.0
"""Highest Poisson arrival rate (inf would never advance the clock). Units: requests/s."""
MIN_RATE_RPS = 1e-6
"""Lowest Poisson arrival rate. Units: requests/s."""
MAX_RATE_SCALE = 1000.0
"""Largest trace speed-up."""
MIN_RATE_SCALE = 0.001
"""Smallest trace speed-up (0 would never deliver a request)."""
MAX_POWER_CAP_W = 10_000.0
"""Largest per-GPU power cap a flag takes before the GPU's own range is checked. Units: W."""
MAX_BATCH_CAP = 1024
"""Largest batch cap and engine max_num_seqs (`pals.sim.node.BATCH_CAP_LIMIT`)."""
MAX_GPUS = 1024
"""Most GPUs in one node or tensor-parallel group."""
MAX_WORKERS = 256
"""Most worker processes."""


def number_flag(low: float, high: float, unit: str = ""):
    """An argparse type: a finite number in [low, high] (`pals.core.untrusted.number_in`)."""
    from pals.core.untrusted import number_in

    return _bounded_flag(float, number_in, "number", low, high, unit)


def whole_flag(low: int, high: int, unit: str = ""):
    """An argparse type: a whole number in [low, high] (`pals.core.untrusted.whole_in`)."""
    from pals.core.untrusted import whole_in

    # int() also refuses a 5,000-digit number (Python's digit limit) with a ValueError.
    return _bounded_flag(lambda text: int(text.strip()), whole_in, "whole number", low, high, unit)


def _bounded_flag(convert, check, kind: str, low, high, unit: str):
    """An argparse type: `convert` the text, then `check(value, "value", low, high, unit)`; one line on failure."""
    from pals.errors import PalsError

    def parse(text: str):
        try:
            value = convert(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected a {kind}, got {_shown(text)}") from None
        try:
            return check(value, "value", low, high, unit)
        except PalsError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = kind
    return parse


def _shown(text: str) -> str:
    from pals.core.untrusted import show

    return show(text)


def budget_w_flag():
    """--budget-w: a node or GPU budget within `pals.control.budget`'s limits (1 W to 10 MW)."""
    from pals.control.budget import MAX_BUDGET_W, MIN_BUDGET_W

    return number_flag(MIN_BUDGET_W, MAX_BUDGET_W, "W")


def target_tps_flag():
    """--target-tps: a throughput target within `pals.control.budget`'s limits."""
    from pals.control.budget import MAX_TARGET_TPS, MIN_TARGET_TPS

    return number_flag(MIN_TARGET_TPS, MAX_TARGET_TPS, "tokens/s")


DURATION_S = number_flag(MIN_DURATION_S, MAX_DURATION_S, "s")
INTERVAL_S = number_flag(MIN_INTERVAL_S, MAX_INTERVAL_S, "s")
SEED = whole_flag(0, MAX_SEED)
PORT = whole_flag(0, 65535)
PERCENT = number_flag(0.0, 100.0, "%")


# -- output folders --------------------------------------------------------------------------------


def check_output_dir(path: str | None, flag: str = "--out") -> None:
    """Raise ConfigError unless `path` is (or can be created as) a writable directory; creates nothing.

    Checked before any profiling or run, so a typo costs one line, not a finished run with nowhere to go.
    """
    import os
    import tempfile
    from pathlib import Path

    from pals.errors import ConfigError

    if path is None:
        return
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{flag} {target} exists and is not a directory; give a directory (new or existing)")
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{flag} {target}: {probe} is not a directory; give a directory path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {target}: {probe} is not writable by this user; choose a writable directory")
    # access() says yes to root everywhere and knows nothing of read-only mounts or /proc: try it.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".pals-write-check-", dir=probe))
    except OSError as error:
        raise ConfigError(f"{flag} {target}: cannot write in {probe} ({error.strerror or error}); "
                          "choose a writable directory") from None


def check_cache_dir() -> None:
    """Raise ConfigError unless the profile cache ($PALS_CACHE_DIR or ~/.cache/pals) is writable."""
    from pals.errors import ConfigError
    from pals.runtime.cache import CACHE_DIR_ENV, cache_dir

    root = cache_dir()
    try:
        check_output_dir(str(root), "cache directory")
    except ConfigError as error:
        raise ConfigError(f"{error} (set ${CACHE_DIR_ENV} to a writable directory)") from None


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (`PROG: error: MESSAGE; see PROG --help`), exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text}; see {self.prog} --help\n")


# -- the control endpoint's flags ------------------------------------------------------------------


def add_endpoint_flags(parser: argparse.ArgumentParser) -> None:
    """--endpoint-port/-host/-token-file/-allowed-host (see `pals.control.endpoint`)."""
    group = parser.add_argument_group("control endpoint")
    group.add_argument("--endpoint-port", type=PORT, default=None, metavar="P",
                       help="serve /status, /budget, /target, /decisions, /metrics on HOST:P while running (0: any free port)")
    group.add_argument("--endpoint-host", default="127.0.0.1", metavar="HOST",
                       help="address the endpoint binds (default 127.0.0.1; any other needs a token)")
    group.add_argument("--endpoint-token-file", default=None, metavar="FILE",
                       help="bearer token the endpoint requires for changes (a file of mode 600; default "
                            "$PALS_ENDPOINT_TOKEN, else none, which only loopback allows)")
    group.add_argument("--endpoint-allowed-host", action="append", default=[], metavar="NAME",
                       help="extra name clients may use in Host/Origin (the node's DNS name); repeatable")


def endpoint_spec_from_args(args):
    """The endpoint the flags ask for (`pals.runtime.scenario.EndpointSpec`), or None without --endpoint-port.

    Checked early, before any profiling: the token is read and checked, a non-loopback host without one is
    refused, the endpoint's own checks run, and the address is bound once and released (a port in use or a
    host that is not ours is one line now, not after minutes of setup).

    Raises:
        ConfigError: any of the above; one line naming the flag to change.
    """
    from pals.control.auth import check_exposure, resolve_token
    from pals.control.endpoint import Endpoint
    from pals.errors import ConfigError
    from pals.runtime.scenario import EndpointSpec

    given = [f for f, v in (("--endpoint-token-file", args.endpoint_token_file),
                            ("--endpoint-allowed-host", args.endpoint_allowed_host),
                            ("--endpoint-host", None if args.endpoint_host == "127.0.0.1" else args.endpoint_host)) if v]
    if args.endpoint_port is None:
        if given:
            raise ConfigError(f"{given[0]} needs --endpoint-port P (the endpoint is off without it)")
        return None
    token = resolve_token(args.endpoint_token_file)
    check_exposure(args.endpoint_host, token)
    allowed = tuple(args.endpoint_allowed_host)
    Endpoint(None, host=args.endpoint_host, port=args.endpoint_port, token=token, allowed_hosts=allowed)
    _probe_bind(args.endpoint_host, args.endpoint_port)
    return EndpointSpec(args.endpoint_port, host=args.endpoint_host, token=token, allowed_hosts=allowed)


def _probe_bind(host: str, port: int) -> None:
    """Bind HOST:PORT once and let it go (SO_REUSEADDR, as the endpoint's server does)."""
    import socket

    from pals.errors import ConfigError

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise ConfigError(f"--endpoint-host {host!r} is not an address of this machine ({error}); "
                          "give an IP address or a name that resolves") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as error:
            raise ConfigError(f"cannot listen on {host}:{port} ({error.strerror or error}); "
                              "pick another --endpoint-port or --endpoint-host") from None
