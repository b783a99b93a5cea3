"""The headline figures mean what the README says, checked against the simulator's exact counters.

A summary whose `tokens_per_joule` were computed on GPU energy, or a `pals run` that dropped
`--budget-w` or `--target-tps` on the way to the loop, fails here.
"""

from __future__ import annotations

import json

import pytest

from pals.cli import main
from pals.runtime.deployment import Deployment
from pals.runtime.load import LoadSpec
from pals.runtime.scenario import run_scenario


def test_tokens_per_joule_is_on_node_energy_and_the_gpu_figure_on_gpu_energy():
    result = run_scenario(Deployment("OLMoE-1B-7B", tp=1), LoadSpec(saturate=True, seed=3), "baseline",
                          duration_s=30.0)
    s, truth = result.summary, result.truth_summary
    node_tpj = truth["generated_tokens"] / truth["node_energy_j"]
    gpu_tpj = truth["generated_tokens"] / truth["gpu_energy_j"]
    # The two differ by far more than the 3 % allowed below (the node line adds ~345 W), so a
    # summary that swapped them cannot pass.
    assert gpu_tpj > 1.1 * node_tpj
    assert s["tokens_per_joule"] == pytest.approx(node_tpj, rel=0.03)
    assert s["tokens_per_joule_gpu"] == pytest.approx(gpu_tpj, rel=0.03)


def test_pals_run_hands_budget_and_target_to_the_loop(tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--model", "OLMoE-1B-7B", "--tp", "1", "--policy", "baseline", "--saturate",
                 "--budget-w", "1234", "--target-tps", "567", "--duration-s", "5", "--out", str(out),
                 "--quiet"]) == 0
    lines = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert all(rec["budget"] == {"budget_w": 1234.0, "kind": "node"} for rec in lines)
    assert all(rec["target"] == {"target_tps": 567.0} for rec in lines)
