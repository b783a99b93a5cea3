"""`pals serve MODEL [-- vllm args]`: vLLM's OpenAI server with PALS controlling it.

Starts `python -m vllm.entrypoints.openai.api_server` with PALS's scheduler
class and --max-num-seqs set to the largest batch cap in the predictor's grid,
waits until /health answers, then runs the control loop (power cap + batch cap)
and its HTTP endpoint until --duration-s passes or a terminating signal arrives
(SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2, SIGALRM, SIGXCPU: `STOP_SIGNALS`).
On the way out, whatever the reason, it puts the batch cap back to the maximum,
restores the GPUs' original power limits and stops vLLM (SIGTERM to its
process group, then SIGKILL after a grace period): no vLLM is left serving
without its controller.

Node power, where vLLM's host reports none, is the predictor's fitted node-power line
(`pals fit`), else the paper's.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pals
from pals.core.paper import CONTROL_INTERVAL_S, PAPER_GPU

from pals.cli._common import add_command, positive_float, positive_int
from pals.errors import ConfigError, EngineUnreachable, PalsError
from pals.runtime.real_node import (  # noqa: F401 - STOP_SIGNALS and install_stop_handlers: serve's API too
    SCHEDULER_CLS,
    STOP_SIGNALS,
    EngineLink,
    RealControl,
    check_batch_ceiling,
    grid_batch_caps,
    install_stop_handlers,
    say as _say,
)

DESCRIPTION = """\
Serve MODEL with vLLM while PALS tunes the GPU power cap and the engine's batch cap.

Arguments after `--` go to vLLM unchanged. PALS sets --scheduler-cls,
--max-num-seqs (the largest batch cap in the predictor's grid), --host and --port.

examples:
  pals serve meta-llama/Llama-3.1-8B --profile a100.csv -- --dtype bfloat16
  pals serve ./tiny --profile p.csv --gpu-backend simulated --sim-gpu A100-SXM4-80GB \\
      --vllm-python ~/.cache/pals/vllm-envs/cpu-0.32/bin/python -- --enforce-eager
"""

# Run in the vLLM interpreter: says in one line what is missing.
_PREFLIGHT = r"""
import sys
try:
    import vllm
except Exception as e:
    print(f"NOVLLM {type(e).__name__}: {e}"); sys.exit(0)
try:
    from vllm.config import SchedulerConfig
    fields = getattr(SchedulerConfig, "__dataclass_fields__", {})
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    if "scheduler_cls" not in fields:
        raise ImportError("SchedulerConfig has no scheduler_cls")
except Exception as e:
    print(f"NOHOOK {getattr(vllm, '__version__', '?')} {type(e).__name__}: {e}"); sys.exit(0)
try:
    import pals.integrations.vllm_scheduler
except Exception as e:
    print(f"NOPALS {type(e).__name__}: {e}"); sys.exit(0)
print(f"OK {vllm.__version__}")
"""


def add_parser(subparsers) -> None:
    parser = add_command(subparsers, "serve", "serve a model with vLLM under PALS control", DESCRIPTION, run)
    parser.add_argument("model", help="model for vLLM (Hugging Face id or local directory)")
    # REMAINDER takes everything after MODEL; run() parses PALS's own options out of
    # the part before `--` (argparse alone cannot mix options, a positional and `--`).
    parser.add_argument("vllm_args", nargs=argparse.REMAINDER, help="after --: arguments passed to vLLM")
    _add_options(parser)


def _add_options(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("predictor")
    exclusive = src.add_mutually_exclusive_group()
    exclusive.add_argument("--profile", metavar="PROFILE.csv", help="profile (`pals profile`) to fit the predictor from")
    exclusive.add_argument("--predictor", metavar="MODEL", help="saved predictor (`pals fit`)")
    parser.add_argument("--policy", default="pals", help="pals, adaptive-batch, adaptive-cap or baseline (default: pals)")
    parser.add_argument("--max-num-seqs", type=positive_int, default=None,
                        help="vLLM's --max-num-seqs (default: the largest batch cap of the predictor's grid)")
    parser.add_argument("--budget-w", type=positive_float, default=None, help="initial node power budget, W")
    parser.add_argument("--target-tps", type=positive_float, default=None, help="initial throughput target, tokens/s")
    parser.add_argument("--interval-s", type=positive_float, default=CONTROL_INTERVAL_S,
                        help=f"control interval, s (default: {CONTROL_INTERVAL_S:g})")
    parser.add_argument("--duration-s", type=positive_float, default=None, help="stop after this long (default: until Ctrl-C)")
    parser.add_argument("--decision-log", metavar="PATH", default=None, help="JSON-lines decision log")
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="vLLM's listen address (default: 127.0.0.1)")
    net.add_argument("--port", type=positive_int, default=8000, help="vLLM's port (default: 8000)")
    net.add_argument("--endpoint-port", type=int, default=9400, help="PALS control endpoint port (default: 9400; 0 = any free)")
    net.add_argument("--node-name", default=None, metavar="NAME",
                     help="the `node` label of the /metrics series (default: the host name; the same NAME as "
                          "the coordinator's --node NAME=URL)")
    vllm = parser.add_argument_group("vLLM process")
    vllm.add_argument("--vllm-python", default=sys.executable, metavar="PYTHON",
                      help="interpreter of the environment vLLM is installed in (default: this one)")
    vllm.add_argument("--health-timeout-s", type=positive_float, default=600.0,
                      help="how long vLLM may take to become healthy, s (default: 600)")
    vllm.add_argument("--vllm-log", metavar="PATH", default=None, help="vLLM's output (default: a file in a temp dir)")
    vllm.add_argument("--cap-channel", metavar="PATH", default=None,
                      help="batch-cap channel file (default: derived from --port, so `pals profile` finds it)")
    gpu = parser.add_argument_group("GPUs")
    gpu.add_argument("--gpu-backend", default="auto", choices=("auto", "zeus", "nvml", "simulated"),
                     help="GPU access; 'simulated' is a test double for hosts without a GPU (default: auto)")
    gpu.add_argument("--sim-gpu", default=PAPER_GPU, help="with --gpu-backend simulated: the GPU preset")
    gpu.add_argument("--sim-gpus", type=positive_int, default=1, help="with --gpu-backend simulated: how many")
    gpu.add_argument("--sim-caps-not-settable", action="store_true",
                     help="with --gpu-backend simulated: play a process without permission to set power limits "
                          "(batch-only control)")
    gpu.add_argument("--sim-state", metavar="PATH", default=None,
                     help="with --gpu-backend simulated: the test double's driver-state file (default: in $TMPDIR)")
    gpu.add_argument("--tp", type=positive_int, default=1, help="tensor-parallel degree vLLM runs with (default: 1)")


def _vllm_args(args) -> list[str]:
    """Split what follows MODEL: PALS options (parsed into `args`), then `--` and vLLM's."""
    rest = list(args.vllm_args or [])
    if "--" in rest:
        cut = rest.index("--")
        ours, extra = rest[:cut], rest[cut + 1 :]
    else:
        ours, extra = rest, []
    if ours:
        own = argparse.ArgumentParser(prog="pals serve", add_help=False)
        _add_options(own)
        # Defaults are not re-applied over attributes `args` already has.
        own.parse_args(ours, namespace=args)
    for flag in ("--scheduler-cls", "--max-num-seqs", "--port", "--host"):
        if any(a == flag or a.startswith(flag + "=") for a in extra):
            raise ConfigError(f"do not pass {flag} to vLLM after --: pals serve sets it (use pals serve's own option)")
    return extra


def engine_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for vLLM's processes: the scheduler imports the same PALS source as the controller.

    vLLM may live in another environment (`--vllm-python`); putting the directory that holds
    this `pals` package first on PYTHONPATH makes `pals.integrations` (stdlib + vLLM only)
    importable there without installing PALS, and never a stale copy of it.
    """
    pals_root = str(Path(pals.__file__).resolve().parent.parent)
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pals_root, env.get("PYTHONPATH", "")) if p)
    return env


def preflight(vllm_python: str) -> str:
    """Check the vLLM environment; return vLLM's version or raise with one clear line."""
    if not Path(vllm_python).exists():
        raise ConfigError(f"--vllm-python {vllm_python} does not exist; point it at the python of vLLM's environment")
    try:
        out = subprocess.run([vllm_python, "-c", _PREFLIGHT], capture_output=True, text=True, timeout=300,
                             env=engine_env({"VLLM_LOGGING_LEVEL": "ERROR"}))
    except subprocess.TimeoutExpired:
        raise EngineUnreachable(f"`{vllm_python} -c 'import vllm'` took over 300 s; check that environment") from None
    lines = [ln for ln in out.stdout.splitlines() if ln.split(" ", 1)[0] in ("OK", "NOVLLM", "NOHOOK", "NOPALS")]
    line = lines[-1] if lines else f"CRASH rc={out.returncode} {out.stderr.strip()[-300:]}"
    kind, _, detail = line.partition(" ")
    if kind == "OK":
        return detail
    if kind == "NOVLLM":
        raise ConfigError(f"vLLM is not installed for {vllm_python} ({detail}); install vllm there or pass --vllm-python")
    if kind == "NOHOOK":
        raise ConfigError(
            f"vLLM {detail.split(' ', 1)[0]} has no --scheduler-cls hook for a V1 AsyncScheduler ({detail.split(' ', 1)[-1]}); "
            "use vLLM 0.10 or later"
        )
    if kind == "NOPALS":
        raise ConfigError(
            f"vLLM's environment cannot import PALS's scheduler ({detail}); check that {vllm_python} "
            "runs the same Python version as PALS"
        )
    raise EngineUnreachable(f"checking vLLM in {vllm_python} failed: {detail}")


def _health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(t.strip() for t in tail)


class VllmProcess:
    """vLLM's OpenAI server as a child process group."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.cmd = cmd
        self.log_path = log_path
        self._log = open(log_path, "ab")
        # A new session: vLLM's engine and worker processes are stopped as one group.
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, url: str, timeout_s: float, stop: threading.Event | None = None) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise EngineUnreachable(
                    f"vLLM exited with code {self.proc.returncode} while starting; log {self.log_path}: "
                    f"{_log_tail(self.log_path, 3)}"
                )
            if _health_ok(url):
                return time.monotonic() - t0
            if stop is not None and stop.wait(1.0):
                raise PalsError("interrupted while vLLM was starting")
            elif stop is None:
                time.sleep(1.0)
        raise EngineUnreachable(
            f"vLLM did not become healthy at {url}/health within {timeout_s:g} s; see {self.log_path} "
            "or raise --health-timeout-s"
        )

    def stop(self, grace_s: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        # Anything left in the group (engine core, workers) goes too.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        return self.proc.returncode


def run(args) -> int:
    from pals.control.budget import PowerBudget
    from pals.control.metrics import resolve_node_name
    from pals.integrations.cap_channel import ENV_VAR, CapWriter
    from pals.integrations.engine_state import state_path_for
    from pals.node.vllm_node import default_channel_path, open_gpu_backend
    from pals.runtime.builder import ControlSettings
    from pals.runtime.predictors import PredictorSource, load_predictor

    vllm_extra = _vllm_args(args)
    node_name = resolve_node_name(args.node_name)
    if args.policy.lower() != "baseline" and not (args.profile or args.predictor):
        raise ConfigError(f"policy {args.policy!r} needs --profile or --predictor (or use --policy baseline)")
    # The served model is a Hugging Face id or a folder: no preset name to check the predictor against.
    predictor = load_predictor(PredictorSource(args.predictor, args.profile), expect_model=None)
    batches = grid_batch_caps(predictor)
    max_num_seqs = args.max_num_seqs or (max(batches) if batches else None)
    if max_num_seqs is None:
        raise ConfigError("--max-num-seqs is needed when no predictor gives a batch grid")
    check_batch_ceiling(predictor, max_num_seqs)

    version = preflight(args.vllm_python)
    gpus = open_gpu_backend(args.gpu_backend, args.sim_gpu, args.sim_gpus, args.sim_state,
                            settable=not args.sim_caps_not_settable)
    work_dir = Path(tempfile.mkdtemp(prefix="pals-serve-"))
    channel = args.cap_channel or default_channel_path(args.port)
    Path(channel).parent.mkdir(parents=True, exist_ok=True)
    # A cap channel left by an earlier run must not carry its cap (or its engine's state) into this one.
    for stale in (channel, channel + ".applied", *glob.glob(glob.escape(state_path_for(channel)) + "*")):
        if os.path.lexists(stale):
            os.unlink(stale)
    CapWriter(channel).write(max_num_seqs)
    log_path = Path(args.vllm_log) if args.vllm_log else work_dir / "vllm.log"
    url = f"http://{args.host}:{args.port}"
    cmd = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", args.model,
           "--host", args.host, "--port", str(args.port), "--scheduler-cls", SCHEDULER_CLS,
           "--max-num-seqs", str(max_num_seqs), *vllm_extra]
    env = engine_env({ENV_VAR: channel})

    session = RealControl(gpus, "pals serve")
    server = None
    try:
        _say(f"pals serve: starting vLLM {version} (max-num-seqs {max_num_seqs}); log {log_path}")
        server = VllmProcess(cmd, env, log_path)
        startup_s = server.wait_healthy(url, args.health_timeout_s, session.stop)
        _say(f"pals serve: vLLM healthy at {url} after {startup_s:.0f} s")
        settings = ControlSettings(
            args.policy, interval_s=args.interval_s,
            budget=PowerBudget(args.budget_w) if args.budget_w else None,
            target_tps=args.target_tps if args.target_tps else None,
            decision_log=args.decision_log, endpoint_port=args.endpoint_port, endpoint_host="127.0.0.1",
        )
        session.start(EngineLink(url, channel, max_num_seqs, tp=args.tp), settings, predictor, node_name=node_name)
        session.run(args.duration_s)
        return 0
    finally:
        errors = session.close(("vLLM", server.stop if server else None))
        clean = not errors and sys.exc_info()[0] is None
        if clean and not args.vllm_log:
            shutil.rmtree(work_dir, ignore_errors=True)  # keep vLLM's log only when something went wrong
        _say(session.farewell(errors, "batch cap and GPU power limits restored, vLLM stopped"))
