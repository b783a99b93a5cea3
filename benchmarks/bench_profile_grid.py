"""Wall time of profiling the paper's 36-point grid on the simulated node.

Runs `run_profile` (10 s warm-up + 30 s window per point, the CLI defaults,
saturating load, default telemetry noise) for each model given and prints the
wall time. Target: <= 60 s per grid. GPT-2 is the slowest to simulate (its
steps are the shortest, so a window holds the most steps).

Usage: python benchmarks/bench_profile_grid.py [--models Mixtral-8x7B,GPT-2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="Mixtral-8x7B,Qwen1.5-MoE-A2.7B,GPT-2", help="comma-separated presets")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="warm-up per point, s")
    parser.add_argument("--window-s", type=float, default=30.0, help="window per point, s")
    args = parser.parse_args()

    from pals.cli.profile import smallest_tp
    from pals.core.workload import WorkloadDescriptor
    from pals.model.profiler import ProfileGrid, run_profile
    from pals.sim.node import SimNode, SimNodeSpec
    from pals.sim.workload import LengthDistribution, SaturatingWorkload

    worst = 0.0
    print(f"{'model':<20} {'TP':>2} {'points':>6} {'wall s':>7} {'simulated s':>11}")
    for model in args.models.split(","):
        tp = smallest_tp(model, "A100-SXM4-80GB", 4)
        workload = SaturatingWorkload(LengthDistribution.lognormal(1000, 0.5), LengthDistribution.lognormal(200, 0.5))
        d = workload.descriptor
        start = time.perf_counter()
        node = SimNode(SimNodeSpec(model, "A100-SXM4-80GB", num_gpus=4, tp=tp), workload, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            profile = run_profile(node, node.clock, ProfileGrid(), args.warmup_s, args.window_s, Path(tmp) / "p.csv",
                                  progress=False,
                                  workload=WorkloadDescriptor(d.mean_prompt_tokens, d.mean_output_tokens, None))
        wall_s = time.perf_counter() - start
        worst = max(worst, wall_s)
        print(f"{model:<20} {tp:>2} {len(profile):>6} {wall_s:>7.1f} {node.clock.now_s():>11.0f}", flush=True)
    print(f"target <= 60 s per grid: {'met' if worst <= 60 else 'NOT met'} (worst {worst:.1f} s)")
    return 0 if worst <= 60 else 1


if __name__ == "__main__":
    sys.exit(main())
