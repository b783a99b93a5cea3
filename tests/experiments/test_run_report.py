"""`pals report RUN_DIR`: a short simulated run drawn as a PNG; bad input gets one clear line."""

from __future__ import annotations

import gzip
import json
import math
import struct

import numpy as np
import pytest

from pals.cli import main
from pals.experiments.run_report import _binned, tokens_per_joule_windows
from pals.experiments.run_series import load_run

RUN = ["run", "--model", "GPT-2", "--tp", "1", "--num-gpus", "1", "--policy", "baseline", "--rate", "2",
       "--target-tps", "100", "--budget-w", "800", "--duration-s", "10", "--quiet"]


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main([*RUN, "--out", str(out)]) == 0
    return out


def _error_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_report_of_a_simulated_run(run_dir, capsys):
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    assert f"wrote {run_dir / 'report.png'}" in capsys.readouterr().out
    width, height = _png_size(run_dir / "report.png")
    assert width > 800 and height > 1000  # four panels, one above the other
    # The report reads the same log the summary was made from: same energy, tokens and changes.
    series = load_run(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    totals = series.totals()
    assert len(series) == 20  # 10 s of 500 ms intervals (the first line has no measurement)
    assert totals["tokens_per_joule"] == pytest.approx(summary["tokens_per_joule"], rel=2e-3)
    assert totals["mean_node_power_w"] == pytest.approx(summary["mean_power_w"], rel=2e-3)
    assert totals["config_changes"] == summary["config_changes"]
    assert np.all(series.node_budget_w == 800.0) and np.all(np.isnan(series.gpu_budget_w))
    assert np.all(series.target_tps == 100.0)
    assert series.restarts_s == []
    # The simulated node reports latency percentiles: the log carries them, the report plots them.
    assert {"tpot_p50_s", "tpot_p99_s"} <= set(series.latency_s)
    assert np.isfinite(series.latency_s["tpot_p99_s"][1:]).all()


def test_report_to_a_chosen_file_with_latency_and_a_restart(run_dir, tmp_path):
    # A controller restarted onto the same log, with the planned latency keys in its samples.
    lines = (run_dir / "decisions.jsonl").read_text().splitlines()
    with_latency = []
    for line in lines:
        data = json.loads(line)
        if data["sample"] is not None:
            data["sample"].update(ttft_p50_s=0.2, ttft_p99_s=0.9, tpot_p50_s=0.03, tpot_p99_s=0.05)
        with_latency.append(json.dumps(data))
    log = tmp_path / "decisions.jsonl"
    log.write_text("\n".join(lines + with_latency) + "\n")
    series = load_run(log)
    assert len(series) == 40
    assert np.all(np.diff(series.t_s) > 0), "the second run continues the time axis"
    assert series.restarts_s == [pytest.approx(10.0, abs=0.6)]
    assert sorted(series.latency_s) == ["tpot_p50_s", "tpot_p99_s", "ttft_p50_s", "ttft_p99_s"]
    # The first run's own latency (the simulator's), then the injected values of the second.
    assert (series.latency_s["ttft_p99_s"][:20] != 0.9).all() and (series.latency_s["ttft_p99_s"][20:] == 0.9).all()
    out = tmp_path / "sub" / "r.png"
    plain = tmp_path / "plain.png"
    assert main(["report", str(log), "--out", str(out)]) == 0
    # The same log without latency keys (a node that reports none) has no latency panels.
    stripped = []
    for line in lines:
        data = json.loads(line)
        if data["sample"] is not None:
            data["sample"] = {k: v for k, v in data["sample"].items() if not k.startswith(("ttft_", "tpot_"))}
        stripped.append(json.dumps(data))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "decisions.jsonl").write_text("\n".join(stripped) + "\n")
    assert main(["report", str(tmp_path / "plain"), "--out", str(plain)]) == 0
    assert _png_size(out)[1] > _png_size(plain)[1] + 400  # two latency panels more


def test_rotated_history_is_read_oldest_first(run_dir, tmp_path):
    lines = (run_dir / "decisions.jsonl").read_text().splitlines(keepends=True)
    # Oldest in .2.gz, then .1 (rotated, not compressed yet), then the live file.
    with gzip.open(tmp_path / "decisions.jsonl.2.gz", "wt") as handle:
        handle.writelines(lines[:8])
    (tmp_path / "decisions.jsonl.1").write_text("".join(lines[8:15]))
    (tmp_path / "decisions.jsonl").write_text("".join(lines[15:]))
    series = load_run(tmp_path)
    whole = load_run(run_dir)
    assert len(series) == len(whole) and series.restarts_s == []
    np.testing.assert_array_equal(series.t_s, whole.t_s)
    np.testing.assert_array_equal(series.node_power_w, whole.node_power_w)


def test_a_line_cut_by_a_crash_is_skipped(run_dir, tmp_path, capsys):
    text = (run_dir / "decisions.jsonl").read_text()
    (tmp_path / "decisions.jsonl").write_text(text + '{"t_s": 10.5, "time_s": 1')
    series = load_run(tmp_path)
    assert len(series) == 20
    assert "cut short" in capsys.readouterr().err


def test_bad_input_gets_one_clear_line(run_dir, tmp_path, capsys):
    assert "does not exist" in _error_line(capsys, ["report", str(tmp_path / "nowhere")])
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert "has no decisions.jsonl" in _error_line(capsys, ["report", str(empty_dir)])
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "decisions.jsonl").write_bytes(b"\x00\xffPK\x03\x04 not json at all\n")
    line = _error_line(capsys, ["report", str(garbage)])
    assert "decisions.jsonl" in line and "PALS decision log" in line
    other = tmp_path / "other.jsonl"
    other.write_text('{"hello": "world"}\n')
    assert f"{other}:1" in _error_line(capsys, ["report", str(other)])
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n")
    assert "is empty" in _error_line(capsys, ["report", str(blank)])
    first_only = tmp_path / "first.jsonl"
    first_only.write_text((run_dir / "decisions.jsonl").read_text().splitlines()[0] + "\n")
    assert "no measured interval" in _error_line(capsys, ["report", str(first_only)])
    lines = (run_dir / "decisions.jsonl").read_text().splitlines()
    wrong = json.loads(lines[3])
    wrong["sample"]["throughput_tps"] = "fast"
    typed = tmp_path / "typed.jsonl"
    typed.write_text("\n".join(lines[:3] + [json.dumps(wrong)]) + "\n")
    assert "not a number" in _error_line(capsys, ["report", str(typed)])
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert "cannot write" in _error_line(capsys, ["report", str(run_dir), "--out", str(blocked / "r.png")])


def test_a_null_reading_is_a_gap_not_a_crash(run_dir, tmp_path):
    # The log writes NaN as null: such an interval is left out of the sums and drawn as a gap.
    lines = (run_dir / "decisions.jsonl").read_text().splitlines()
    gap = json.loads(lines[5])
    gap["sample"]["node_power_w"] = None
    (tmp_path / "decisions.jsonl").write_text("\n".join(lines[:5] + [json.dumps(gap)] + lines[6:]) + "\n")
    series = load_run(tmp_path)
    assert np.isnan(series.node_power_w[4]) and np.isfinite(np.delete(series.node_power_w, 4)).all()
    totals = series.totals()
    assert math.isfinite(totals["tokens_per_joule"]) and totals["tokens_per_joule"] > 0
    assert main(["report", str(tmp_path)]) == 0


def test_bin_means_and_token_windows():
    t, means = _binned(np.array([0, 0, 1, 1, 1, 3]), np.arange(6.0), np.array([1.0, 3.0, np.nan, 4.0, 6.0, 7.0]))
    np.testing.assert_array_equal(t, [1.0, 4.0, 5.0])
    np.testing.assert_array_equal(means, [2.0, 5.0, 7.0])

    class Series:  # what tokens_per_joule_windows reads
        t_s = np.arange(1, 9) * 0.5
        interval_s = np.full(8, 0.5)
        throughput_tps = np.array([100.0] * 4 + [300.0] * 4)
        node_power_w = np.array([200.0] * 4 + [200.0] * 4)

    ends, tpj = tokens_per_joule_windows(Series, 2.0)
    # Windows 2 s wide from the first interval's end: 100 tokens/s then 300 tokens/s at 200 W.
    np.testing.assert_allclose(tpj, [0.5, 1.5])
    assert ends.tolist() == [2.0, 4.0]
