"""Child process for the restore tests: holds lowered caps on the GPU test double.

Usage: python guard_child.py DRIVER_STATE STATE_PATH CAP_W [--gpus 0,1] [--go FILE]
                             [--default-action SIGNAME ...] [--hold-stdin]

Opens four simulated A100s (SimulatedGpuBackend, the GPU test double) on the given
driver-state file and takes a PowerLimitGuard (on the GPUs listed by --gpus; all by
default). With --go, it prints WAITING and waits for that file to appear first (so many
children start together). Then it lowers every owned cap to CAP_W, prints READY and sleeps until it is
signalled or killed; with --hold-stdin it instead exits (restoring) when stdin closes.
If the guard is refused, it prints `REFUSED <error>` and exits with status 3.

--default-action SIGNAME sets that signal back to its default action before the guard is
made (Python ignores SIGPIPE and SIGXFSZ at start-up). Core dumps are disabled, so SIGQUIT
leaves no core file behind.
"""

import argparse
import resource
import signal
import sys
import time
from pathlib import Path

from pals.errors import ConfigError
from pals.node.hwstate import PowerLimitGuard
from pals.node.simulated_gpu import SimulatedGpuBackend


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("driver_state")
    parser.add_argument("state_path")
    parser.add_argument("cap_w", type=float)
    parser.add_argument("--gpus", default=None)
    parser.add_argument("--go", default=None)
    parser.add_argument("--default-action", action="append", default=[])
    parser.add_argument("--hold-stdin", action="store_true")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for name in args.default_action:
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    gpus = SimulatedGpuBackend.open(sim_gpus=4, sim_gpu="A100-SXM4-40GB", driver_state_path=args.driver_state)
    indices = [int(i) for i in args.gpus.split(",")] if args.gpus else None
    if args.go:
        print("WAITING", flush=True)
        while not Path(args.go).exists():
            time.sleep(0.002)
    try:
        guard = PowerLimitGuard(gpus, args.state_path, gpu_indices=indices)
    except ConfigError as e:
        print(f"REFUSED {e}", flush=True)
        sys.exit(3)
    guard.set_all_power_limits_w(args.cap_w)
    print("READY", flush=True)
    if args.hold_stdin:
        sys.stdin.read()
        guard.close()
        return
    while True:
        time.sleep(0.05)
        gpus.power_w(0)  # keep 'running': reads go on while the caps are held


if __name__ == "__main__":
    main()
