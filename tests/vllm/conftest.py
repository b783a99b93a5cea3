"""Fixtures for the vLLM tests (helpers are in pals_vllm_envs.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

# The suite runs with --import-mode=importlib, which does not put test folders on
# sys.path; the tests here share pals_vllm_envs.py, so this folder goes on it.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pals_vllm_envs import TINY_LLAMA_CONFIG  # noqa: E402


@pytest.fixture
def config_only_model(tmp_path) -> Path:
    """A model directory with only config.json: enough for vLLM's configs, no weights."""
    d = tmp_path / "tiny-llama-config"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(TINY_LLAMA_CONFIG))
    return d
