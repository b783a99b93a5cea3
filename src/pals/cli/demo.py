"""`pals demo`: Baseline vs PALS on a simulated 4x A100 node, with a power-budget step halfway."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from pals.cli import _common as flags
from pals.cli._common import add_command
from pals.control.policies import POLICY_NAMES
from pals.core.paper import CONTROL_INTERVAL_S
from pals.errors import ConfigError

DESCRIPTION = """\
A simulated 4x A100-SXM4-80GB node serves Mixtral-8x7B (TP4) under the Azure LLM 2023
conversation trace, sped up so the node is busy. Each policy runs the same 10 simulated
minutes; halfway through, the node's power budget steps down. Prints a comparison table and
writes a plot of power and budget, throughput and target, and the chosen caps and batch.

The first run profiles the simulated node (a few seconds) and caches the predictor under
~/.cache/pals (or $PALS_CACHE_DIR).
"""

DEMO_MODEL = "Mixtral-8x7B"
DEMO_TRACE = "conv"
DEMO_RATE_SCALE = 1.6
"""The conv trace offers ~1,160 output tok/s; x1.6 keeps this node (max ~2,170 tok/s) busy."""
DEMO_TARGET_TPS = 1500.0
"""About 70 % of the node's maximum throughput on this workload."""
DEMO_BUDGETS_W = (1700.0, 1150.0)
"""Node budget before and after the step: the first is above what the node draws at full power."""


def add_parser(subparsers):
    parser = add_command(subparsers, "demo", "simulated 4x A100 node: Baseline vs PALS, budget step halfway",
                         DESCRIPTION, run)
    parser.add_argument("--all", action="store_true",
                        help="run all five policies (adds AdaptiveBatch, AdaptiveCap, Oracle; not Static)")
    parser.add_argument("--duration-s", type=flags.DURATION_S, default=600.0,
                        help="simulated seconds per policy (default 600)")
    parser.add_argument("--out", default=None, metavar="DIR", help="write summary.json, decisions-<policy>.jsonl and demo.png here")
    parser.add_argument("--plot", default=None, metavar="PNG", help="plot path (default DIR/demo.png, else ./pals-demo.png)")
    parser.add_argument("--seed", type=flags.SEED, default=0, help="seed of the request stream and telemetry noise")
    parser.add_argument("--physics", default=None, metavar="FILE",
                        help="simulated GPU physics from `pals calibrate` for the demo's A100s (default: the preset's)")
    return parser


def run(args) -> int:
    from pals.control.budget import BudgetSchedule, BudgetStep
    from pals.core.io import atomic_write_text
    from pals.runtime.deployment import Deployment
    from pals.runtime.load import LoadSpec
    from pals.runtime.predictors import simulated_predictor
    from pals.runtime.scenario import run_scenario

    started = time.perf_counter()
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    # Static needs a configuration of its own (`pals run --policy static`).
    policies = [p for p in POLICY_NAMES if p != "static"] if args.all else ["baseline", "pals"]
    # Refuse what can be refused before profiling: output paths, the cache, the physics file.
    flags.check_output_dir(args.out)
    if args.plot is not None:
        if Path(args.plot).is_dir():
            raise ConfigError(f"--plot {args.plot} is a directory; give a file name ending in .png")
        flags.check_output_dir(str(Path(args.plot).parent), "--plot's folder")
    flags.check_cache_dir()
    physics = None
    if args.physics is not None:
        from pals.core.paper import PAPER_GPU
        from pals.sim.physics import load_physics

        physics = load_physics(args.physics, PAPER_GPU)
    deployment = Deployment(DEMO_MODEL, physics=physics)
    load = LoadSpec(trace=DEMO_TRACE, rate_scale=DEMO_RATE_SCALE, seed=args.seed)
    half_s = args.duration_s / 2
    schedule = BudgetSchedule((BudgetStep(0.0, DEMO_BUDGETS_W[0]), BudgetStep(half_s, DEMO_BUDGETS_W[1])), "node")
    say(f"pals demo: {deployment.num_gpus}x {deployment.gpu}, {DEMO_MODEL} TP{deployment.tp}, Azure conv trace x{DEMO_RATE_SCALE}, "
        f"target {DEMO_TARGET_TPS:.0f} tok/s, node budget {DEMO_BUDGETS_W[0]:.0f} W -> {DEMO_BUDGETS_W[1]:.0f} W "
        f"at {half_s:.0f} s (simulated)")
    say("  predictor: loading or profiling the simulated node ...")
    predictor = simulated_predictor(deployment, load, progress=False, log=lambda m: say("  " + m))
    if "oracle" in policies:
        say("  oracle: each configuration is run on the demo's request stream (its ground truth) before it plans")
    out_dir = Path(args.out) if args.out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in policies:
        t0 = time.perf_counter()
        total = max(1, int(args.duration_s / CONTROL_INTERVAL_S))
        marks = {int(total * k / 4) for k in (1, 2, 3)}

        def progress(record, name=name, marks=marks, total=total):
            if record["interval"] in marks:
                say(f"    {name}: {100 * record['interval'] // total}% ({record['t_s']:.0f} s simulated)")

        say(f"  running {name} ...")
        result = run_scenario(deployment, load, name, duration_s=args.duration_s, target_tps=DEMO_TARGET_TPS,
                              budget_schedule=schedule, predictor=predictor, out_dir=out_dir,
                              seed=args.seed, on_step=progress, decision_log_name=f"decisions-{name}.jsonl")
        results[name] = result
        say(f"    {name}: done in {time.perf_counter() - t0:.1f} s wall")
    say("")
    say(format_table({name: r.summary for name, r in results.items()}))
    plot_path = Path(args.plot) if args.plot else (out_dir / "demo.png" if out_dir else Path("pals-demo.png"))
    plot_demo(results, plot_path, DEMO_TARGET_TPS)
    say(f"\nplot: {plot_path}")
    if out_dir is not None:
        summary = {name: r.summary for name, r in results.items()}
        atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=float) + "\n")
        say(f"summary: {out_dir / 'summary.json'}")
    warnings = sorted({w for r in results.values() for w in r.summary.get("warnings", [])})
    for w in warnings[:5]:
        print(f"note: {w}", file=sys.stderr)
    for name, r in results.items():
        if r.summary.get("health"):
            print(f"health ({name}): {json.dumps(r.summary['health'], default=float)}", file=sys.stderr)
    say(f"demo took {time.perf_counter() - started:.1f} s wall")
    return 0


COLUMNS = (
    ("policy", "policy", "{}"),
    ("tokens_per_joule", "tok/J node", "{:.3f}"),
    ("tokens_per_joule_gpu", "tok/J GPU", "{:.3f}"),
    ("throughput_tps", "tok/s", "{:.0f}"),
    ("qos_violation_pct", "QoS viol %", "{:.1f}"),
    ("power_tracking_error_pct", "track err %", "{:.1f}"),
    ("budget_overshoot_pct", "over budget %", "{:.1f}"),
    ("mean_power_w", "mean W", "{:.0f}"),
    ("config_changes", "changes", "{}"),
    ("governor_trims", "cap trims", "{}"),
)


def format_table(summaries: dict) -> str:
    """Fixed-width comparison table, one row per policy."""
    header = [title for _, title, _ in COLUMNS]
    rows = [[fmt.format(s[key]) if key != "policy" else name for key, _, fmt in COLUMNS] for name, s in summaries.items()]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def plot_demo(results: dict, path: Path, target_tps: float | None) -> None:
    """Three panels over time: node power and budget; throughput (5 s window) and target; cap and batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    budget_drawn = False
    for name, result in results.items():
        recs = [r for r in result.records if r.get("sample")]
        t = [r["t_s"] for r in recs]
        axes[0].plot(t, [r["sample"]["node_power_w"] for r in recs], lw=0.8, label=name)
        if not budget_drawn:
            axes[0].step(t, [r["budget"]["budget_w"] if r["budget"] else float("nan") for r in recs], "k--",
                         where="post", lw=1.2, label="budget")
            budget_drawn = True
        axes[1].plot(t, [r["measured"]["window_throughput_tps"] for r in recs], lw=0.9, label=name)
        line, = axes[2].plot(t, [r["decision"]["config"]["power_cap_w"] for r in recs], lw=1.0, label=f"{name} cap (W)")
        ax2 = axes[2]._pals_twin if hasattr(axes[2], "_pals_twin") else axes[2].twinx()
        axes[2]._pals_twin = ax2
        ax2.plot(t, [r["decision"]["config"]["batch_cap"] for r in recs], ls=":", color=line.get_color(), lw=1.2,
                 label=f"{name} batch")
    if target_tps:
        axes[1].axhline(target_tps, color="k", ls="--", lw=1.2, label="target")
    axes[0].set_ylabel("node power (W)")
    axes[1].set_ylabel("throughput, 5 s window (tok/s)")
    axes[2].set_ylabel("GPU power cap (W), solid")
    axes[2]._pals_twin.set_ylabel("batch cap, dotted")
    axes[2].set_xlabel("simulated time (s)")
    for ax in axes:
        ax.legend(loc="upper right", fontsize=7, ncol=3)
        ax.grid(alpha=0.3)
    axes[0].set_title("PALS demo: power cap x batch cap control under a budget step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
