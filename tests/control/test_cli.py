"""`pals run` end to end on the simulated node (short simulated durations; `pals demo`: test_demo.py)."""

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


def test_pals_run_static_flags_are_checked_with_one_line(pals_cache, tmp_path, capsys):
    base = ["run", "--model", "OLMoE-1B-7B", "--saturate", "--duration-s", "2", "--quiet"]
    cases = [
        (["--policy", "static", "--power-cap-w", "150"], "give both --power-cap-w W and --batch-cap B"),
        (["--policy", "static", "--power-cap-w", "50", "--batch-cap", "8"], "give a cap from 100 to 400 W"),
        (["--policy", "static", "--power-cap-w", "150", "--batch-cap", "65"], "from 1 to 64"),
        (["--policy", "baseline", "--batch-cap", "8"], "for --policy static only"),
        (["--policy", "pals", "--meet-like", "x.json"], "for --policy hindsight only"),
    ]
    for extra, message in cases:
        out = tmp_path / f"o{len(extra)}"
        assert main(base + extra + ["--out", str(out)]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (extra, err)
        assert not out.exists(), "nothing is written on bad flags"
    out = tmp_path / "static"
    assert main(base + ["--policy", "static", "--power-cap-w", "150", "--batch-cap", "8", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["static"] == {"power_cap_w": 150.0, "batch_cap": 8} and summary["objective"] == "node"
    configs = {json.dumps(json.loads(line)["decision"]["config"]) for line in (out / "decisions.jsonl").read_text().splitlines()}
    assert configs == {json.dumps({"power_cap_w": 150.0, "batch_cap": 8})}


def test_pals_run_hindsight_writes_the_whole_table(pals_cache, tmp_path, capsys):
    under_test = tmp_path / "under-test.json"
    under_test.write_text(json.dumps({"qos_violation_pct": 100.0, "budget_overshoot_pct": 0.0}))
    out = tmp_path / "hindsight"
    rc = main(["run", "--model", "OLMoE-1B-7B", "--policy", "hindsight", "--rate", "20", "--target-tps", "1000",
               "--duration-s", "5", "--meet-like", str(under_test), "--out", str(out), "--quiet"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["hindsight"]
    assert entry["configurations"] == 36 and entry["table"] == "hindsight.csv"
    rows = (out / "hindsight.csv").read_text().splitlines()
    assert len(rows) == 37
    # Every configuration meets "no more violations than 100 %": the best is the highest tokens/J of all.
    best = max(float(r.split(",")[2]) for r in rows[1:])
    assert entry["meeting"] == 36 and summary["tokens_per_joule"] == best
    assert "hindsight optimum" in capsys.readouterr().out


def test_a_bad_node_name_is_one_line_before_anything_runs(pals_cache, tmp_path, capsys):
    for name in ("two words", "", "-lead", 'q"uote', "x" * 254):
        out = tmp_path / "o"
        rc = main(["run", "--model", "Mixtral-8x7B", "--policy", "baseline", "--saturate", "--duration-s", "5",
                   f"--node-name={name}", "--out", str(out), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and "--node-name" in err, (name, err)
        assert not out.exists(), name
    # pals serve refuses it before it looks for vLLM.
    rc = main(["serve", "some/model", "--policy", "baseline", "--max-num-seqs", "8", "--node-name", "a b"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--node-name" in err, err


def test_node_name_labels_every_series_and_defaults_to_the_host_name():
    import socket

    from pals.control.metrics import ControllerMetrics, check_node_name, resolve_node_name

    assert resolve_node_name("vllm-0.pals-agent") == "vllm-0.pals-agent"
    assert resolve_node_name(None) == check_node_name(socket.gethostname())
    metrics = ControllerMetrics(policy="pals")
    metrics.count("node_errors")
    metrics.set_node("n1")
    from prometheus_client.parser import text_string_to_metric_families

    labels = {(s.labels["node"], s.labels["policy"]) for f in text_string_to_metric_families(
        metrics.exposition().decode()) for s in f.samples}
    assert labels == {("n1", "pals")}
    assert metrics.sample_value("pals_node_errors_total") == 1.0  # renaming kept the counter
