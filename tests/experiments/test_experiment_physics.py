"""`pals experiment NAME --physics physics.json`: every experiment's simulated nodes run the fitted physics (through
`Lab` and `pals.experiments.lab_physics`), each report's setup line names it, and a bad file is one clear line."""

from __future__ import annotations

import csv
import json

import pytest

from pals.cli import build_parser, main
from pals.core.paper import PAPER_GPU
from pals.experiments import EXPERIMENTS
from pals.experiments.common import Lab
from pals.experiments.lab_physics import PRESET_LABEL, physics_label, physics_scope, scoped_physics
from pals.sim.physics import physics_file_text

COOLER = {"sm_power_frac_tdp": 0.5, "hbm_power_frac_tdp": 0.1, "busy_floor_frac_tdp": 0.15}
"""A100 power terms well below the preset's: the same steps draw less."""


def _physics(tmp_path, gpu: str = PAPER_GPU, params: dict | None = None, name: str = "physics.json"):
    path = tmp_path / name
    path.write_text(physics_file_text(gpu, COOLER if params is None else params))
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_every_lab_built_in_the_scope_runs_the_file(tmp_path):
    path = _physics(tmp_path)
    preset = Lab(quick=True, work_dir=tmp_path / "a").measure("GPT-2", 1, 400.0, 64, warmup_s=3.0, window_s=5.0)
    with physics_scope(path) as scope:
        assert scope is not None and scope.source == str(path)
        lab = Lab(quick=True, work_dir=tmp_path / "b")
        assert lab.physics is scoped_physics() and lab.physics.sm_power_frac_tdp == COOLER["sm_power_frac_tdp"]
        assert lab.deployment("GPT-2", 1).physics is lab.physics and lab.spec("GPT-2", 1).params is lab.physics
        assert physics_label() == f"fitted for {PAPER_GPU}, from {path}"
        fitted = lab.measure("GPT-2", 1, 400.0, 64, warmup_s=3.0, window_s=5.0)
        assert Lab(physics=None, work_dir=tmp_path / "c").physics is None  # an explicit choice wins
        assert scoped_physics("H100-SXM") is None  # the file is the A100's: other GPUs keep their presets
    assert fitted.gpu_power_total_w < 0.9 * preset.gpu_power_total_w
    # The scope ends with the experiment: nothing leaks into the next lab.
    assert Lab(work_dir=tmp_path / "d").physics is None and physics_label() == PRESET_LABEL


def _tokens_per_joule(out):
    with (out / "tables" / "gaps_per_seed.csv").open() as handle:
        return {(r["model"], r["cap W"], r["seed"]): float(r["best tokens/J at fixed TP"]) for r in csv.DictReader(handle)}


def test_a_quick_experiment_measures_the_fitted_power(tmp_path):
    """tp-headroom (the cheapest experiment on simulated nodes, seconds in --quick): lower power terms raise the
    tokens/J it measures at every model, cap and seed, and its report says which physics ran."""
    path = _physics(tmp_path)
    preset, fitted = tmp_path / "preset", tmp_path / "fitted"
    assert main(["experiment", "tp-headroom", "--quick", "--out", str(preset)]) == 0
    assert main(["experiment", "tp-headroom", "--quick", "--physics", str(path), "--out", str(fitted)]) == 0
    before, after = _tokens_per_joule(preset), _tokens_per_joule(fitted)
    assert before.keys() == after.keys() and before
    for key, value in before.items():
        assert after[key] > 1.05 * value, key
    assert json.loads((fitted / "summary.json").read_text())["setup"]["physics"] == f"fitted for {PAPER_GPU}, from {path}"
    assert f"physics = fitted for {PAPER_GPU}, from {path}" in (fitted / "report.md").read_text()
    assert f"physics = {PRESET_LABEL}" in (preset / "report.md").read_text()


def test_fidelity_runs_the_file_for_its_gpu_points_only(tmp_path):
    path = _physics(tmp_path)
    preset, fitted = tmp_path / "preset", tmp_path / "fitted"
    assert main(["experiment", "fidelity", "--quick", "--out", str(preset)]) == 0
    assert main(["experiment", "fidelity", "--quick", "--physics", str(path), "--out", str(fitted)]) == 0

    def table(out, name):
        with (out / "tables" / f"{name}.csv").open() as handle:
            return list(csv.DictReader(handle))

    rows = list(zip(table(preset, "points"), table(fitted, "points")))
    a100 = [(b, a) for b, a in rows if b["GPU"] == PAPER_GPU and b["W sim"]]
    others = [(b, a) for b, a in rows if b["GPU"] != PAPER_GPU]
    assert a100 and others
    assert all(float(a["W sim"]) < float(b["W sim"]) for b, a in a100)
    # The other GPUs' points and the H100 cross-check keep their presets' physics.
    assert all(a["tok/s sim"] == b["tok/s sim"] and a["TPOT sim s"] == b["TPOT sim s"] for b, a in others)
    assert [r["GPU W"] for r in table(fitted, "h100_band")] == [r["GPU W"] for r in table(preset, "h100_band")]
    assert "its GPU's points" in json.loads((fitted / "summary.json").read_text())["setup"]["physics"]


@pytest.mark.parametrize("name", ["tp-headroom", "all"])
def test_a_bad_physics_file_is_one_line_before_anything_runs(tmp_path, capsys, name):
    bad = tmp_path / "bad.json"
    bad.write_text("this is not json")
    assert main(["experiment", name, "--quick", "--physics", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "is not valid JSON" in _error_line(capsys)
    h100 = _physics(tmp_path, "H100-SXM", {}, "h100.json")
    assert main(["experiment", name, "--quick", "--physics", str(h100), "--out", str(tmp_path / "y")]) == 2
    assert f"was fitted for H100-SXM, not {PAPER_GPU}" in _error_line(capsys)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_help_says_every_experiment_takes_it():
    parser = build_parser()
    experiment = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "experiment")[1]
    text = " ".join(experiment.format_help().split())
    assert "every simulated node of every experiment runs it" in text
    assert "for now" not in text and "Taken by" not in text
    assert set(EXPERIMENTS) <= set(text.replace(",", " ").split())
