"""Decision time per control interval for each policy on the paper's grid (6 caps x 6 batches).

Runs each policy in closed loop on the simulated node and reports the time `policy.decide` took,
p50 / p99 / max over all intervals. Model-guided policies score every candidate with the fitted
random-forest predictor at every re-decision; `--every-interval` forces PALS to re-decide every
interval (no hysteresis) to show the worst case.

    python benchmarks/bench_decision_time.py [--model Mixtral-8x7B] [--duration-s 600]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from pals.control.policies import make_policy
    from pals.runtime.deployment import Deployment
    from pals.runtime.load import LoadSpec
    from pals.runtime.predictors import simulated_predictor
    from pals.runtime.scenario import run_scenario
    from pals.runtime.truth import GroundTruth

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Mixtral-8x7B")
    parser.add_argument("--duration-s", type=float, default=600.0)
    args = parser.parse_args()
    deployment = Deployment(args.model)
    lengths = LoadSpec(saturate=True)
    predictor = simulated_predictor(deployment, lengths)
    truth = GroundTruth.on_demand(deployment, lengths)
    max_tps = truth.max_throughput_tps()
    load = LoadSpec(trace="conv", rate_scale=1.6)
    print(f"{args.model}, grid {len(predictor.caps_)} caps x {len(predictor.batches_)} batches, "
          f"{args.duration_s:g} s simulated per policy, conv trace x1.6")
    print(f"{'policy':22s} {'decisions':>9s} {'p50 ms':>7s} {'p99 ms':>7s} {'max ms':>7s}")
    for name in ("baseline", "adaptive-batch", "adaptive-cap", "pals", "oracle"):
        r = run_scenario(deployment, load, name, duration_s=args.duration_s, target_tps=0.7 * max_tps,
                         predictor=predictor)  # the Oracle's truth: built per run
        ms = np.array([rec["decide_ms"] for rec in r.records[1:]])
        print(f"{name:22s} {len(ms):9d} {np.percentile(ms, 50):7.2f} {np.percentile(ms, 99):7.2f} {ms.max():7.2f}")
    # Worst case: a full candidate scoring every interval.
    policy = make_policy("pals", predictor=predictor)
    from pals.control.types import Configuration, DecisionContext
    from pals.control.budget import PowerBudget, ThroughputTarget

    constraints = deployment.constraints()
    times = []
    for i in range(2000):
        ctx = DecisionContext(constraints, Configuration(400.0, 64), None, PowerBudget(1300.0 + (i % 7), "node"),
                              ThroughputTarget(0.7 * max_tps), True, i)
        t0 = time.perf_counter()
        policy.decide(ctx)
        times.append((time.perf_counter() - t0) * 1000)
    times = np.array(times)
    print(f"{'pals, full re-decision':22s} {len(times):9d} {np.percentile(times, 50):7.2f} "
          f"{np.percentile(times, 99):7.2f} {times.max():7.2f}")


if __name__ == "__main__":
    main()
