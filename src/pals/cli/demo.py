"""`pals demo`: Baseline, PALS and the best static configuration on a simulated 4x A100 node, under a TPOT SLO
and a power-budget step (`pals.cli.demo_story` computes the table, the caption and the figure)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from pals.cli import _common as flags
from pals.cli._common import add_command
from pals.control.policies import POLICY_NAMES
from pals.control.slo import Slo
from pals.core.paper import CONTROL_INTERVAL_S
from pals.errors import ConfigError

DESCRIPTION = """\
A simulated 4x A100-SXM4-80GB node serves Mixtral-8x7B (TP4) under the Azure LLM 2023
conversation trace, sped up so the node is busy, with a latency SLO on TPOT (p99) and a
node power budget that steps down for the middle third of the run and then returns. Baseline
(maximum cap and batch), PALS, and the best static configuration (the hindsight optimum: every
fixed power cap x batch cap of the grid run on the same stream, SLO and budget, held to PALS's
own QoS, SLO and budget figures) run the same simulated span. Prints a comparison table and one
caption line computed from the numbers, and writes a figure: node power vs budget, TPOT vs SLO,
the caps and batch caps over time, and tokens/J as ratios to the baseline.

The first run profiles the simulated node (a few seconds) and caches the predictor under
~/.cache/pals (or $PALS_CACHE_DIR). Ctrl-C stops the run in progress and still writes the
summary, table and figure of what ran.
"""

DEMO_MODEL = "Mixtral-8x7B"
DEMO_TRACE = "conv"
DEMO_RATE_SCALE = 1.6
"""The conv trace offers ~1,160 output tok/s; x1.6 keeps this node (max ~2,170 tok/s) busy."""
DEMO_TARGET_TPS = 1500.0
"""About 70 % of the node's maximum throughput on this workload."""
DEMO_BUDGETS_W = (1700.0, 1150.0)
"""Node budget outside and inside the step: the first is above what the node draws at its largest
batch and highest cap, the second binds (below what the baseline would draw)."""
DEMO_STEP_FRACS = (1 / 3, 2 / 3)
"""Fractions of the run at which the budget steps down and back up."""
DEMO_SLO = Slo(tpot_ms=55.0, quantile=0.99)
"""Between the TPOT the simulated node gives at the engine's largest batch (which the baseline holds)
and at the next smaller batches, so the baseline breaks it and the batch cap has to bind to meet it."""



def add_parser(subparsers):
    parser = add_command(subparsers, "demo", "simulated 4x A100 node: Baseline, PALS, best static; SLO and budget step",
                         DESCRIPTION, run)
    parser.add_argument("--all", action="store_true",
                        help="also run AdaptiveBatch, AdaptiveCap and the Oracle")
    parser.add_argument("--duration-s", type=flags.DURATION_S, default=600.0,
                        help="simulated seconds per policy and per static configuration (default 600)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write summary.json, decisions-<policy>.jsonl, static-sweep.csv and demo.png here")
    parser.add_argument("--plot", default=None, metavar="PNG", help="plot path (default DIR/demo.png, else ./pals-demo.png)")
    parser.add_argument("--seed", type=flags.SEED, default=0, help="seed of the request stream and telemetry noise")
    parser.add_argument("--physics", default=None, metavar="FILE",
                        help="simulated GPU physics from `pals calibrate` for the demo's A100s (default: the preset's)")
    return parser


class _Interrupted(Exception):
    """The stop signal came during the static sweep."""


def _check_paths(args) -> None:
    """Refuse what can be refused before profiling: output paths, the cache."""
    flags.check_output_dir(args.out)
    if args.plot is not None:
        if Path(args.plot).is_dir():
            raise ConfigError(f"--plot {args.plot} is a directory; give a file name ending in .png")
        flags.check_output_dir(str(Path(args.plot).parent), "--plot's folder")
    flags.check_cache_dir()


def _scenario(args):
    from pals.control.budget import BudgetSchedule, BudgetStep
    from pals.runtime.deployment import Deployment
    from pals.runtime.load import LoadSpec

    physics = None
    if args.physics is not None:
        from pals.core.paper import PAPER_GPU
        from pals.sim.physics import load_physics

        physics = load_physics(args.physics, PAPER_GPU)
    deployment = Deployment(DEMO_MODEL, physics=physics)
    load = LoadSpec(trace=DEMO_TRACE, rate_scale=DEMO_RATE_SCALE, seed=args.seed)
    high, low = DEMO_BUDGETS_W
    down_s, up_s = (args.duration_s * f for f in DEMO_STEP_FRACS)
    schedule = BudgetSchedule((BudgetStep(0.0, high), BudgetStep(down_s, low), BudgetStep(up_s, high)), "node")
    return deployment, load, schedule, (down_s, up_s)


def _static_grid(deployment):
    """The grid PALS chooses from: the paper's caps within the GPU's range x its batches up to the engine's maximum."""
    from pals.core.paper import PAPER_BATCH_CAPS, PAPER_POWER_CAPS_W
    from pals.runtime.hindsight import grid_configurations

    gpu = deployment.sim_spec().gpu_spec
    caps = [c for c in PAPER_POWER_CAPS_W if gpu.power_limit_min_w <= c <= gpu.power_limit_max_w]
    return grid_configurations(caps, [b for b in PAPER_BATCH_CAPS if b <= deployment.batch_cap_max])


def run(args) -> int:
    from pals.cli.run import _install_signals
    from pals.runtime.predictors import latency_model_for, simulated_predictor

    started = time.perf_counter()
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    # Static runs last, as the hindsight sweep over the grid; the Oracle plans on its ground truth.
    policies = [p for p in POLICY_NAMES if p != "static"] if args.all else ["baseline", "pals"]
    _check_paths(args)
    deployment, load, schedule, (down_s, up_s) = _scenario(args)
    say(f"pals demo: {deployment.num_gpus}x {deployment.gpu}, {DEMO_MODEL} TP{deployment.tp}, Azure conv trace "
        f"x{DEMO_RATE_SCALE}, target {DEMO_TARGET_TPS:.0f} tok/s, SLO {DEMO_SLO.describe()}, node budget "
        f"{DEMO_BUDGETS_W[0]:.0f} W -> {DEMO_BUDGETS_W[1]:.0f} W from {down_s:.0f} s to {up_s:.0f} s (simulated)")
    say("  predictor: loading or profiling the simulated node ...")
    predictor = simulated_predictor(deployment, load, progress=False, log=lambda m: say("  " + m))
    latency_model = latency_model_for(deployment, load)
    if "oracle" in policies:
        say("  oracle: each configuration is run on the demo's request stream (its ground truth) before it plans")
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    common = dict(duration_s=args.duration_s, target_tps=DEMO_TARGET_TPS, budget_schedule=schedule, seed=args.seed,
                  slo=DEMO_SLO)
    stop = threading.Event()
    signals_seen: list[int] = []
    restore = _install_signals(stop, signals_seen)
    try:
        results = _run_policies(policies, common, deployment, load, predictor, latency_model, out_dir, stop, say)
        sweep = None
        if not stop.is_set():
            sweep = _run_static(results, common, deployment, load, out_dir, stop, say)
    finally:
        restore()
    interrupted = stop.is_set()
    _report(args, results, sweep, out_dir, interrupted, say)
    say(f"demo took {time.perf_counter() - started:.1f} s wall")
    return 128 + signals_seen[0] if interrupted and signals_seen else 0


def _progress(name: str, duration_s: float, say):
    total = max(1, int(duration_s / CONTROL_INTERVAL_S))
    marks = {int(total * k / 4) for k in (1, 2, 3)}

    def progress(record):
        if record["interval"] in marks:
            say(f"    {name}: {100 * record['interval'] // total}% ({record['t_s']:.0f} s simulated)")

    return progress


def _run_policies(policies, common, deployment, load, predictor, latency_model, out_dir, stop, say) -> dict:
    from pals.runtime.scenario import run_scenario

    results = {}
    for name in policies:
        if stop.is_set():
            break
        t0 = time.perf_counter()
        say(f"  running {name} ...")
        results[name] = run_scenario(deployment, load, name, predictor=predictor, latency_model=latency_model,
                                     out_dir=out_dir, on_step=_progress(name, common["duration_s"], say), stop=stop,
                                     decision_log_name=f"decisions-{name}.jsonl", **common)
        say(f"    {name}: {'interrupted' if results[name].interrupted else 'done'} in "
            f"{time.perf_counter() - t0:.1f} s wall")
    return results


def _run_static(results, common, deployment, load, out_dir, stop, say):
    """The hindsight sweep over the grid, then the best configuration rerun for its time series."""
    from pals.cli.demo_story import STATIC_NAME, choose_static
    from pals.control.policies import PolicyOptions
    from pals.runtime.hindsight import hindsight_over
    from pals.runtime.scenario import run_scenario

    if "pals" not in results:
        return None
    grid = _static_grid(deployment)

    def run_static(config):
        if stop.is_set():
            raise _Interrupted
        result = run_scenario(deployment, load, "static", options=PolicyOptions(fixed=config), stop=stop, **common)
        if result.interrupted:
            raise _Interrupted
        return result.summary

    t0 = time.perf_counter()
    say(f"  best static: {len(grid)} fixed (cap, batch) of PALS's grid, each {common['duration_s']:g} s simulated "
        "on the same stream, SLO and budget ...")
    try:
        sweep = hindsight_over(grid, run_static, label="static sweep")
    except _Interrupted:
        say("    static sweep: interrupted (no best static configuration)")
        return None
    sweep, choice = choose_static(sweep, results["pals"].summary)
    row = choice.row
    say(f"    static sweep: done in {time.perf_counter() - t0:.1f} s wall; best {row.power_cap_w:g} W / batch "
        f"{row.batch_cap}, meeting {choice.meets}")
    fixed = PolicyOptions(fixed=_config_of(row))
    results[STATIC_NAME] = run_scenario(deployment, load, "static", options=fixed, out_dir=out_dir, stop=stop,
                                        decision_log_name=f"decisions-{STATIC_NAME}.jsonl", **common)
    return sweep, choice


def _config_of(row):
    from pals.control.types import Configuration

    return Configuration(row.power_cap_w, row.batch_cap)


def _report(args, results, sweep, out_dir, interrupted, say) -> None:
    """Table, caption, figure and summary.json of what ran (all of it, or what ran before a stop signal)."""
    from pals.cli.demo_story import STATIC_NAME, caption, format_table, plot_demo, static_label, verdicts
    from pals.core.io import atomic_write_text

    choice = None if sweep is None else sweep[1]
    labels = {} if choice is None else {STATIC_NAME: static_label(choice.row)}
    summaries = {name: r.summary for name, r in results.items()}
    line = caption(summaries, DEMO_SLO, choice, interrupted=interrupted)
    say("")
    if interrupted:
        say("interrupted: the table covers what ran (a partial run's figures cover its span)")
    if summaries:
        say(format_table(summaries, labels))
    say(line)
    plot_path = Path(args.plot) if args.plot else (out_dir / "demo.png" if out_dir else Path("pals-demo.png"))
    if results:
        title = (f"pals demo: {DEMO_MODEL} on 4x A100 (simulated), Azure conv x{DEMO_RATE_SCALE}, SLO "
                 f"{DEMO_SLO.describe()}, budget step {DEMO_BUDGETS_W[0]:.0f} -> {DEMO_BUDGETS_W[1]:.0f} W")
        plot_demo(results, plot_path, slo=DEMO_SLO, labels=labels, title=title, caption_text=line)
        say(f"\nplot: {plot_path}")
    if out_dir is not None:
        summary = {
            "scenario": {"model": DEMO_MODEL, "trace": DEMO_TRACE, "rate_scale": DEMO_RATE_SCALE,
                         "target_tps": DEMO_TARGET_TPS, "slo": DEMO_SLO.to_json(), "budgets_w": list(DEMO_BUDGETS_W),
                         "budget_step_fracs": list(DEMO_STEP_FRACS), "duration_s": args.duration_s, "seed": args.seed},
            "policies": summaries,
            "labels": labels,
            "caption": line,
            "verdicts": verdicts(summaries).as_dict(),
            "interrupted": interrupted,
        }
        if sweep is not None:
            summary["static_sweep"] = sweep[0].write(out_dir, "static-sweep.csv") | {"chosen_meeting": choice.meets}
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
        say(f"summary: {out_dir / 'summary.json'}")
    warnings = sorted({w for r in results.values() for w in r.summary.get("warnings", [])})
    for w in warnings[:5]:
        print(f"note: {w}", file=sys.stderr)
    for name, r in results.items():
        if r.summary.get("health"):
            print(f"health ({name}): {json.dumps(r.summary['health'], default=float)}", file=sys.stderr)
