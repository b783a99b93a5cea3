"""Helpers to locate and use the cached vLLM environments built by scripts/setup_vllm_envs.sh.

The main test venv has no vLLM: these tests run their checks with the
interpreter of a cached environment, in a subprocess. When an environment's
ready-marker is absent, a test is skipped (with the command that builds it) on a
developer's machine, but FAILS in CI (environment variable CI set to true, as CI
services do): there a skipped integration test would pass unnoticed. CI opts out
explicitly with PALS_SKIP_VLLM=1 (scripts/test then builds nothing, and these
tests skip, saying why).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_DIR = Path(os.environ.get("PALS_VLLM_ENV_DIR", Path.home() / ".cache" / "pals" / "vllm-envs"))

TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_hidden_layers": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 2048,
    "torch_dtype": "float16",
}


def in_ci() -> bool:
    """True under a CI service (they set CI=true)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def env_python(name: str) -> Path:
    """The interpreter of cached environment `name`; skip (or, in CI, fail) when it is not built."""
    env = ENV_DIR / name
    if not (env / ".pals-ready").is_file():
        build = f"run scripts/setup_vllm_envs.sh {name}"
        if os.environ.get("PALS_SKIP_VLLM") == "1":
            pytest.skip(f"vLLM tests opted out (PALS_SKIP_VLLM=1); vLLM environment {env} not built")
        if in_ci():
            pytest.fail(f"vLLM environment {env} not built, and CI must not skip the vLLM tests: {build} "
                        "before pytest (scripts/test does), or opt out explicitly with PALS_SKIP_VLLM=1")
        pytest.skip(f"vLLM environment {env} not built: {build}")
    return env / "bin" / "python"


def vllm_env_vars(name: str, **extra: str) -> dict[str, str]:
    """Environment for a subprocess in a vLLM venv: offline, CPU, cache inside the env dir."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        VLLM_TARGET_DEVICE="cpu",
        VLLM_CACHE_ROOT=str(ENV_DIR / name / "vllm-cache"),
        PYTHONUNBUFFERED="1",
        # This checkout's source, not whatever checkout the cached env was built from.
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p),
    )
    env.pop("PALS_CAP_CHANNEL", None)
    env.update(extra)
    return env


def run_result(cmd: list[str], env: dict[str, str], timeout_s: float) -> dict:
    """Run a check script and return the JSON on its `PALS_RESULT` line."""
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)
    for line in proc.stdout.splitlines():
        if line.startswith("PALS_RESULT "):
            return json.loads(line[len("PALS_RESULT ") :])
    raise AssertionError(
        f"{cmd[1]} exited {proc.returncode} without a result\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    )
