"""scripts/device_probe.sh dry-run without a GPU: the cached vLLM environment's CPU torch, a tiny config, and the
GPU TEST DOUBLE for power (PALS_PROBE_BACKEND=simulated). Checks the script's own logic: files land in $OUT, the
exit status, the final restore, and that a probe stopped by the per-model timeout leaves the limit restored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vllm"))
from pals_vllm_envs import REPO_ROOT, env_python, vllm_env_vars  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 2048}


def _script(tmp_path: Path, args: str, **env: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY))
    out, driver = tmp_path / "out", tmp_path / "double" / "driver-state.json"
    variables = vllm_env_vars("cpu-0.32", OUT=str(out), PYTHON=str(env_python("cpu-0.32")),
                              PALS_PROBE_MODELS=str(model), PALS_PROBE_BACKEND="simulated",
                              PALS_PROBE_ARGS=f"--device cpu --sim-state {driver} --prompt-tokens 16 "
                                              f"--decode-steps 4 --settle-s 0 {args}", **env)
    proc = subprocess.run(["bash", "scripts/device_probe.sh"], env=variables, cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    return proc, out, driver


def test_dry_run_writes_the_profile_and_host_description_to_out(tmp_path):
    proc, out, driver = _script(tmp_path, "--min-window-s 0.05", PALS_PROBE_BATCHES="1,2", PALS_PROBE_CAPS="700,400")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["device_probe.log", "probe-tiny.csv", "probe-tiny.host.json"]
    log = (out / "device_probe.log").read_text()
    assert "measured vs simulated" in log and "== tiny: exit 0" in log and "nothing to restore" in log
    assert len((out / "probe-tiny.csv").read_text().splitlines()) == 1 + 2 * 2
    assert json.loads(driver.read_text())["gpus"][0]["power_limit_w"] == 700.0


@pytest.mark.xfail(strict=False, reason="depends on CPU speed: on an idle machine the tiny model reaches the probe's "
                                        "repeat limit before the 30 s window, so the 15 s timeout never fires")
def test_a_probe_stopped_by_the_timeout_leaves_the_limit_restored(tmp_path):
    # One lowered cap and 30 s windows: the 15 s limit stops the probe while 400 W is in force.
    proc, out, driver = _script(tmp_path, "--min-window-s 30", PALS_PROBE_BATCHES="1", PALS_PROBE_CAPS="400",
                                PALS_PROBE_TIMEOUT_S="15")
    assert proc.returncode == 1, proc.stdout[-4000:]  # a probe failed: the script says so in its status
    log = (out / "device_probe.log").read_text()
    assert "== tiny: exit 124" in log and "hit the 15 s limit" in log
    assert json.loads(driver.read_text())["gpus"][0]["power_limit_w"] == 700.0
