"""`pals run`: one closed-loop scenario on the simulated node (any policy, trace or Poisson load), the
hindsight oracle (`--policy hindsight`: every fixed configuration of the grid on the same stream), or
(`--node vllm`, `pals.cli._attach`) the controller attached to a vLLM server PALS did not start."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from pals.cli import _common as flags
from pals.cli._attach import add_attach_flags, check_sim_flags, run_attached
from pals.cli._common import add_command
from pals.control.metrics import resolve_node_name
from pals.control.policies import DEFAULT_OBJECTIVE, OBJECTIVES, ORACLE_MAX_QOS_VIOLATION_PCT, POLICY_NAMES
from pals.core.paper import CONTROL_INTERVAL_S, PAPER_GPU, PAPER_NUM_GPUS
from pals.errors import ConfigError

DEFAULT_MAX_BUDGET_OVERSHOOT_PCT = 1.0
"""The hindsight oracle's default limit on budget overshoot (share of budget intervals). Units: %."""
DEFAULT_SIM_TP = 4
"""The simulated node's tensor-parallel degree per replica when --tp is not given."""


DESCRIPTION = """\
Run one policy in closed loop on a simulated node and write DIR/decisions.jsonl (one JSON line
per 500 ms interval) and DIR/summary.json (tokens/J, QoS violation %, power tracking, ...).

Without --predictor or --profile, the simulated node is profiled once (36 configurations, a few
seconds) and the fitted predictor is cached under ~/.cache/pals/profiles ($PALS_CACHE_DIR).

--policy static holds one configuration (--power-cap-w W --batch-cap B) through the same loop and
budget guard (its cap is clamped under a budget, as Baseline's is). --policy hindsight runs every
configuration of the grid that way on the same request stream and seed, writes DIR/hindsight.csv
(one row per configuration) and reports the best tokens/J among those that meet the limits
(--max-qos-violation-pct, --max-budget-overshoot-pct, or --meet-like another run's summary.json:
no more violations than it). --objective says what tokens/J counts: node joules (default, the
headline) or GPU joules; PALS, the Oracle and the hindsight oracle all maximize it.

Examples:
  pals run --model Mixtral-8x7B --policy pals --trace conv --rate-scale 0.4 \\
      --target-tps 1500 --budget-w 1500 --duration-s 600 --out runs/mixtral-pals
  pals run --model Mixtral-8x7B --policy static --power-cap-w 150 --batch-cap 64 --trace conv \\
      --rate-scale 0.4 --target-tps 1500 --duration-s 600 --out runs/mixtral-150w
  pals run --model Mixtral-8x7B --policy hindsight --trace conv --rate-scale 0.4 --target-tps 1500 \\
      --duration-s 600 --meet-like runs/mixtral-pals/summary.json --out runs/mixtral-hindsight
  pals run --model Qwen1.5-MoE-A2.7B --policy oracle --saturate --target-tps 3500 \\
      --budget-schedule schedule.csv --duration-s 300 --out runs/qwen-oracle --endpoint-port 9400

--endpoint-port serves /status /budget /target /decisions /metrics on --endpoint-host (127.0.0.1
by default); any other host needs a bearer token (--endpoint-token-file FILE, mode 600, or
$PALS_ENDPOINT_TOKEN), which every mutating request must then present.

SIGINT or SIGTERM ends the run within one interval: summary.json is still written (with
"interrupted": true, covering the span run) and the exit status is 128 + the signal (130, 143).
A second signal stops at once. Each run starts DIR/decisions.jsonl afresh; an earlier one is
rotated to decisions.jsonl.1.gz, not lost.

Every number is checked at the start against a plausible range (one line naming it): NaN, inf,
zero or absurd values are refused before anything is profiled or written.

--node vllm attaches the same controller to a vLLM server already running (the Kubernetes
sidecar): one started with --scheduler-cls pals.integrations.vllm_scheduler.PalsScheduler and
PALS_CAP_CHANNEL=PATH (give the same PATH as --cap-channel). --max-num-seqs, when given, must be
what vLLM runs with (its scheduler reports it); --gpu-uuids-file limits control to the GPUs listed
by UUID. The GPUs' original power limits are saved before the first write and restored, with the
batch cap, when --duration-s passes (default: never) or on SIGTERM, SIGINT, SIGHUP and every other
terminating signal (exit status 0); vLLM keeps running. --policy defaults to pals there;
--model, --out, the load flags and --policy oracle/hindsight are for --node sim only.

  pals run --node vllm --url http://127.0.0.1:8000 --cap-channel /var/run/pals/cap \\
      --gpu-uuids-file /var/run/pals/gpus --max-num-seqs 256 --tp 4 --profile profile.csv \\
      --target-tps 2000 --budget-w 3200 --decision-log /var/log/pals/decisions.jsonl --endpoint-port 9400
"""


def add_parser(subparsers):
    parser = add_command(subparsers, "run", "one closed-loop scenario on the simulated node, or attached to vLLM", DESCRIPTION, run)
    dep = parser.add_argument_group("deployment")
    dep.add_argument("--node", choices=["sim", "vllm"], default="sim",
                     help="sim: the simulated node (default); vllm: attach to a running vLLM server (--url)")
    dep.add_argument("--model", default=None,
                     help="--node sim (required): model preset (e.g. Mixtral-8x7B, Qwen1.5-MoE-A2.7B) or a HF config.json")
    dep.add_argument("--gpu", default=None, help=f"GPU preset (default {PAPER_GPU}); --node vllm: the simulated GPUs' "
                                                 "with --gpu-backend simulated")
    dep.add_argument("--tp", type=flags.whole_flag(1, flags.MAX_GPUS), default=None,
                     help=f"tensor-parallel degree per replica (default {DEFAULT_SIM_TP} on --node sim, 1 on --node vllm)")
    dep.add_argument("--num-gpus", type=flags.whole_flag(1, flags.MAX_GPUS), default=None,
                     help=f"GPUs in the node (default {PAPER_NUM_GPUS}); --node vllm: how many simulated GPUs with "
                          "--gpu-backend simulated")
    dep.add_argument("--batch-cap-max", "--max-num-seqs", type=flags.whole_flag(1, flags.MAX_BATCH_CAP), default=None,
                     metavar="N", help="the engine's max_num_seqs, the largest batch cap control may set (up to "
                          f"{flags.MAX_BATCH_CAP}; default: the GPU preset's grid top, 64 on A100, 256 on H100/H200; "
                          "--node vllm: what its scheduler reports, which a given N must equal)")
    dep.add_argument("--physics", default=None, metavar="FILE",
                     help="simulated GPU physics from `pals calibrate` (default: the GPU preset's)")
    ctl = parser.add_argument_group("control")
    ctl.add_argument("--policy", default=None, choices=POLICY_NAMES + ("hindsight",),
                     help="required on --node sim; --node vllm: default pals")
    ctl.add_argument("--objective", choices=OBJECTIVES, default=DEFAULT_OBJECTIVE,
                     help="what tokens/J counts: node joules (default, the headline) or GPU joules")
    ctl.add_argument("--power-cap-w", type=flags.number_flag(1.0, flags.MAX_POWER_CAP_W, "W"), default=None,
                     metavar="W", help="--policy static: the power cap per GPU it holds")
    ctl.add_argument("--batch-cap", type=flags.whole_flag(1, flags.MAX_BATCH_CAP), default=None, metavar="B",
                     help="--policy static: the batch cap it holds")
    ctl.add_argument("--target-tps", type=flags.target_tps_flag(), default=None,
                     help="throughput target, generated tokens/s")
    budget = ctl.add_mutually_exclusive_group()
    budget.add_argument("--budget-w", type=flags.budget_w_flag(), default=None, help="power budget in W")
    budget.add_argument("--budget-schedule", default=None, metavar="FILE",
                        help="CSV (time_s,budget_w) or JSON schedule of budgets over run time")
    ctl.add_argument("--budget-kind", choices=["node", "gpu"], default="node",
                     help="what the budget limits: node wall power or summed GPU power (default node)")
    slo = parser.add_argument_group("latency SLO (model-guided policies keep to it with the profile's latency columns)")
    slo.add_argument("--slo-tpot-ms", type=flags.number_flag(0.01, 60_000.0, "ms"), default=None, metavar="MS",
                     help="time per output token at --slo-quantile")
    slo.add_argument("--slo-ttft-s", type=flags.number_flag(0.001, 3600.0, "s"), default=None, metavar="S",
                     help="time to first token at --slo-quantile")
    slo.add_argument("--slo-quantile", type=float, choices=(0.5, 0.9, 0.99), default=0.99,
                     help="the quantile both SLOs bound (default 0.99)")
    ctl.add_argument("--interval-s", type=flags.INTERVAL_S, default=CONTROL_INTERVAL_S,
                     help=f"control interval (default {CONTROL_INTERVAL_S:g} s)")
    model = ctl.add_mutually_exclusive_group()
    model.add_argument("--predictor", default=None, metavar="MODEL", help="saved predictor (`pals fit`)")
    model.add_argument("--profile", default=None, metavar="PROFILE", help="profile to fit a predictor from")
    load = parser.add_argument_group("load (--node sim: exactly one)")
    kinds = load.add_mutually_exclusive_group()
    kinds.add_argument("--trace", default=None, help="conv, code (Azure LLM 2023) or a CSV trace file")
    kinds.add_argument("--rate", type=flags.number_flag(flags.MIN_RATE_RPS, flags.MAX_RATE_RPS, "requests/s"),
                       default=None, help="Poisson arrivals, requests/s")
    kinds.add_argument("--saturate", action="store_true", help="closed loop: requests always waiting")
    load.add_argument("--rate-scale", type=flags.number_flag(flags.MIN_RATE_SCALE, flags.MAX_RATE_SCALE), default=1.0,
                      help="trace speed-up (>1: more load)")
    load.add_argument("--seed", type=flags.SEED, default=0, help="seed of the request stream and telemetry noise")
    meet = parser.add_argument_group("limits of the Oracle and the hindsight oracle")
    meet.add_argument("--max-qos-violation-pct", type=flags.PERCENT, default=None, metavar="PCT",
                      help=f"largest share of intervals violating the target (default {ORACLE_MAX_QOS_VIOLATION_PCT:g})")
    meet.add_argument("--max-budget-overshoot-pct", type=flags.PERCENT, default=None, metavar="PCT",
                      help=f"hindsight: largest share of budget intervals over the budget (default "
                           f"{DEFAULT_MAX_BUDGET_OVERSHOOT_PCT:g})")
    meet.add_argument("--meet-like", default=None, metavar="SUMMARY",
                      help="hindsight: no more violations or overshoot than this run's summary.json")
    meet.add_argument("--workers", type=flags.whole_flag(1, flags.MAX_WORKERS), default=1, metavar="N",
                      help="hindsight: run configurations in N processes (default 1; same results)")
    out = parser.add_argument_group("output")
    out.add_argument("--duration-s", type=flags.DURATION_S, default=None,
                     help="simulated run time in s (required on --node sim); --node vllm: stop after this long "
                          "(default: run until a terminating signal)")
    out.add_argument("--out", default=None, metavar="DIR",
                     help="--node sim (required): directory for decisions.jsonl and summary.json")
    out.add_argument("--quiet", action="store_true", help="no progress output")
    flags.add_endpoint_flags(parser)
    parser.add_argument("--node-name", default=None, metavar="NAME",
                        help="the `node` label of the /metrics series (default: the host name; the same NAME as "
                             "the coordinator's --node NAME=URL)")
    add_attach_flags(parser)
    return parser


def _check_flags(args, deployment) -> None:
    """One clear line for flags that do not go together, before anything runs or is written (the static
    configuration is checked against the deployment when there is one; the attach mode checks it on the node)."""
    from pals.control.policies import check_fixed_configuration

    fixed_given = args.power_cap_w is not None or args.batch_cap is not None
    if args.policy == "static":
        if args.power_cap_w is None or args.batch_cap is None:
            raise ConfigError("--policy static holds one configuration: give both --power-cap-w W and --batch-cap B")
        if deployment is not None:
            check_fixed_configuration(args.power_cap_w, args.batch_cap, deployment.constraints())
    elif fixed_given:
        raise ConfigError(f"--power-cap-w and --batch-cap are for --policy static only, not {args.policy}; "
                          "drop them or use --policy static")
    hindsight_only = {"--max-budget-overshoot-pct": args.max_budget_overshoot_pct, "--meet-like": args.meet_like}
    for flag, value in hindsight_only.items():
        if value is not None and args.policy != "hindsight":
            raise ConfigError(f"{flag} is for --policy hindsight only")
    if args.max_qos_violation_pct is not None and args.policy not in ("hindsight", "oracle"):
        raise ConfigError("--max-qos-violation-pct is for --policy oracle or hindsight only")
    if args.meet_like is not None and (args.max_qos_violation_pct is not None or args.max_budget_overshoot_pct is not None):
        raise ConfigError("give --meet-like or explicit --max-* limits, not both")


def _criteria(args):
    """The hindsight oracle's limits from the flags (`--meet-like`: another run's figures)."""
    from pals.runtime.hindsight import MeetCriteria

    if args.meet_like is not None:
        from pals.core.untrusted import parse_json, read_text_file

        path = Path(args.meet_like)
        # Bounded, UTF-8-only, depth-checked: a binary or 100,000-deep file is one line too.
        other = parse_json(read_text_file(path, "--meet-like summary", max_bytes=16 * 2**20),
                           f"--meet-like {path}", allow_nan=True)
        if not isinstance(other, dict) or "qos_violation_pct" not in other:
            raise ConfigError(f"--meet-like {path}: not a pals run summary.json (no qos_violation_pct)")
        return MeetCriteria.no_worse_than(other)
    return MeetCriteria(
        max_qos_violation_pct=ORACLE_MAX_QOS_VIOLATION_PCT if args.max_qos_violation_pct is None
        else args.max_qos_violation_pct,
        max_budget_overshoot_pct=DEFAULT_MAX_BUDGET_OVERSHOOT_PCT if args.max_budget_overshoot_pct is None
        else args.max_budget_overshoot_pct,
    )


def run(args) -> int:
    from pals.control.budget import BudgetSchedule, PowerBudget
    from pals.control.policies import PolicyOptions
    from pals.control.types import Configuration
    from pals.runtime.load import LoadSpec, make_workload
    from pals.control.slo import Slo
    from pals.runtime.predictors import PredictorSource, latency_model_for, predictor_for

    args.node_name = resolve_node_name(args.node_name)  # a bad name is one line before anything runs
    if args.node == "vllm":
        return run_attached(args, check_flags=_check_flags)
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    # Everything that can be refused is refused here, before profiling or writing anything.
    check_sim_flags(args)
    flags.check_output_dir(args.out)
    deployment = deployment_from_args(args)
    _check_flags(args, deployment)
    if args.policy == "hindsight" and args.endpoint_port is not None:
        raise ConfigError("--endpoint-port is not for --policy hindsight (it runs every configuration offline)")
    endpoint = flags.endpoint_spec_from_args(args)
    if args.predictor is None and args.profile is None:
        flags.check_cache_dir()  # profiles and ground truth built on the fly are cached there
    criteria = _criteria(args) if args.policy == "hindsight" else None
    load = LoadSpec(trace=args.trace, rate_scale=args.rate_scale, rate_rps=args.rate, saturate=args.saturate,
                    seed=args.seed)
    schedule = BudgetSchedule.load(args.budget_schedule, kind=args.budget_kind) if args.budget_schedule else None
    make_workload(load)  # read a trace file now: a bad one is one line before profiling or writing
    budget = PowerBudget(args.budget_w, args.budget_kind) if args.budget_w is not None else None
    slo = (None if args.slo_tpot_ms is None and args.slo_ttft_s is None
           else Slo(tpot_ms=args.slo_tpot_ms, ttft_s=args.slo_ttft_s, quantile=args.slo_quantile))
    predictor = None
    if args.policy not in ("baseline", "static", "oracle", "hindsight") or args.predictor or args.profile:
        # A given predictor also brings its fitted node-power line to the loop (every policy).
        predictor = predictor_for(deployment, load, PredictorSource(args.predictor, args.profile), log=log)
    latency_model = None
    if slo is not None and predictor is not None:
        latency_model = latency_model_for(deployment, load, PredictorSource(args.predictor, args.profile), log=log)
    fixed = None if args.policy != "static" else Configuration(args.power_cap_w, args.batch_cap)
    options = PolicyOptions(objective=args.objective, fixed=fixed,
                            **({} if args.max_qos_violation_pct is None
                               else {"oracle_max_qos_violation_pct": args.max_qos_violation_pct}))
    out_dir = Path(args.out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--out {out_dir}: cannot create it ({error.strerror or error}); "
                          "choose a writable directory") from None
    context = dict(deployment=deployment, load=load, budget=budget, schedule=schedule, predictor=predictor,
                   options=options, out_dir=out_dir, log=log)
    if args.policy == "hindsight":
        if slo is not None:
            raise ConfigError("--slo-* flags are not yet for --policy hindsight; compare with --meet-like a run "
                              "that had the SLO")
        return _run_hindsight(args, criteria, **context)
    return _run_policy(args, endpoint=endpoint, slo=slo, latency_model=latency_model, **context)


def deployment_from_args(args):
    """The `Deployment` of --model/--gpu/--tp/--num-gpus/--batch-cap-max/--physics, validated now."""
    from pals.runtime.deployment import Deployment
    from pals.sim.hardware import get_gpu

    gpu_name = args.gpu or PAPER_GPU
    gpu = get_gpu(gpu_name)  # one clear line on an unknown GPU
    batch_cap_max = args.batch_cap_max if args.batch_cap_max is not None else default_batch_cap_max(gpu)
    physics = None
    if args.physics is not None:
        from pals.sim.physics import load_physics

        physics = load_physics(args.physics, gpu)
    deployment = Deployment(args.model, gpu_name, tp=args.tp or DEFAULT_SIM_TP, num_gpus=args.num_gpus or PAPER_NUM_GPUS,
                            batch_cap_max=batch_cap_max, physics=physics)
    deployment.sim_spec()  # validate names and parallelism now: one clear line on a typo
    return deployment


def default_batch_cap_max(gpu) -> int:
    """The engine's max_num_seqs when --batch-cap-max is not given: the top of the GPU preset's default
    batch grid (`GpuSpec.batch_grid_max`: the paper's 64 on A100 and L40S, 256 on H100/H200)."""
    return int(gpu.batch_grid_max)


def _progress(args, log):
    total = int(round(args.duration_s / args.interval_s))
    last_print = [-1]

    def progress(record):
        if args.quiet:
            return
        done = record["interval"]
        pct = int(100 * done / max(total, 1))
        if pct // 10 != last_print[0] // 10 or done == total:
            last_print[0] = pct
            cfg = record["decision"]["config"]
            sample = record.get("sample") or {}
            log(f"  {record['t_s']:7.1f} s  cap {cfg['power_cap_w']:5.0f} W  batch {cfg['batch_cap']:3d}  "
                f"{sample.get('throughput_tps', 0):7.0f} tok/s  {sample.get('node_power_w', 0):6.0f} W node  ({pct}%)")

    return progress


def _run_policy(args, *, endpoint, deployment, load, budget, schedule, predictor, options, out_dir, log,
                slo=None, latency_model=None) -> int:
    from pals.core.io import atomic_write_text
    from pals.runtime.scenario import run_scenario

    if args.policy == "oracle":
        log("oracle: measuring every configuration on this run's request stream (its ground truth) ...")
    log(f"pals run: {args.policy} on {deployment.describe()}, {args.duration_s:g} s simulated")

    def started(controller) -> None:
        controller.loop.metrics.set_node(args.node_name)
        if controller.endpoint is not None:
            log(f"endpoint on {controller.endpoint.url} (/status /budget /target /decisions /metrics)"
                + ("; changes need the bearer token" if endpoint.token is not None else ""))

    stop = threading.Event()
    signals_seen: list[int] = []
    restore = _install_signals(stop, signals_seen)
    try:
        result = run_scenario(deployment, load, args.policy, duration_s=args.duration_s, target_tps=args.target_tps,
                              budget=budget, budget_schedule=schedule, predictor=predictor, out_dir=out_dir,
                              seed=args.seed, endpoint=endpoint, interval_s=args.interval_s,
                              on_step=_progress(args, log), options=options, stop=stop, on_start=started,
                              slo=slo, latency_model=latency_model)
    finally:
        restore()
    summary = _with_setup(dict(result.summary), args, deployment, budget)
    summary["interrupted"] = result.interrupted
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    if result.interrupted:
        print(f"interrupted after {summary.get('duration_s', 0):g} s simulated; the summary covers that span",
              file=sys.stderr)
    print(format_summary_line(summary))
    if summary.get("health"):
        print(f"health: {json.dumps(summary['health'], default=float)}", file=sys.stderr)
    for warning in summary.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"wrote {out_dir / 'decisions.jsonl'} and {out_dir / 'summary.json'}")
    return 128 + signals_seen[0] if result.interrupted and signals_seen else 0


def _install_signals(stop: threading.Event, seen: list[int]):
    """`pals.control.stopping.install_stop_signals(stop)`, also noting which signal came (for the exit status)."""
    from pals.control.stopping import DEFAULT_STOP_SIGNALS, install_stop_signals

    restore = install_stop_signals(stop)
    stopping = {sig: signal.getsignal(sig) for sig in DEFAULT_STOP_SIGNALS}

    def noting(signum, frame):
        seen.append(signum)
        stopping[signum](signum, frame)

    for sig in DEFAULT_STOP_SIGNALS:
        signal.signal(sig, noting)
    return restore  # puts back the handlers from before install_stop_signals


def _run_hindsight(args, criteria, *, deployment, load, budget, schedule, predictor, options, out_dir, log) -> int:
    from pals.core.io import atomic_write_text
    from pals.runtime.hindsight import hindsight_static_optimum
    from pals.runtime.predictors import node_power_model

    log(f"pals run: hindsight oracle on {deployment.describe()}, every configuration for {args.duration_s:g} s "
        f"simulated on the same stream; limits: {criteria.describe()}")
    result = hindsight_static_optimum(deployment, load, duration_s=args.duration_s, criteria=criteria,
                                      objective=options.objective, seed=args.seed, target_tps=args.target_tps,
                                      budget=budget, budget_schedule=schedule, interval_s=args.interval_s,
                                      power_model=node_power_model(predictor), workers=args.workers,
                                      progress=not args.quiet)
    entry = result.write(out_dir)
    best = result.best_summary()
    summary = dict(best) if best is not None else {}
    summary["policy"] = "hindsight"
    summary["hindsight"] = entry
    summary = _with_setup(summary, args, deployment, budget)
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
    if best is None:
        print(f"hindsight: no configuration of {len(result.rows)} meets {criteria.describe()}")
    else:
        row = result.best
        print(f"hindsight optimum: {row.power_cap_w:g} W / batch {row.batch_cap} "
              f"({entry['meeting']} of {len(result.rows)} configurations meet {criteria.describe()})")
        print(format_summary_line(summary))
    print(f"wrote {out_dir / 'hindsight.csv'} and {out_dir / 'summary.json'}")
    return 0


def _with_setup(summary: dict, args, deployment, budget) -> dict:
    """The run's setup beside its figures in summary.json."""
    summary["objective"] = args.objective
    summary["deployment"] = {"model": deployment.model, "gpu": deployment.gpu, "tp": deployment.tp,
                             "num_gpus": deployment.num_gpus, "batch_cap_max": deployment.batch_cap_max,
                             "physics": args.physics}
    summary["load"] = {"trace": args.trace, "rate_rps": args.rate, "saturate": args.saturate,
                       "rate_scale": args.rate_scale, "seed": args.seed}
    summary["target_tps"] = args.target_tps
    summary["budget"] = None if budget is None else {"budget_w": budget.budget_w, "kind": budget.kind}
    summary["budget_schedule"] = args.budget_schedule
    if args.policy == "static":
        summary["static"] = {"power_cap_w": args.power_cap_w, "batch_cap": args.batch_cap}
    return summary


def format_summary_line(s: dict) -> str:
    return (f"{s['policy']}: {s['tokens_per_joule']:.3f} tok/J node ({s['tokens_per_joule_gpu']:.3f} GPU), "
            f"{s['throughput_tps']:.0f} tok/s, QoS violations {s['qos_violation_pct']:.1f}%, "
            f"mean power {s['mean_power_w']:.0f} W, budget overshoot {s['budget_overshoot_pct']:.1f}%, "
            f"{s['config_changes']} config changes")
