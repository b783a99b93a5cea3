"""Child process for test_restore_process.py: holds lowered caps on the GPU test double.

Usage: python guard_child.py DRIVER_STATE STATE_PATH CAP_W
Opens four simulated A100s (SimulatedGpuBackend, the GPU test double) on the
given driver-state file, takes a PowerLimitGuard, lowers every cap to CAP_W,
prints READY and sleeps until it is signalled or killed.
"""

import sys
import time

from pals.node.hwstate import PowerLimitGuard
from pals.node.simulated_gpu import SimulatedGpuBackend


def main() -> None:
    driver_state, state_path, cap_w = sys.argv[1], sys.argv[2], float(sys.argv[3])
    gpus = SimulatedGpuBackend.open(sim_gpus=4, sim_gpu="A100-SXM4-40GB", driver_state_path=driver_state)
    guard = PowerLimitGuard(gpus, state_path)
    guard.set_all_power_limits_w(cap_w)
    print("READY", flush=True)
    while True:
        time.sleep(0.05)
        gpus.power_w(0)  # keep 'running': reads go on while the caps are held


if __name__ == "__main__":
    main()
