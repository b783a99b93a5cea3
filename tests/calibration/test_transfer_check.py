"""scripts/transfer_check.py: the A100 -> H100 power transfer against LLM-Inference-Bench's paired points
(docs/calibration.md §14.5). Fails when a change to the H100 or A100 physics moves a simulated H100/A100 power
ratio more than 15 % from the measured one."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_h100_over_a100_power_ratio_within_tolerance():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "transfer_check.py")], capture_output=True,
                         text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    pairs = [line for line in lines[1:-1] if line.strip()]
    assert len(pairs) == 6
    assert lines[-1].endswith("every pair within 15 %"), lines[-1]
