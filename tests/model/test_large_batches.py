"""Batch caps up to 1024 in `pals sweep` / `pals profile` / `pals fit` and the predictor, and the default
grids that scale with the GPU and the KV cache (issue 10)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pals.cli import main
from pals.model.predictor import PowerPerfPredictor
from pals.model.profile import read_profile

FAST = ["--warmup-s", "2", "--window-s", "5", "--no-progress", "--no-noise"]


@pytest.fixture
def llama31_config(tmp_path):
    """A Llama-3.1-8B-shaped Hugging Face config.json (what a user passes as --model)."""
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_the_issues_h100_sweep_runs_to_batch_256(tmp_path, capsys, llama31_config):
    out = tmp_path / "h100.csv"
    assert main(["sweep", "--model", str(llama31_config), "--gpu", "H100-SXM", "--num-gpus", "1", "--tp", "1",
                 "--caps", "700", "--batches", "8,16,32,64,128,256", *FAST, "--no-plots", "--out", str(out)]) == 0
    profile = read_profile(out)
    assert profile.metadata["max_num_seqs"] == 256
    rows = sorted(profile.rows, key=lambda r: r["batch_cap"])
    assert [int(r["batch_cap"]) for r in rows] == [8, 16, 32, 64, 128, 256]
    tps = [r["throughput_tps"] for r in rows]
    assert all(a < b for a, b in zip(tps, tps[1:]))  # saturating, and the KV cache holds 256 sequences
    assert all(r["gpu_power_w"] <= 700.0 * 1.001 for r in rows)
    assert rows[-1]["gpu_power_w"] > 0.8 * 700.0  # serving at batch 256 draws most of the TDP


def test_default_batch_grid_scales_with_the_gpu_and_the_kv_cache(tmp_path, llama31_config):
    def batches(*argv):
        out = tmp_path / "grid.csv"
        assert main(["sweep", "--model", str(llama31_config), "--num-gpus", "1", "--tp", "1", "--caps", "300",
                     *argv, *FAST, "--no-plots", "--out", str(out)]) == 0
        return sorted({int(r["batch_cap"]) for r in read_profile(out).rows})

    assert batches("--gpu", "H100-SXM") == [1, 4, 8, 16, 32, 64, 128, 256]
    assert batches("--gpu", "A100-SXM4-80GB") == [1, 4, 8, 16, 32, 64]  # the paper's grid
    # 8k-token sequences: one replica's KV cache (~0.4 M tokens on an H100 after 16 GB of weights) holds ~50
    assert batches("--gpu", "H100-SXM", "--prompt-tokens", "7000", "--output-tokens", "2000") == [1, 4, 8, 16, 32]


def test_profile_and_fit_round_trip_up_to_batch_1024(tmp_path, capsys, llama31_config):
    profile_path = tmp_path / "p.csv"
    # Batch 1024 fills slowly (768 more prompts at 300 W take ~6 s of prefill): a 2 s warm-up measured a
    # third of its throughput, so this profile warms up 10 s.
    assert main(["profile", "--model", str(llama31_config), "--gpu", "H100-SXM", "--num-gpus", "1",
                 "--caps", "300,500,700", "--batches", "1,8,64,256,1024", "--prompt-tokens", "200",
                 "--output-tokens", "100", *FAST, "--warmup-s", "10", "--window-s", "10",
                 "--out", str(profile_path)]) == 0
    profile = read_profile(profile_path)
    assert profile.metadata["max_num_seqs"] == 1024 and len(profile) == 15
    capsys.readouterr()
    model_path = tmp_path / "m.pals"
    assert main(["fit", str(profile_path), "--out", str(model_path), "--k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 15
    predictor = PowerPerfPredictor.load(model_path)
    assert list(predictor.batches_) == [1, 8, 64, 256, 1024]
    # On the grid the predictor reproduces the measured throughput; between grid points (512) it lies
    # between its neighbours (the trend is in log2 batch), and power stays under the caps.
    measured = {(r["power_cap_w"], int(r["batch_cap"])): r["throughput_tps"] for r in profile.rows}
    on_grid = predictor.predict_candidates(np.array([700.0, 700.0]), np.array([256, 1024]))
    np.testing.assert_allclose(on_grid.throughput_tps, [measured[(700.0, 256)], measured[(700.0, 1024)]], rtol=0.1)
    between = predictor.predict_candidates(np.array([300.0, 700.0]), np.array([512, 512]))
    for cap, tps in zip((300.0, 700.0), between.throughput_tps):
        low, high = sorted((measured[(cap, 256)], measured[(cap, 1024)]))
        assert 0.95 * low <= tps <= 1.05 * high, (cap, tps, low, high)
    assert np.all(between.gpu_power_total_w <= np.array([300.0, 700.0]) * 1.05)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["sweep", "--model", "GPT-2", "--batches", "8,2048"], "batch cap 2048 is above 1024"),
        (["sweep", "--model", "GPT-2", "--max-num-seqs", "4096"], "batch cap 4096 is above 1024"),
    ],
)
def test_batch_caps_above_1024_are_refused_by_the_parser(tmp_path, capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "x.csv")])
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def test_max_num_seqs_below_the_grid_is_one_clear_line(tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert main(["sweep", "--model", "GPT-2", "--batches", "8,64", "--max-num-seqs", "32", "--out", str(out)]) == 2
    assert "--max-num-seqs 32 is below the grid's largest batch cap 64" in _error_line(capsys)
    assert not out.exists()


def test_max_num_seqs_sets_the_engine_limit_and_is_recorded(tmp_path):
    out = tmp_path / "x.csv"
    assert main(["profile", "--model", "GPT-2", "--caps", "300", "--batches", "8", "--max-num-seqs", "512",
                 *FAST, "--out", str(out)]) == 0
    assert read_profile(out).metadata["max_num_seqs"] == 512


def test_profile_grid_refuses_batch_caps_above_1024():
    from pals.errors import ConfigError
    from pals.model.profiler import ProfileGrid

    assert ProfileGrid((300.0,), (1, 1024)).batch_caps == (1, 1024)
    with pytest.raises(ConfigError, match="batch cap 1025 is above 1024"):
        ProfileGrid((300.0,), (1, 1025))


def test_trend_spline_spreads_its_knots_over_more_batch_caps_than_it_keeps():
    from pals.model.trees import Trend

    X = np.zeros((300, 7))
    X[:, 0] = np.tile([200.0, 400.0], 150)
    X[:, 1] = np.repeat(np.arange(1, 151), 2)
    log_y = np.log(np.minimum(X[:, 1], 90.0)) + 0.001 * X[:, 0]  # rises, then flat from batch 90
    trend = Trend().fit(X, log_y)
    assert trend.knots_.size == Trend.MAX_KNOTS
    np.testing.assert_allclose(2 ** trend.knots_[[0, -1]], [1.0, 150.0])  # the ends are kept
    assert np.abs(trend.predict(X) - log_y).max() < 0.02
