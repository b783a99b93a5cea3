"""`pals restore`: put GPU power limits back after a crash (kill -9, OOM, power loss of the process).

Reads the state file `PowerLimitGuard`s saved before their first write and sets every GPU whose
owner is gone back to its original limit, one line per GPU. A GPU that a running PALS process
holds (its lock is taken) is never touched: that process restores it as it exits. Exit 0 when
every saved GPU is restored (or there was nothing to restore); 2 with one line otherwise.
"""

from __future__ import annotations

import argparse

from pals.cli._common import add_command

DESCRIPTION = """\
Restore the GPU power limits PALS saved before it first changed them.

PALS restores limits itself on normal exit and on every terminating signal (Ctrl-C, SIGTERM,
SIGHUP, ...). After a kill -9 (or a crash) run this once: it reads the saved originals and sets
every GPU back. GPUs held by a PALS process that still runs are left to that process.

  pals restore                       default state file (~/.local/state/pals/power-limits.json)
  pals restore --state PATH          a state file elsewhere
  pals restore --gpu-backend simulated --sim-state DRIVER.json
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
        help="no effect, kept for old scripts: a GPU a running PALS process holds is never restored under it; "
             "stop that process instead (it restores as it exits)",
    )
    return parser


def _state_path(args):
    from pathlib import Path

    from pals.node.hwstate import STATE_FILE_NAME, default_state_path

    if args.state:
        return Path(args.state)
    if args.gpu_backend == "simulated" and args.sim_state:
        return Path(args.sim_state).parent / STATE_FILE_NAME
    return default_state_path()


def run(args) -> int:
    from pals.errors import ActuationError, ConfigError
    from pals.node.hwstate import load_state, open_backend_for_state, restore_from_state

    path = _state_path(args)
    state = load_state(path)
    if state is None:
        print(f"nothing to restore: no saved power limits at {path}")
        return 0
    backend = open_backend_for_state(state, args.gpu_backend, args.sim_state)
    report = restore_from_state(path, backend, state=state)
    for gpu in report.gpus:
        label = f"GPU {gpu.index} {gpu.name} ({gpu.uuid})"
        if gpu.held_by is not None:
            print(f"{label}: left alone: held by {gpu.held_by}, which restores it as it exits")
        elif gpu.ok:
            before = "?" if gpu.before_w is None else f"{gpu.before_w:g} W"
            at = gpu.before_w is not None and abs(gpu.before_w - gpu.original_limit_w) < 0.5
            print(f"{label}: {before} -> {'already at' if at else 'restored to'} {gpu.original_limit_w:g} W")
        else:
            print(f"{label}: FAILED ({gpu.error or f'reads {gpu.after_w} W'})")
    if any(not g.ok and g.held_by is None for g in report.gpus):
        raise ActuationError(report.failure_message())
    restored = sum(1 for g in report.gpus if g.ok)
    if report.held:
        pids = sorted({g.held_by for g in report.held})
        raise ConfigError(
            f"restored {restored} GPU(s); {len(report.held)} are held by PALS processes still running "
            f"({'; '.join(pids)}): they restore their own limits as they exit; stop them (kill -TERM PID), "
            "and run `pals restore` again only if one had to be killed with -9"
        )
    print(f"restored {restored} GPU(s) saved by pid {', '.join(map(str, state.owner_pids))}; "
          f"{'removed' if report.state_removed else 'kept'} their entries in {path}")
    return 0
