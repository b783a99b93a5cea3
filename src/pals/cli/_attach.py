"""`pals run --node vllm`: the controller attached to a vLLM server PALS did not start.

This is the Kubernetes sidecar's mode (deploy/k8s/vllm-pals.yaml): vLLM runs in its own container,
started with PALS's scheduler (`--scheduler-cls ...PalsScheduler`) and a cap channel
($PALS_CAP_CHANNEL); the agent finds the engine at --url, its batch cap at --cap-channel, and its
GPUs by UUID in --gpu-uuids-file. It runs the same controller as `pals serve`
(`pals.runtime.real_node.RealControl`: limits saved before the first write, restored with the batch
cap on exit and on every terminating signal) until --duration-s passes or a signal arrives, and
never stops vLLM. Everything that can be refused is refused before the first write.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

from pals.errors import ConfigError, HardwareUnavailable

VLLM_ONLY_FLAGS = {"url": "--url", "cap_channel": "--cap-channel", "gpu_uuids_file": "--gpu-uuids-file",
                   "gpu_backend": "--gpu-backend", "decision_log": "--decision-log"}
"""Attributes of `pals run` that only the attach mode uses, with their flags."""
SIM_ONLY_FLAGS = {"model": "--model", "physics": "--physics", "trace": "--trace", "rate": "--rate",
                  "saturate": "--saturate", "rate_scale": "--rate-scale", "out": "--out", "meet_like": "--meet-like",
                  "max_budget_overshoot_pct": "--max-budget-overshoot-pct", "workers": "--workers"}
"""Attributes of `pals run` that only the simulated node uses (a real server has its own model, physics and
load), with their flags."""
SIM_FLAG_DEFAULTS = {"saturate": False, "rate_scale": 1.0, "workers": 1}
"""The values the sim-only flags above have when not given (None for the others)."""
SIM_ONLY_POLICIES = ("oracle", "hindsight")
"""Policies that need the simulator's ground truth of the load."""
DEFAULT_ATTACH_POLICY = "pals"
"""The policy of `pals run --node vllm` without --policy (as `pals serve`'s)."""
URL_CHECK_TIMEOUT_S = 10.0
"""How long the first /metrics request of --url may take before the URL counts as unreachable."""


def add_attach_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the attach mode (--node vllm); --max-num-seqs is --batch-cap-max's other name."""
    from pals.node.gpu import BACKEND_KINDS

    real = parser.add_argument_group("real vLLM node (--node vllm: attach to a server PALS did not start)")
    real.add_argument("--url", default=None, metavar="URL",
                      help="the vLLM server's base URL, e.g. http://127.0.0.1:8000 (required)")
    real.add_argument("--cap-channel", default=None, metavar="PATH",
                      help="the batch-cap channel file vLLM was started with ($PALS_CAP_CHANNEL of the server; "
                           "default: $PALS_CAP_CHANNEL here, else the path `pals serve` uses for the URL's port)")
    real.add_argument("--gpu-uuids-file", default=None, metavar="FILE",
                      help="control only the GPUs listed here by UUID, one a line (what the device plugin gave "
                           "vLLM; commas also separate); default: every GPU this process sees")
    real.add_argument("--gpu-backend", choices=BACKEND_KINDS, default=None,
                      help="zeus, nvml, simulated (the GPU test double: --gpu x --num-gpus) or auto (default: "
                           "$PALS_GPU_BACKEND, else auto)")
    real.add_argument("--decision-log", default=None, metavar="PATH",
                      help="JSON-lines decision log, continued across restarts (default: none on disk)")


def _given(args, flags: dict[str, str], defaults: dict[str, object] | None = None) -> list[str]:
    defaults = defaults or {}
    return [flag for attr, flag in flags.items() if getattr(args, attr, None) != defaults.get(attr)]


def check_sim_flags(args) -> None:
    """--node sim: the flags argparse cannot require (they are optional on --node vllm), and no attach flag."""
    used = _given(args, VLLM_ONLY_FLAGS)
    if used:
        raise ConfigError(f"{', '.join(used)} {'is' if len(used) == 1 else 'are'} for --node vllm only; "
                          "add --node vllm --url URL, or drop them")
    missing = [flag for flag, value in (("--model", args.model), ("--policy", args.policy),
                                        ("--duration-s", args.duration_s), ("--out", args.out)) if value is None]
    if missing:
        raise ConfigError(f"--node sim needs {', '.join(missing)}; see pals run --help")
    if args.trace is None and args.rate is None and not args.saturate:
        raise ConfigError("--node sim needs a load: one of --trace, --rate, --saturate")


def check_attach_flags(args) -> str:
    """--node vllm: refuse what does not apply; return the policy (default `DEFAULT_ATTACH_POLICY`)."""
    used = _given(args, SIM_ONLY_FLAGS, SIM_FLAG_DEFAULTS)
    if used:
        raise ConfigError(f"{', '.join(used)} {'applies' if len(used) == 1 else 'apply'} only to --node sim (a real "
                          "server has its own model, physics and load); drop it with --node vllm")
    policy = args.policy or DEFAULT_ATTACH_POLICY
    if policy in SIM_ONLY_POLICIES:
        raise ConfigError(f"--policy {policy} needs the simulator's ground truth of the load: --node sim only")
    if not args.url:
        raise ConfigError("--node vllm needs --url, the vLLM server's address (e.g. --url http://127.0.0.1:8000)")
    simulated = (args.gpu_backend or os.environ.get("PALS_GPU_BACKEND") or "auto") == "simulated"
    sim_gpu_flags = [f for f, v in (("--gpu", args.gpu), ("--num-gpus", args.num_gpus)) if v is not None]
    if sim_gpu_flags and not simulated:
        raise ConfigError(f"{', '.join(sim_gpu_flags)} describe the simulated GPUs: with --node vllm they go with "
                          "--gpu-backend simulated (real GPUs are found through NVML)")
    if policy not in ("baseline", "static") and not (args.profile or args.predictor):
        raise ConfigError(f"--policy {policy} needs --profile or --predictor (a profile of this model on these GPUs), "
                          "or use --policy baseline")
    return policy


def check_url(url: str) -> str:
    """`url` without a trailing slash, if it is http(s)://HOST[:PORT]."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--url {url!r} is not a server address; give http://HOST:PORT (e.g. http://127.0.0.1:8000)")
    return url.rstrip("/")


def check_decision_log(path: str | None) -> str | None:
    """Refuse a decision-log path that cannot be written (one line), before anything runs."""
    from pals.cli._common import check_output_dir

    if path is None:
        return None
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--decision-log {target} is a directory; give a file path (e.g. {target / 'decisions.jsonl'})")
    check_output_dir(str(target.parent), "--decision-log")
    return path


def check_reachable(url: str) -> None:
    """One request to /metrics: an unreachable URL, or one that is not vLLM, is one line now."""
    from pals.node.vllm_metrics import MetricsScraper

    MetricsScraper(url, timeout_s=URL_CHECK_TIMEOUT_S).scrape()


def open_attached_gpus(args, uuids: tuple[str, ...] | None):
    """The GPUs to control: the backend's (--gpu-backend, $PALS_GPU_BACKEND, auto), those of `uuids` when given."""
    from pals.node.gpu_select import select_gpus
    from pals.node.vllm_node import open_gpu_backend

    kind = args.gpu_backend or os.environ.get("PALS_GPU_BACKEND") or "auto"
    try:
        gpus = open_gpu_backend(kind, args.gpu, args.num_gpus or 1)
    except HardwareUnavailable as error:
        raise HardwareUnavailable(f"--node vllm: {error}; in a container, give the agent NVML (the NVIDIA runtime "
                                  "with NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES=utility)") from None
    return gpus if uuids is None else select_gpus(gpus, uuids)


def _settings(args, policy: str, endpoint, decision_log: str | None):
    """The controller's `ControlSettings` from the policy, budget, target, SLO and endpoint flags."""
    from pals.control.budget import BudgetSchedule, PowerBudget
    from pals.control.policies import PolicyOptions
    from pals.control.slo import Slo
    from pals.control.types import Configuration
    from pals.runtime.builder import ControlSettings

    fixed = Configuration(args.power_cap_w, args.batch_cap) if policy == "static" else None
    slo = (None if args.slo_tpot_ms is None and args.slo_ttft_s is None
           else Slo(tpot_ms=args.slo_tpot_ms, ttft_s=args.slo_ttft_s, quantile=args.slo_quantile))
    return ControlSettings(
        policy, options=PolicyOptions(objective=args.objective, fixed=fixed), interval_s=args.interval_s,
        budget=PowerBudget(args.budget_w, args.budget_kind) if args.budget_w is not None else None,
        target_tps=args.target_tps,
        budget_schedule=BudgetSchedule.load(args.budget_schedule, kind=args.budget_kind) if args.budget_schedule else None,
        decision_log=decision_log,
        endpoint_port=None if endpoint is None else endpoint.port,
        endpoint_host=args.endpoint_host if endpoint is None else endpoint.host,
        endpoint_token=None if endpoint is None else endpoint.token,
        endpoint_allowed_hosts=() if endpoint is None else tuple(endpoint.allowed_hosts),
        slo=slo,
    )


def _engine_max_num_seqs(args, channel: str, predictor) -> int:
    """vLLM's max_num_seqs from its scheduler's report on `channel`, checked against the flag and the grid."""
    from pals.runtime.real_node import check_batch_ceiling, scheduler_report

    engine = int(scheduler_report(channel).max_cap)
    if args.batch_cap_max is not None and args.batch_cap_max != engine:
        raise ConfigError(f"--max-num-seqs {args.batch_cap_max} differs from vLLM's max_num_seqs {engine} (its "
                          f"scheduler's report on {channel}); pass --max-num-seqs {engine}, as vLLM was started")
    check_batch_ceiling(predictor, engine, "vLLM's max_num_seqs")
    return engine


def run_attached(args, check_flags: Callable[[argparse.Namespace, None], None]) -> int:
    """`pals run --node vllm`: check every flag, attach, control until the duration or a signal, restore.

    `check_flags(args, None)`: `pals run`'s checks of flags that go together (the static policy's, ...).
    """
    from pals.cli._common import endpoint_spec_from_args
    from pals.node.gpu_select import read_gpu_uuids_file
    from pals.node.vllm_node import channel_path_for
    from pals.runtime.predictors import PredictorSource, latency_model_for, load_predictor
    from pals.runtime.real_node import EngineLink, RealControl, say

    policy = check_attach_flags(args)
    check_flags(argparse.Namespace(**{**vars(args), "policy": policy}), None)
    url = check_url(args.url)
    decision_log = check_decision_log(args.decision_log)
    endpoint = endpoint_spec_from_args(args)
    settings = _settings(args, policy, endpoint, decision_log)
    uuids = read_gpu_uuids_file(args.gpu_uuids_file) if args.gpu_uuids_file else None
    channel = channel_path_for(url, args.cap_channel)
    source = PredictorSource(args.predictor, args.profile)
    # The served model is a Hugging Face id or a folder: no preset name to check the predictor against.
    predictor = load_predictor(source, expect_model=None)
    max_num_seqs = _engine_max_num_seqs(args, channel, predictor)
    latency_model = None
    if settings.slo is not None and source.given:
        latency_model = latency_model_for(None, None, source, log=say)
    check_reachable(url)
    gpus = open_attached_gpus(args, uuids)
    session = RealControl(gpus, "pals run")
    try:
        say(f"pals run: attached to vLLM at {url} (max_num_seqs {max_num_seqs}, cap channel {channel}); policy {policy}")
        session.start(EngineLink(url, channel, max_num_seqs, tp=args.tp or 1), settings, predictor, latency_model,
                      node_name=args.node_name)
        session.run(args.duration_s)
        return 0
    finally:
        errors = session.close()
        say(session.farewell(errors, "batch cap and GPU power limits restored; vLLM left running"))
