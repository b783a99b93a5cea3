"""All five policies on each of the paper's eight models (simulated 4x A100, TP4).

Saturating Poisson load (1.3x capacity, Azure conv lengths), target 70 % of the node's maximum
throughput, no budget, 600 simulated seconds per run. Prints one row per model and policy, then
PALS relative to Oracle and Baseline. Predictors and ground truth are cached under
$PALS_CACHE_DIR (default ~/.cache/pals); the first run profiles every model (about a minute).

    python benchmarks/bench_policies.py [--duration-s 600] [--models Mixtral-8x7B,Qwen1.5-MoE-A2.7B]
"""

from __future__ import annotations

import argparse
import time

POLICIES = ("baseline", "adaptive-batch", "adaptive-cap", "pals", "oracle")


def main() -> None:
    from pals.runtime.deployment import Deployment
    from pals.runtime.load import LoadSpec
    from pals.runtime.predictors import simulated_predictor
    from pals.runtime.scenario import run_scenario
    from pals.runtime.truth import GroundTruth
    from pals.sim.llm import LLM_PRESETS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--models", default=",".join(LLM_PRESETS))
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    print(f"{'model':20s} {'policy':15s} {'tok/J GPU':>9s} {'tok/J node':>10s} {'tok/s':>7s} {'viol %':>6s} "
          f"{'mean W':>7s} {'changes':>7s} {'dec p99 ms':>10s}")
    for model in args.models.split(","):
        deployment = Deployment(model)
        lengths = LoadSpec(saturate=True)
        predictor = simulated_predictor(deployment, lengths)
        truth = GroundTruth.on_demand(deployment, lengths)
        max_tps = truth.max_throughput_tps()
        load = LoadSpec(rate_rps=1.3 * max_tps / 211.0, seed=args.seed)
        summaries = {}
        for policy in POLICIES:
            s = run_scenario(deployment, load, policy, duration_s=args.duration_s, target_tps=0.7 * max_tps,
                             predictor=predictor).summary  # the Oracle's truth: built per run
            summaries[policy] = s
            print(f"{model:20s} {policy:15s} {s['tokens_per_joule_gpu']:9.3f} {s['tokens_per_joule']:10.3f} "
                  f"{s['throughput_tps']:7.0f} {s['qos_violation_pct']:6.1f} {s['mean_power_w']:7.0f} "
                  f"{s['config_changes']:7d} {s['decide_ms_p99']:10.2f}", flush=True)
        rows.append((model, summaries))
    print("\nPALS relative to Oracle and Baseline (GPU tokens/J; node tokens/J in brackets)")
    print(f"{'model':20s} {'PALS/Oracle':>16s} {'PALS/Baseline':>16s} {'AdaBatch/Base':>14s} {'AdaCap/Base':>12s} {'PALS viol %':>11s}")
    ratios = []
    for model, s in rows:
        p, o, b = s["pals"], s["oracle"], s["baseline"]
        r = (p["tokens_per_joule_gpu"] / o["tokens_per_joule_gpu"], p["tokens_per_joule_gpu"] / b["tokens_per_joule_gpu"])
        ratios.append(r)
        print(f"{model:20s} {r[0]:7.3f} ({p['tokens_per_joule'] / o['tokens_per_joule']:.3f}) "
              f"{r[1]:7.3f} ({p['tokens_per_joule'] / b['tokens_per_joule']:.3f}) "
              f"{s['adaptive-batch']['tokens_per_joule_gpu'] / b['tokens_per_joule_gpu']:14.3f} "
              f"{s['adaptive-cap']['tokens_per_joule_gpu'] / b['tokens_per_joule_gpu']:12.3f} {p['qos_violation_pct']:11.1f}")
    if ratios:
        print(f"{'mean':20s} {sum(r[0] for r in ratios) / len(ratios):7.3f}          {sum(r[1] for r in ratios) / len(ratios):7.3f}")
    print(f"\n{time.perf_counter() - started:.0f} s wall")


if __name__ == "__main__":
    main()
