"""The vLLM tests' gate: skip on a developer's machine without the environments, FAIL in CI.

Not marked `vllm`: it runs everywhere, fast (the gated tests stop before starting anything).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pals_vllm_envs import REPO_ROOT


def _run_gated(tmp_path, **env_extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PALS_SKIP_VLLM")}
    env.update(PALS_VLLM_ENV_DIR=str(tmp_path / "no-envs-here"), **env_extra)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/vllm/test_scheduler_real.py", "-m", "vllm", "-p", "no:cacheprovider",
         "-rfs", "-k", "cpu-0.32"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    return proc.stdout + proc.stderr


def test_missing_environments_skip_on_a_developer_machine(tmp_path):
    out = _run_gated(tmp_path)
    assert "1 skipped" in out and "not built: run scripts/setup_vllm_envs.sh cpu-0.32" in out, out[-2000:]


@pytest.mark.parametrize("ci", ["true", "1"])
def test_missing_environments_fail_in_ci(tmp_path, ci):
    out = _run_gated(tmp_path, CI=ci)
    assert "1 failed" in out and "CI must not skip the vLLM tests" in out, out[-2000:]


def test_ci_may_opt_out_explicitly(tmp_path):
    out = _run_gated(tmp_path, CI="true", PALS_SKIP_VLLM="1")
    assert "1 skipped" in out and "opted out (PALS_SKIP_VLLM=1)" in out, out[-2000:]
