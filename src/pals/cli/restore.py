"""`pals restore`: put GPU power limits back after a crash (kill -9, OOM, power loss of the process).

Reads the state file a `PowerLimitGuard` saved before its first write and sets
every GPU back to its original limit, one line per GPU. Exit 0 when all are
restored (or there was nothing to restore); 2 with one line otherwise.
"""

from __future__ import annotations

import argparse

from pals.cli._common import add_command

DESCRIPTION = """\
Restore the GPU power limits PALS saved before it first changed them.

PALS restores limits itself on normal exit, Ctrl-C and SIGTERM. After a kill -9
(or a crash) run this once: it reads the saved originals and sets every GPU back.

  pals restore                       default state file (~/.local/state/pals/power-limits.json)
  pals restore --state PATH          a state file elsewhere
  pals restore --state PATH --gpu-backend simulated --sim-state DRIVER.json
                                     the GPU test double (hosts without GPUs)
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "restore", "restore GPU power limits saved by PALS", DESCRIPTION, run)
    parser.add_argument("--state", metavar="PATH", help="state file (default: $PALS_STATE_DIR or ~/.local/state/pals)")
    parser.add_argument(
        "--gpu-backend",
        choices=("auto", "zeus", "nvml", "simulated"),
        default="auto",
        help="GPU backend; auto uses the one that saved the state (default: auto)",
    )
    parser.add_argument("--sim-state", metavar="PATH", help="driver-state file of the simulated GPU test double")
    parser.add_argument(
        "--force",
        action="store_true",
        help="restore even if the process that saved the state still runs",
    )
    return parser


def run(args) -> int:
    from pals.errors import ActuationError, ConfigError
    from pals.node.hwstate import default_state_path, load_state, open_backend_for_state, pid_alive, restore_from_state

    if args.state:
        path = args.state
    elif args.gpu_backend == "simulated" and args.sim_state:
        from pathlib import Path

        from pals.node.hwstate import STATE_FILE_NAME

        path = Path(args.sim_state).parent / STATE_FILE_NAME
    else:
        path = default_state_path()
    state = load_state(path)
    if state is None:
        print(f"nothing to restore: no saved power limits at {path}")
        return 0
    if pid_alive(state.pid) and not args.force:
        raise ConfigError(
            f"PALS process {state.pid} that saved {path} is still running and restores on exit; "
            "stop it (SIGTERM), or pass --force"
        )
    backend = open_backend_for_state(state, args.gpu_backend, args.sim_state)
    report = restore_from_state(path, backend, state=state)
    for gpu in report.gpus:
        before = "?" if gpu.before_w is None else f"{gpu.before_w:g} W"
        if gpu.ok:
            verb = "already at" if gpu.before_w is not None and abs(gpu.before_w - gpu.original_limit_w) < 0.5 else "restored to"
            print(f"GPU {gpu.index} {gpu.name} ({gpu.uuid}): {before} -> {verb} {gpu.original_limit_w:g} W")
        else:
            print(f"GPU {gpu.index} {gpu.name} ({gpu.uuid}): FAILED ({gpu.error or f'reads {gpu.after_w} W'})")
    if not report.ok:
        raise ActuationError(report.failure_message())
    print(f"restored {len(report.gpus)} GPU(s) saved by pid {state.pid} at {state.saved_at}; removed {path}")
    return 0
