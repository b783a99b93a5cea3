"""The flags of `pals run` and `pals demo` at the edge (issue 13): every bad number, path, token or file is
one stderr line and exit 2 before anything is profiled or written; a bug is one line and exit 1; SIGINT and
SIGTERM still leave a summary; the endpoint's host, token and allowed names reach it.

The bad-number cases run `pals.cli.main` in process (argparse refuses them before any handler runs); the
cases that reach a handler, and the signal test, run `python -m pals` as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

import pals
from pals.cli import main

SRC = str(Path(pals.__file__).resolve().parents[1])

GARBAGE = ["nan", "NaN", "inf", "-inf", "1e400", "abc", "", "0x10", "1,5"]
"""Not a finite number in any flag's range."""

# flag -> (values that must be refused besides GARBAGE). "0" and "-1" are listed where they are bad
# (0 is a valid seed, port and percentage).
RUN_NUMERIC = {
    "--duration-s": ["0", "-1", "1e9", "1e-300"],
    "--interval-s": ["0", "-1", "1e9", "1e-300"],
    "--seed": ["-1", "2.5", str(2**32), "9" * 5000],
    "--endpoint-port": ["-1", "70000", "99999", "1.5"],
    "--budget-w": ["0", "-1", "1e20", "1e308", "1e-300"],
    "--target-tps": ["0", "-1", "1e20", "1e-300"],
    "--rate": ["0", "-1", "1e20"],
    "--rate-scale": ["0", "-1", "1e20"],
    "--batch-cap-max": ["0", "-1", "2000", "1.5"],
    "--batch-cap": ["0", "-1", "2000", "1.5"],
    "--power-cap-w": ["0", "-1", "1e20"],
    "--tp": ["0", "-1", "5000", "1.5"],
    "--num-gpus": ["0", "-1", "5000", "1.5"],
    "--workers": ["0", "-1", "100000"],
    "--max-qos-violation-pct": ["-1", "101", "1e20"],
    "--max-budget-overshoot-pct": ["-1", "101", "1e20"],
}
DEMO_NUMERIC = {
    "--duration-s": ["0", "-1", "1e9"],
    "--seed": ["-1", "2.5", str(2**32)],
}


def _run_argv(out: Path, flag: str, value: str) -> list[str]:
    base = {"--model": "Mixtral-8x7B", "--policy": "baseline", "--duration-s": "1", "--out": str(out)}
    argv = ["run"]
    for key, default in base.items():
        if key != flag:
            argv += [key, default]
    if flag != "--rate":
        argv += ["--trace", "conv"]
    return argv + [f"{flag}={value}"]  # `=`: a value starting with '-' is still this flag's value


def _main_exit(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stop:  # argparse's usage errors
        return stop.code


def _cases(table: dict[str, list[str]]):
    return [(flag, value) for flag, bad in table.items() for value in bad + GARBAGE]


@pytest.mark.parametrize("flag,value", _cases(RUN_NUMERIC))
def test_pals_run_refuses_every_bad_number_in_one_line(tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    code = _main_exit(_run_argv(out, flag, value))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pals run: error:") and flag in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("flag,value", _cases(DEMO_NUMERIC))
def test_pals_demo_refuses_every_bad_number_in_one_line(tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    code = _main_exit(["demo", "--out", str(out), f"{flag}={value}"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and flag in err and "Traceback" not in err, err
    assert not out.exists()


def test_range_errors_name_the_limit(tmp_path, capsys):
    _main_exit(_run_argv(tmp_path / "out", "--budget-w", "1e20"))
    assert "from 1 to 10,000,000 W" in capsys.readouterr().err
    _main_exit(_run_argv(tmp_path / "out", "--batch-cap-max", "2000"))
    assert "from 1 to 1,024" in capsys.readouterr().err


def test_an_unexpected_exception_is_one_line_naming_pals_debug(monkeypatch, capsys, tmp_path):
    import pals.cli.run as run_module

    def broken(args):
        raise RuntimeError("something inside broke\nover two lines")

    monkeypatch.setattr(run_module, "run", broken)
    monkeypatch.delenv("PALS_DEBUG", raising=False)
    code = main(_run_argv(tmp_path / "out", "--seed", "1"))
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "RuntimeError" in err and "PALS_DEBUG=1" in err and "Traceback" not in err


# -- through the real command line ------------------------------------------------------------------


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PALS_CACHE_DIR", str(tmp_path / "cache"))
    env.pop("PALS_ENDPOINT_TOKEN", None)
    env.pop("PALS_DEBUG", None)
    env.update(extra)
    return env


def _pals(tmp_path: Path, *argv: str, timeout_s: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pals", *argv], capture_output=True, text=True,
                          env=_env(tmp_path, **env), timeout=timeout_s, cwd=tmp_path)


def _refused(result: subprocess.CompletedProcess, *words: str) -> str:
    err = result.stderr
    assert result.returncode == 2, (result.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


BASELINE = ("run", "--model", "Mixtral-8x7B", "--policy", "baseline", "--trace", "conv", "--quiet")


def _token_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_text("s3cret-token-of-enough-length\n")
    path.chmod(mode)
    return path


def test_paths_and_endpoint_settings_are_refused_before_anything_runs(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    out = tmp_path / "out"
    cases = [
        ((*BASELINE, "--duration-s", "1", "--out", str(a_file)), {}, ["--out", "not a directory"]),
        ((*BASELINE, "--duration-s", "1", "--out", str(a_file / "sub")), {}, ["--out"]),
        ((*BASELINE, "--duration-s", "1", "--out", str(out)), {"PALS_CACHE_DIR": str(a_file / "cache")},
         ["PALS_CACHE_DIR"]),
        ((*BASELINE, "--duration-s", "1", "--out", str(out), "--endpoint-port", "0", "--endpoint-host", "0.0.0.0"),
         {}, ["not loopback", "--endpoint-token-file"]),
        ((*BASELINE, "--duration-s", "1", "--out", str(out), "--endpoint-port", "0",
          "--endpoint-token-file", str(_token_file(tmp_path, 0o644))), {}, ["chmod 600"]),
        ((*BASELINE, "--duration-s", "1", "--out", str(out), "--endpoint-allowed-host", "node1"), {},
         ["--endpoint-port"]),
        (("run", "--model", "Mixtral-8x7B", "--policy", "static", "--power-cap-w", "5000", "--batch-cap", "8",
          "--trace", "conv", "--duration-s", "1", "--out", str(out)), {}, ["--power-cap-w", "100 to 400 W"]),
    ]
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 8)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    common = ("run", "--model", "Mixtral-8x7B", "--duration-s", "1", "--out", str(out))
    cases += [
        ((*common, "--policy", "baseline", "--trace", str(garbage)), {}, ["trace", "not UTF-8"]),
        ((*common, "--policy", "baseline", "--saturate", "--budget-schedule", str(deep)), {}, ["nested deeper"]),
        ((*common, "--policy", "hindsight", "--saturate", "--meet-like", str(deep)), {}, ["--meet-like"]),
        ((*common, "--policy", "hindsight", "--saturate", "--meet-like", str(garbage)), {}, ["--meet-like"]),
        ((*common, "--policy", "pals", "--saturate", "--predictor", str(garbage)), {}, ["predictor"]),
    ]
    for argv, env, words in cases:
        _refused(_pals(tmp_path, *argv, **env), *words)
        assert not out.exists(), argv


def test_a_port_in_use_is_one_line_before_profiling(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = _pals(tmp_path, "run", "--model", "Mixtral-8x7B", "--policy", "pals", "--trace", "conv",
                       "--duration-s", "1", "--out", str(tmp_path / "out"), "--endpoint-port", str(port))
    _refused(result, str(port), "--endpoint-port")
    assert not (tmp_path / "cache").exists()  # refused before profiling


def test_physics_files_garbage_and_another_gpus_are_refused(tmp_path):
    from pals.sim.physics import physics_file_text

    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xff\xfe binary")
    other = tmp_path / "h100.json"
    other.write_text(physics_file_text("H100-SXM", {"mem_sm_activity": 0.5}))
    for path, words in ((garbage, ["garbage.json"]), (other, ["H100-SXM", "A100-SXM4-80GB"])):
        _refused(_pals(tmp_path, *BASELINE, "--duration-s", "1", "--out", str(tmp_path / "out"),
                       "--physics", str(path)), *words)
        _refused(_pals(tmp_path, "demo", "--duration-s", "1", "--physics", str(path)), *words)
    assert not (tmp_path / "out").exists()


def test_physics_and_batch_cap_max_reach_the_simulated_node(tmp_path):
    from pals.cli.run import deployment_from_args
    from pals.sim.physics import load_physics, physics_file_text

    path = tmp_path / "h100.json"
    path.write_text(physics_file_text("H100-SXM", {"mem_sm_activity": 0.5}))

    def deployment(gpu, batch_cap_max=None, physics=None):
        return deployment_from_args(Namespace(model="Mixtral-8x7B", gpu=gpu, tp=4, num_gpus=4,
                                              batch_cap_max=batch_cap_max, physics=physics))

    assert deployment("A100-SXM4-80GB").batch_cap_max == 64  # the paper's grid
    assert deployment("H100-SXM").batch_cap_max == 256  # the preset's grid top
    assert deployment("H100-SXM", batch_cap_max=1024).sim_spec().batch_cap_max == 1024
    spec = deployment("H100-SXM", physics=str(path)).sim_spec()
    assert spec.params == load_physics(path, "H100-SXM")
    assert spec.params.mem_sm_activity == 0.5
    assert deployment("H100-SXM", physics=str(path)).key() != deployment("H100-SXM").key()


def test_lab_physics_reaches_every_node(tmp_path):
    from pals.core.paper import PAPER_GPU
    from pals.experiments.common import Lab
    from pals.sim.physics import load_physics, physics_file_text

    path = tmp_path / "a100.json"
    path.write_text(physics_file_text(PAPER_GPU, {"mem_sm_activity": 0.45}))
    physics = load_physics(path, PAPER_GPU)
    lab = Lab(work_dir=tmp_path / "lab", physics=physics)
    assert lab.spec("Mixtral-8x7B", 4).params == physics
    assert Lab(work_dir=tmp_path / "lab2").spec("Mixtral-8x7B", 4).params is None


def test_a_static_run_at_batch_cap_1024_on_h100(tmp_path):
    out = tmp_path / "out"
    result = _pals(tmp_path, "run", "--model", "OLMoE-1B-7B", "--gpu", "H100-SXM", "--policy", "static",
                   "--power-cap-w", "500", "--batch-cap", "1024", "--batch-cap-max", "1024", "--saturate",
                   "--duration-s", "2", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["deployment"]["batch_cap_max"] == 1024
    caps = {json.loads(line)["decision"]["config"]["batch_cap"] for line in (out / "decisions.jsonl").open()}
    assert caps == {1024}


def test_endpoint_with_a_token_serves_and_each_run_starts_a_fresh_log(tmp_path):
    out = tmp_path / "out"
    argv = (*BASELINE, "--duration-s", "2", "--out", str(out), "--endpoint-port", "0",
            "--endpoint-token-file", str(_token_file(tmp_path)), "--endpoint-allowed-host", "node1.example")
    first = _pals(tmp_path, *argv)
    assert first.returncode == 0, first.stderr
    second = _pals(tmp_path, *[a for a in argv if a != "--quiet"])  # with progress: the endpoint line
    assert second.returncode == 0, second.stderr
    assert "endpoint on http://127.0.0.1:" in second.stderr and "bearer token" in second.stderr
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == summary["intervals"] + 1  # one run's records (+ the first decision at t = 0)
    assert summary["interrupted"] is False
    assert [p.name for p in out.iterdir() if p.name.startswith("decisions.jsonl.1")]  # the first run, rotated


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_with_a_summary(tmp_path, signum):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pals", *BASELINE, "--duration-s", "100000", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                            cwd=tmp_path)
    log = out / "decisions.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (log.exists() and log.read_text().count("\n") >= 5):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no intervals logged in 120 s"
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    logged = len(log.read_text().splitlines())
    assert summary["intervals"] >= 4
    assert summary["intervals"] == logged - 1  # the summary counts every interval the log holds
    assert summary["duration_s"] < 100000
