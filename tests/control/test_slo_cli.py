"""`pals run --slo-*`: the SLO reaches the loop and the policy's latency model (simulated node)."""

from __future__ import annotations

import json

import pytest

from pals.cli import main


def test_bad_slo_flags_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--model", "OLMoE-1B-7B", "--policy", "baseline", "--saturate", "--slo-tpot-ms", "0",
              "--duration-s", "5", "--out", str(tmp_path / "x")])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--slo-tpot-ms" in err[0]
    assert not (tmp_path / "x").exists()


def test_the_slo_is_judged_and_summarised(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--model", "OLMoE-1B-7B", "--tp", "1", "--policy", "baseline", "--saturate",
                 "--slo-tpot-ms", "1", "--duration-s", "20", "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # A 1 ms TPOT cannot be met: every judged interval violates, and the latency figures are there.
    assert summary["slo_violation_pct"] > 50.0
    assert summary["tpot_p99_ms"] > 1.0
    first = json.loads((out / "decisions.jsonl").read_text().splitlines()[0])
    assert first["slo"]["tpot_ms"] == 1.0
