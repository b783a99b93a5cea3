"""`pals coordinate` at the edge: bad flags and files get one clear line, a down node never stops it,
the endpoint token comes from a file or the environment."""

import json
import os

import pytest

from pals.cli import coordinate as cli
from pals.cli import main
from pals.cluster import client as client_module
from pals.cluster import coordinator as coordinator_module
from pals.control.endpoint import Endpoint

GOOD = ["coordinate", "--node", "a=http://127.0.0.1:9", "--cluster-budget-w", "3000", "--once"]


def _closed_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("flag, value, needle", [
    ("--timeout-s", "inf", "--timeout-s"), ("--timeout-s", "nan", "--timeout-s"),
    ("--timeout-s", "0", "--timeout-s"), ("--timeout-s", "-1", "--timeout-s"), ("--timeout-s", "1e9", "600"),
    ("--cluster-budget-w", "nan", "--cluster-budget-w"), ("--cluster-budget-w", "inf", "--cluster-budget-w"),
    ("--cluster-budget-w", "1e308", "1e+09"), ("--cluster-budget-w", "-5", "--cluster-budget-w"),
    ("--cluster-budget-w", "1e-300", "at least 1"), ("--cluster-budget-w", "lots", "expected a number"),
    ("--interval-s", "0", "--interval-s"), ("--interval-s", "nan", "--interval-s"),
    ("--duration-s", "inf", "--duration-s"), ("--retries", "9", "--retries"),
    ("--target", "a", "NAME=NUMBER"), ("--target", "=5", "NAME=NUMBER"), ("--target", "a=nan", "a:"),
    ("--target", "a=-1", "a:"), ("--target", "a=1e300", "a:"), ("--target", "a=fast", "a:"),
    ("--priority", "a=0", "a:"), ("--node-max-w", "a=inf", "a:"),
])
def test_bad_numbers_get_one_line_naming_the_flag(capsys, flag, value, needle):
    argv = [*GOOD]
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    _one_error_line(capsys, needle)


@pytest.mark.parametrize("node, needle", [
    ("a=http://127.0.0.1:99999", "1 to 65535"),
    ("a=http://127.0.0.1:0", "port 0"),
    ("a=https://127.0.0.1:9100", "only http://"),
    ("a=http://:9100", "no host"),
    ("=http://127.0.0.1:9100", "name before '=' is empty"),
    ("a=", "empty"),
    ("a=http://127.0.0.1:9100/?x=1", "query"),
    ("my node=http://127.0.0.1:9100", "spaces"),
])
def test_malformed_node_urls_get_one_line(capsys, node, needle):
    assert main(["coordinate", "--node", node, "--cluster-budget-w", "3000", "--once"]) == 2
    _one_error_line(capsys, needle)


def test_duplicate_names_and_unknown_targets_get_one_line(capsys):
    assert main([*GOOD, "--node", "a=http://127.0.0.1:10"]) == 2
    _one_error_line(capsys, "unique")
    assert main([*GOOD, "--target", "b=100"]) == 2
    _one_error_line(capsys, "unknown nodes")


def test_token_file_problems_get_one_line(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    spaced = tmp_path / "spaced"
    spaced.write_text("two words\n")
    for path, needle in ((empty, "empty"), (binary, "not text"), (spaced, "spaces"),
                         (tmp_path / "missing", "cannot read"), (tmp_path, "not a regular file")):
        assert main([*GOOD, "--endpoint-token-file", str(path)]) == 2
        _one_error_line(capsys, needle)


def test_token_comes_from_the_file_stripped_else_the_environment(tmp_path, capsys):
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    os.chmod(path, 0o600)
    assert cli.read_token(str(path), environ={"PALS_ENDPOINT_TOKEN": "other"}) == "s3cret"
    assert capsys.readouterr().err == ""
    os.chmod(path, 0o644)
    assert cli.read_token(str(path), environ={}) == "s3cret"
    assert "readable by other users" in capsys.readouterr().err
    assert cli.read_token(None, environ={"PALS_ENDPOINT_TOKEN": " envtok "}) == "envtok"
    assert cli.read_token(None, environ={}) is None


def test_log_to_a_directory_gets_one_line(capsys, tmp_path):
    assert main([*GOOD, "--log", str(tmp_path)]) == 2
    _one_error_line(capsys, "directory")


def test_cli_limits_agree_with_the_library():
    assert cli.MIN_BUDGET_W == coordinator_module.MIN_BUDGET_W
    assert cli.MAX_CLUSTER_BUDGET_W == coordinator_module.MAX_CLUSTER_BUDGET_W
    assert cli.MAX_TARGET_TPS == coordinator_module.MAX_TARGET_TPS
    assert cli.MAX_TIMEOUT_S == client_module.MAX_TIMEOUT_S
    assert cli.MAX_RETRIES == client_module.MAX_RETRIES


def test_once_with_a_node_down_writes_the_others_and_exits_1(capsys, live_loop):
    loop = live_loop()
    down = f"http://127.0.0.1:{_closed_port()}"
    with Endpoint(loop, port=0) as endpoint:
        code = main(["coordinate", "--node", f"a={endpoint.url}", "--node", f"b={down}",
                     "--cluster-budget-w", "3000", "--timeout-s", "2", "--once"])
    assert code == 1
    out = capsys.readouterr().out
    assert "1 up, 1 down" in out and "b: down" in out
    assert loop.budget.budget_w <= 3000 - coordinator_module.DEFAULT_UNKNOWN_NODE_MAX_W + 1e-6


def test_a_down_node_never_stops_the_coordinator_and_rounds_are_logged(capsys, tmp_path, live_loop):
    loop = live_loop()
    down = f"http://127.0.0.1:{_closed_port()}"
    log = tmp_path / "rounds.jsonl"
    with Endpoint(loop, port=0) as endpoint:
        code = main(["coordinate", "--node", f"a={endpoint.url}", "--node", f"b={down}",
                     "--cluster-budget-w", "3000", "--timeout-s", "2", "--interval-s", "0.1",
                     "--duration-s", "1.5", "--log", str(log)])
    assert code == 0
    rounds = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rounds) >= 2
    assert all(not r["nodes"]["b"]["up"] and r["nodes"]["a"]["up"] for r in rounds)
    assert all(r["in_force_end_w"] <= 3000 + 1e-6 for r in rounds)
    assert capsys.readouterr().out.count("b: down") == len(rounds)
