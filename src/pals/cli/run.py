"""`pals run`: one closed-loop scenario on the simulated node (any policy, trace or Poisson load)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pals.cli._common import add_command, positive_float, positive_int
from pals.control.policies import POLICY_NAMES
from pals.core.paper import CONTROL_INTERVAL_S, PAPER_GPU, PAPER_NUM_GPUS

DESCRIPTION = """\
Run one policy in closed loop on a simulated node and write DIR/decisions.jsonl (one JSON line
per 500 ms interval) and DIR/summary.json (tokens/J, QoS violation %, power tracking, ...).

Without --predictor or --profile, the simulated node is profiled once (36 configurations, a few
seconds) and the fitted predictor is cached under ~/.cache/pals/profiles ($PALS_CACHE_DIR).

Examples:
  pals run --model Mixtral-8x7B --policy pals --trace conv --rate-scale 0.4 \\
      --target-tps 1500 --budget-w 1500 --duration-s 600 --out runs/mixtral-pals
  pals run --model Qwen1.5-MoE-A2.7B --policy oracle --saturate --target-tps 3500 \\
      --budget-schedule schedule.csv --duration-s 300 --out runs/qwen-oracle --endpoint-port 9400
"""


def add_parser(subparsers):
    parser = add_command(subparsers, "run", "one closed-loop scenario on the simulated node", DESCRIPTION, run)
    dep = parser.add_argument_group("deployment")
    dep.add_argument("--node", choices=["sim"], default="sim", help="node kind (real GPUs: `pals serve`)")
    dep.add_argument("--model", required=True, help="model preset (e.g. Mixtral-8x7B, Qwen1.5-MoE-A2.7B) or a HF config.json")
    dep.add_argument("--gpu", default=PAPER_GPU, help=f"GPU preset (default {PAPER_GPU})")
    dep.add_argument("--tp", type=positive_int, default=4, help="tensor-parallel degree per replica (default 4)")
    dep.add_argument("--num-gpus", type=positive_int, default=PAPER_NUM_GPUS,
                     help=f"GPUs in the node (default {PAPER_NUM_GPUS})")
    ctl = parser.add_argument_group("control")
    ctl.add_argument("--policy", required=True, choices=POLICY_NAMES)
    ctl.add_argument("--target-tps", type=positive_float, default=None, help="throughput target, generated tokens/s")
    budget = ctl.add_mutually_exclusive_group()
    budget.add_argument("--budget-w", type=positive_float, default=None, help="power budget in W")
    budget.add_argument("--budget-schedule", default=None, metavar="FILE",
                        help="CSV (time_s,budget_w) or JSON schedule of budgets over run time")
    ctl.add_argument("--budget-kind", choices=["node", "gpu"], default="node",
                     help="what the budget limits: node wall power or summed GPU power (default node)")
    ctl.add_argument("--interval-s", type=positive_float, default=CONTROL_INTERVAL_S,
                     help=f"control interval (default {CONTROL_INTERVAL_S:g} s)")
    model = ctl.add_mutually_exclusive_group()
    model.add_argument("--predictor", default=None, metavar="MODEL", help="saved predictor (`pals fit`)")
    model.add_argument("--profile", default=None, metavar="PROFILE", help="profile to fit a predictor from")
    load = parser.add_argument_group("load (exactly one)")
    kinds = load.add_mutually_exclusive_group(required=True)
    kinds.add_argument("--trace", default=None, help="conv, code (Azure LLM 2023) or a CSV trace file")
    kinds.add_argument("--rate", type=positive_float, default=None, help="Poisson arrivals, requests/s")
    kinds.add_argument("--saturate", action="store_true", help="closed loop: requests always waiting")
    load.add_argument("--rate-scale", type=positive_float, default=1.0, help="trace speed-up (>1: more load)")
    load.add_argument("--seed", type=int, default=0, help="seed of the request stream and telemetry noise")
    out = parser.add_argument_group("output")
    out.add_argument("--duration-s", type=positive_float, required=True, help="simulated run time in s")
    out.add_argument("--out", required=True, metavar="DIR", help="directory for decisions.jsonl and summary.json")
    out.add_argument("--endpoint-port", type=int, default=None, metavar="P",
                     help="serve /status, /budget, /target, /decisions, /metrics on 127.0.0.1:P while running")
    out.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def run(args) -> int:
    from pals.control.budget import BudgetSchedule, PowerBudget
    from pals.runtime.deployment import Deployment
    from pals.runtime.load import LoadSpec
    from pals.runtime.predictors import PredictorSource, predictor_for
    from pals.runtime.scenario import run_scenario
    from pals.runtime.truth import GroundTruth

    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    deployment = Deployment(args.model, args.gpu, tp=args.tp, num_gpus=args.num_gpus)
    deployment.sim_spec()  # validate names and parallelism now: one clear line on a typo
    load = LoadSpec(trace=args.trace, rate_scale=args.rate_scale, rate_rps=args.rate, saturate=args.saturate,
                    seed=args.seed)
    schedule = BudgetSchedule.load(args.budget_schedule, kind=args.budget_kind) if args.budget_schedule else None
    budget = PowerBudget(args.budget_w, args.budget_kind) if args.budget_w else None
    predictor = None
    if args.policy != "baseline":
        predictor = predictor_for(deployment, load, PredictorSource(args.predictor, args.profile), log=log)
    truth = GroundTruth.on_demand(deployment, load) if args.policy == "oracle" else None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
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

    if args.endpoint_port is not None:
        log(f"endpoint on http://127.0.0.1:{args.endpoint_port} (/status /budget /target /decisions /metrics)")
    log(f"pals run: {args.policy} on {deployment.describe()}, {args.duration_s:g} s simulated")
    result = run_scenario(deployment, load, args.policy, duration_s=args.duration_s, target_tps=args.target_tps,
                          budget=budget, budget_schedule=schedule, predictor=predictor, truth=truth, out_dir=out_dir,
                          seed=args.seed, endpoint_port=args.endpoint_port, interval_s=args.interval_s,
                          on_step=progress)
    summary = dict(result.summary)
    summary["deployment"] = {"model": deployment.model, "gpu": deployment.gpu, "tp": deployment.tp,
                             "num_gpus": deployment.num_gpus}
    summary["load"] = {"trace": args.trace, "rate_rps": args.rate, "saturate": args.saturate,
                       "rate_scale": args.rate_scale, "seed": args.seed}
    summary["target_tps"] = args.target_tps
    summary["budget"] = None if budget is None else {"budget_w": budget.budget_w, "kind": budget.kind}
    summary["budget_schedule"] = args.budget_schedule
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    print(format_summary_line(summary))
    for warning in summary.get("warnings", []):
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"wrote {out_dir / 'decisions.jsonl'} and {out_dir / 'summary.json'}")
    return 0


def format_summary_line(s: dict) -> str:
    return (f"{s['policy']}: {s['tokens_per_joule']:.3f} tok/J node ({s['tokens_per_joule_gpu']:.3f} GPU), "
            f"{s['throughput_tps']:.0f} tok/s, QoS violations {s['qos_violation_pct']:.1f}%, "
            f"mean power {s['mean_power_w']:.0f} W, budget overshoot {s['budget_overshoot_pct']:.1f}%, "
            f"{s['config_changes']} config changes")
