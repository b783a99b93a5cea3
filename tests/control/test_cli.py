"""`pals run` and `pals demo` end to end on the simulated node (short simulated durations)."""

from __future__ import annotations

import json

from pals.cli import main

REQUIRED = ("tokens_per_joule", "qos_violation_pct", "power_tracking_error_pct", "budget_overshoot_pct",
            "mean_power_w", "throughput_tps", "config_changes")


def test_pals_run_writes_decisions_and_summary(pals_cache, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["run", "--node", "sim", "--model", "Qwen1.5-MoE-A2.7B", "--gpu", "A100-SXM4-80GB", "--tp", "4",
               "--policy", "pals", "--trace", "conv", "--rate-scale", "2", "--target-tps", "1500",
               "--budget-w", "1200", "--budget-kind", "node", "--duration-s", "20", "--out", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in REQUIRED:
        assert isinstance(summary[key], (int, float)), key
    assert summary["policy"] == "pals" and summary["intervals"] == 40
    lines = (out / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == 41
    record = json.loads(lines[5])
    assert {"time_s", "sample", "decision", "predicted", "measured"} <= set(record)
    assert "wrote" in capsys.readouterr().out
    # The predictor built on the fly is cached for the next run.
    assert list((pals_cache / "profiles").glob("Qwen1.5-MoE-A2.7B*conv-paired*.predictor"))


def test_pals_run_bad_schedule_is_one_line_exit_2(pals_cache, tmp_path, capsys):
    schedule = tmp_path / "s.csv"
    schedule.write_text("time_s,budget_w\n30,1200\n10,1100\n")
    rc = main(["run", "--model", "Mixtral-8x7B", "--policy", "baseline", "--saturate", "--budget-schedule",
               str(schedule), "--duration-s", "5", "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "sort the rows" in err


def test_pals_run_unknown_model_is_one_line(pals_cache, tmp_path, capsys):
    rc = main(["run", "--model", "NoSuchModel", "--policy", "baseline", "--saturate", "--duration-s", "5",
               "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2 and "unknown model" in capsys.readouterr().err


def test_pals_demo_short(pals_cache, tmp_path, capsys):
    rc = main(["demo", "--duration-s", "40", "--out", str(tmp_path / "demo")])
    assert rc == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert set(summary) == {"baseline", "pals"}
    for entry in summary.values():
        for key in REQUIRED:
            assert key in entry
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "tok/J node" in out and "running pals" in out
