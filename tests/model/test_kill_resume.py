"""A `pals profile` process killed with SIGKILL resumes where it stopped and loses no finished point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pals.cli import main
from pals.errors import ProfileError
from pals.model.profile import read_profile


def _rows(path) -> int:
    try:
        return len(read_profile(path))
    except ProfileError:
        return 0  # not written yet


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_sigkilled_profile_resumes(tmp_path):
    out = tmp_path / "p.csv"
    # GPT-2 simulates slowest (shortest steps): a 200 s window takes seconds of wall time per point.
    args = ["profile", "--model", "GPT-2", "--caps", "200,300,400", "--batches", "8", "--warmup-s", "1",
            "--window-s", "200", "--no-progress", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "pals", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # a safety net for a hung child, not an assertion on speed
        while _rows(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    partial = read_profile(out)  # the file is whole: atomic writes
    assert 1 <= len(partial) < 3
    assert main(args) == 0
    full = read_profile(out)
    assert full.points() == {(200.0, 8), (300.0, 8), (400.0, 8)}
    assert full.rows[: len(partial)] == partial.rows
