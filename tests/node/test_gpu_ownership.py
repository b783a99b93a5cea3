"""Per-GPU ownership across processes, on the GPU test double: one owner per GPU, named when refused.

The issue's case: 15 PALS processes started at once on the same GPUs, and 13 of them 'acquired'
them (the state-file check had no lock). Here 15 children wait at a barrier (a file), start
together, and exactly one may take the GPUs; every other one is refused with one line naming
the holder's pid.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pals.node.simulated_gpu import SimulatedGpuBackend

from .test_restore_process import CHILD, HANG_GUARD_S, ORIGINAL_W, read_line

STARTS = 15


def test_fifteen_simultaneous_starts_one_acquires_the_rest_name_it(tmp_path):
    driver_path, state_path = tmp_path / "driver" / "driver-state.json", tmp_path / "driver" / "power-limits.json"
    SimulatedGpuBackend.open(sim_gpus=4, sim_gpu="A100-SXM4-40GB", driver_state_path=driver_path)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, str(CHILD), str(driver_path), str(state_path), "200", "--go", str(go),
                          "--hold-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(STARTS)
    ]
    try:
        assert [read_line(p) for p in procs] == ["WAITING"] * STARTS
        go.touch()  # all start now
        results = [read_line(p) for p in procs]
        winners = [p for p, line in zip(procs, results) if line == "READY"]
        refused = [line for line in results if line.startswith("REFUSED")]
        assert len(winners) == 1, results
        assert len(refused) == STARTS - 1, results
        holder = winners[0].pid
        assert all(f"already controlled by PALS pid {holder} " in line for line in refused), refused
        assert all("kill -TERM" in line for line in refused)
        gpus = SimulatedGpuBackend.open(sim_gpus=4, sim_gpu="A100-SXM4-40GB", driver_state_path=driver_path)
        assert [gpus.get_power_limit_w(i) for i in range(4)] == [200.0] * 4
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()  # the winner restores and exits
        for p in procs:
            p.wait(timeout=HANG_GUARD_S)
    assert sorted(p.returncode for p in procs) == [0] + [3] * (STARTS - 1)
    gpus = SimulatedGpuBackend.open(sim_gpus=4, sim_gpu="A100-SXM4-40GB", driver_state_path=driver_path)
    assert [gpus.get_power_limit_w(i) for i in range(4)] == ORIGINAL_W
    assert not Path(state_path).exists()
