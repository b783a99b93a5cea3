"""`pals probe` end to end on CPU: a tiny random-weight Llama and a tiny Qwen3-MoE, built by real transformers
in the cached vLLM environment (torch CPU), timed on this CPU, with GPU power from the simulated GPU TEST DOUBLE;
caps written through the power-limit guard and restored; the profile then fitted by `pals calibrate`.

The timings and powers are not a GPU's (the double's power is a constant load, capped): what is checked is the
plumbing a GPU run uses, with only the GPU replaced.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vllm"))
from pals_vllm_envs import REPO_ROOT, env_python, run_result, vllm_env_vars  # noqa: E402

from pals.calibration.points import read_points  # noqa: E402
from pals.cli import main  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TINY_LLAMA = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 2048}
TINY_QWEN3_MOE = {"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "num_hidden_layers": 2,
                  "vocab_size": 1000, "num_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 2048,
                  "tie_word_embeddings": False}


def _probe(tmp_path: Path, name: str, config: dict, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "runs" / f"{name}.csv"
    driver = tmp_path / "double" / "driver-state.json"
    cmd = [str(env_python("cpu-0.32")), "-m", "pals", "probe", "--config", str(folder), "--out", str(out),
           "--device", "cpu", "--gpu-backend", "simulated", "--sim-gpu", "H100-SXM", "--sim-state", str(driver),
           "--state", str(driver.parent / "power-limits.json"), "--prompt-tokens", "16", "--decode-steps", "4",
           "--min-window-s", "0.05", "--settle-s", "0", "--no-progress", *extra]
    proc = subprocess.run(cmd, env=vllm_env_vars("cpu-0.32"), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc, out


def test_probe_a_tiny_llama_on_cpu_with_the_test_double_then_calibrate(tmp_path, capsys):
    proc, out = _probe(tmp_path, "tiny-llama", TINY_LLAMA, "--batches", "1,2", "--caps", "700,400")
    assert "simulated GPU TEST DOUBLE" in proc.stdout
    assert "power limit of GPU 0 restored to 700 W" in proc.stdout
    assert "measured vs simulated (H100-SXM" in proc.stdout
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["power_cap_w"], r["batch_cap"]) for r in rows] == [("700.0", "1"), ("700.0", "2"), ("400.0", "1"),
                                                                  ("400.0", "2")]
    assert {r["batching"] for r in rows} == {"static"} and {r["energy_source"] for r in rows} == {"test-double"}
    assert {r["model"] for r in rows} == {"../tiny-llama"} and {r["gpu"] for r in rows} == {"H100-SXM"}
    assert all(float(r["gpu_power_w"]) > 0 and float(r["tpot_p50_s"]) > 0 for r in rows)
    assert all(r["engine"].startswith("hf-transformers-") and r["engine"].endswith("-cpu-eager") for r in rows)
    host = json.loads(out.with_name("tiny-llama.host.json").read_text())
    assert host["gpu"]["test_double"] is True and host["caps"]["measured_w"] == [700.0, 400.0]
    assert host["caps"]["restored_to_w"] == 700.0 and host["model"]["model_type"] == "llama"
    assert host["software"]["torch"] and host["software"]["transformers"]
    driver = json.loads((tmp_path / "double" / "driver-state.json").read_text())
    assert driver["gpus"][0]["power_limit_w"] == 700.0

    physics = tmp_path / "physics.json"
    assert main(["calibrate", str(out), "--gpu", "H100-SXM", "--out", str(physics), "--folds", "0",
                 "--max-evals", "10", "--quiet"]) == 0
    assert json.loads(physics.read_text())["format"] == "pals-physics"
    assert "pals-probe" in capsys.readouterr().out


def test_probe_a_tiny_moe_where_caps_may_not_be_set(tmp_path):
    proc, out = _probe(tmp_path, "tiny-moe", TINY_QWEN3_MOE, "--batches", "1,4", "--sim-no-permission")
    assert "power caps are not settable here" in proc.stdout and "700 W only" in proc.stdout
    points = read_points(out)
    assert [(p.power_cap_w, p.batch_cap) for p in points] == [(700.0, 1), (700.0, 4)]
    assert points[0].llm().num_experts == 8


def test_probe_attention_equals_sdpa_and_decodes_without_expanding_kv_heads(tmp_path):
    folders = []
    for name, config in (("llama", TINY_LLAMA), ("moe", TINY_QWEN3_MOE)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
        folders.append(str(tmp_path / name))
    script = str(Path(__file__).with_name("attention_check.py"))
    result = run_result([str(env_python("cpu-0.32")), script, *folders], vllm_env_vars("cpu-0.32"), timeout_s=300)
    for folder in folders:
        r = result[folder]
        assert r["max_abs_diff"] <= 1e-5 * max(1.0, r["scale"]), r
        assert r["decode_repeat_kv"]["sdpa"] > 0  # transformers' sdpa expands KV heads in a masked decode ...
        assert r["decode_repeat_kv"]["pals_probe"] == 0  # ... the probe's attention does not


def test_bench_rewinds_the_cache_replays_a_captured_decode_and_falls_back_to_eager(tmp_path):
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps(TINY_LLAMA))
    script = str(Path(__file__).with_name("bench_check.py"))
    result = run_result([str(env_python("cpu-0.32")), script, str(tmp_path / "llama")], vllm_env_vars("cpu-0.32"),
                        timeout_s=300)
    ok, fail = result["ok"], result["fail"]
    # Prefills always start from an empty cache; a decode run starts from the prompt.
    assert ok["after_prefill"] == ok["after_second_prefill"] == 8
    # Captured: one capture, one replay per step with that step's ids, then rewound to the prompt (a replay runs no
    # kernel here: the recorder stands in for the GPU), no second capture for the same batch.
    assert ok["captures"] == 1 and ok["captures_after_second_decode"] == 1
    assert ok["replayed_ids"] == ok["decode_ids"] and ok["after_decode"] == 8
    assert ok["decode_mode"] == "cudagraph" and ok["graph_failure"] is None and ok["said"] == []
    # A failed capture: one note, eager decoding (the forward passes advance the cache by one slot per step).
    assert fail["decode_mode"] == "eager" and "operation not permitted" in fail["graph_failure"]
    assert fail["replayed_ids"] == [] and fail["after_decode"] == 8 + 3
    assert len(fail["said"]) == 1 and fail["said"][0].startswith("note: decode runs eagerly: CUDA graph capture failed")
    assert fail["captures_after_second_decode"] == 1  # never retried
    assert ok["released"] and fail["released"]
