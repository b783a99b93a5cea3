"""`pals probe` on the command line without torch: --help, the one-line missing-dependency error, bad flags.

Nothing here needs torch; torch is hidden (`sys.modules["torch"] = None`) so the missing-dependency path is
tested the same on a machine that has it.
"""

import contextlib
import sys
from pathlib import Path

import pytest

from pals.cli import main

LLAMA = Path(__file__).resolve().parents[2] / "src" / "pals" / "data" / "measurements" / "models" / "Llama-3.1-8B"


@pytest.fixture
def no_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "transformers", None)


def test_help_works_without_torch(no_torch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and "--caps" in out and "pip install 'pals[probe]'" in out


def test_without_torch_one_line_names_the_install_and_no_gpu_is_opened(no_torch, tmp_path, capsys):
    # --gpu-backend auto on a host without a GPU would fail differently: torch is checked first.
    code = main(["probe", "--config", str(LLAMA), "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["pals probe: error: pals probe needs torch and transformers: pip install 'pals[probe]'"]
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("args,message", [
    (["--batches", "0,4"], "--batches must be whole numbers within 1-1024"),
    (["--caps", "700,x"], "--caps takes 'auto' or comma-separated watts"),
    (["--device", "cpu"], "--device cpu measures no GPU and goes with --gpu-backend simulated"),
    (["--gpu-backend", "simulated"], "--device cpu measures no GPU"),
    (["--min-window-s", "0"], "must be positive"),
    (["--gpu-preset", "H300"], "unknown GPU 'H300'"),
    (["--physics", "/nonexistent/physics.json"], "physics file /nonexistent/physics.json does not exist"),
])
def test_bad_flags_are_one_line_before_anything_runs(no_torch, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) if message == "must be positive" else contextlib.nullcontext():
        code = main(["probe", "--config", str(LLAMA), "--out", str(tmp_path / "p.csv"), *args])
        assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


def test_a_missing_or_unknown_config_is_one_line(no_torch, tmp_path, capsys):
    assert main(["probe", "--config", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "no config.json there" in capsys.readouterr().err
    (tmp_path / "gemma").mkdir()
    (tmp_path / "gemma" / "config.json").write_text('{"model_type": "gemma3"}')
    assert main(["probe", "--config", str(tmp_path / "gemma"), "--out", str(tmp_path / "p.csv")]) == 2
    assert "unsupported model_type 'gemma3'" in capsys.readouterr().err

