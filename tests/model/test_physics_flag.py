"""`--physics physics.json` (from `pals calibrate`) in `pals sweep`, `pals profile --node sim` and the
characterization: the file's physics reaches the simulated nodes, and a bad file is one clear line
(`pals experiment --physics`: tests/experiments/test_experiment_physics.py)."""

from __future__ import annotations

import pytest

from pals.cli import main
from pals.model.profile import read_profile
from pals.sim.physics import physics_file_text

H100 = ["--model", "Llama-2-7B", "--gpu", "H100-SXM", "--num-gpus", "1", "--tp", "1", "--caps", "700",
        "--batches", "8,64", "--warmup-s", "2", "--window-s", "5", "--no-progress", "--no-noise"]


def _physics(tmp_path, gpu: str, params: dict, name: str = "physics.json"):
    path = tmp_path / name
    path.write_text(physics_file_text(gpu, params))
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _rows(path):
    return {(r["power_cap_w"], int(r["batch_cap"])): r for r in read_profile(path).rows}


def test_sweep_runs_the_physics_file(tmp_path):
    preset = tmp_path / "preset.csv"
    assert main(["sweep", *H100, "--no-plots", "--out", str(preset)]) == 0
    # A file with no overrides is the preset's physics: the same node, the same numbers.
    same = tmp_path / "same.csv"
    assert main(["sweep", *H100, "--physics", str(_physics(tmp_path, "H100-SXM", {}, "empty.json")), "--no-plots",
                 "--out", str(same)]) == 0
    for point, row in _rows(preset).items():
        assert _rows(same)[point]["gpu_power_w"] == row["gpu_power_w"]
        assert _rows(same)[point]["throughput_tps"] == row["throughput_tps"]
    # Lower SM and HBM power: the same steps draw less.
    cooler = _physics(tmp_path, "H100-SXM", {"sm_power_frac_tdp": 0.5, "hbm_power_frac_tdp": 0.1})
    fitted = tmp_path / "fitted.csv"
    assert main(["sweep", *H100, "--physics", str(cooler), "--no-plots", "--out", str(fitted)]) == 0
    assert read_profile(fitted).metadata["physics"] == str(cooler)
    assert read_profile(preset).metadata["physics"] == "preset"
    for point, row in _rows(preset).items():
        assert _rows(fitted)[point]["gpu_power_w"] < 0.9 * row["gpu_power_w"], point


def test_profile_on_the_simulated_node_runs_the_physics_file(tmp_path):
    cooler = _physics(tmp_path, "H100-SXM", {"sm_power_frac_tdp": 0.5, "hbm_power_frac_tdp": 0.1})
    preset, fitted = tmp_path / "a.csv", tmp_path / "b.csv"
    assert main(["profile", *H100, "--out", str(preset)]) == 0
    assert main(["profile", "--node", "sim", *H100, "--physics", str(cooler), "--out", str(fitted)]) == 0
    assert _rows(fitted)[(700.0, 64)]["gpu_power_w"] < 0.9 * _rows(preset)[(700.0, 64)]["gpu_power_w"]


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "does not exist"),
        ("this is not json", "is not valid JSON"),
        ('{"anything": 1}', "is not a PALS physics file"),
        ('{"format": "pals-physics", "version": 1, "gpu": "H100-SXM", "params": {"warp_drive": 2}}',
         "unknown physics parameter(s) warp_drive"),
        ("A100", "was fitted for A100-SXM4-80GB, not H100-SXM; use --gpu A100-SXM4-80GB"),
    ],
)
@pytest.mark.parametrize("command", ["sweep", "profile"])
def test_a_bad_physics_file_is_one_clear_line(tmp_path, capsys, content, needle, command):
    path = tmp_path / "physics.json"
    if content == "A100":
        path = _physics(tmp_path, "A100-SXM4-80GB", {"sm_power_frac_tdp": 0.8})
    elif content is not None:
        path.write_text(content)
    out = tmp_path / "out.csv"
    assert main([command, *H100, "--physics", str(path), "--out", str(out)]) == 2
    assert needle in _error_line(capsys)
    assert not out.exists()


def test_physics_and_max_num_seqs_are_refused_for_a_real_node(tmp_path, capsys):
    path = _physics(tmp_path, "H100-SXM", {})
    assert main(["profile", "--node", "vllm", "--url", "http://localhost:8000", "--physics", str(path),
                 "--max-num-seqs", "256", "--out", str(tmp_path / "p.csv")]) == 2
    assert "--physics, --max-num-seqs apply only to the simulated node" in _error_line(capsys)


def test_characterization_sweeps_run_the_physics(tmp_path):
    from pals.experiments.characterization import measure_sweep
    from pals.sim.physics import load_physics

    params = load_physics(_physics(tmp_path, "A100-SXM4-80GB", {"sm_power_frac_tdp": 0.5, "hbm_power_frac_tdp": 0.1}),
                          "A100-SXM4-80GB")
    kwargs = dict(warmup_s=2.0, window_s=5.0, tag="t")
    preset = measure_sweep("OLMoE-1B-7B", 4, [(400.0, 64)], tmp_path / "a", **kwargs)
    fitted = measure_sweep("OLMoE-1B-7B", 4, [(400.0, 64)], tmp_path / "b", params=params, **kwargs)
    assert fitted.points[0].gpu_power_w < 0.9 * preset.points[0].gpu_power_w
