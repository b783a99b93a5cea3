"""predict_candidates latency for 36 candidates (the controller's per-interval call).

Fits a PowerPerfPredictor (100 trees per forest) on a simulated Mixtral-8x7B
profile of the paper's grid, then times `predict_candidates` for 36 (cap, batch)
candidates over many calls and prints median, p99 and max; for comparison also
times scikit-learn's own `RandomForestRegressor.predict` on the same rows.
Target: p99 <= 15 ms.

Usage: python benchmarks/bench_predictor.py [--calls 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="timed calls")
    parser.add_argument("--model", default="Mixtral-8x7B", help="simulated model to profile")
    args = parser.parse_args()

    from pals.model.predictor import PowerPerfPredictor
    from pals.core.workload import WorkloadDescriptor
    from pals.model.profiler import ProfileGrid, run_profile
    from pals.sim.node import SimNode, SimNodeSpec
    from pals.sim.workload import LengthDistribution, SaturatingWorkload
    from pals.cli.profile import smallest_tp

    spec = SimNodeSpec(args.model, "A100-SXM4-80GB", num_gpus=4, tp=smallest_tp(args.model, "A100-SXM4-80GB", 4))
    workload = SaturatingWorkload(LengthDistribution.lognormal(1000, 0.5), LengthDistribution.lognormal(200, 0.5))
    node = SimNode(spec, workload, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        d = workload.descriptor
        profile = run_profile(node, node.clock, ProfileGrid(), 10.0, 30.0, Path(tmp) / "p.csv", progress=False,
                              workload=WorkloadDescriptor(d.mean_prompt_tokens, d.mean_output_tokens, None))
    t0 = time.perf_counter()
    predictor = PowerPerfPredictor(n_estimators=100, random_state=0).fit(profile)
    fit_s = time.perf_counter() - t0

    caps = np.repeat([150.0, 200.0, 250.0, 300.0, 350.0, 400.0], 6)
    batches = np.tile([1, 4, 8, 16, 32, 64], 6)
    live = WorkloadDescriptor(900.0, 220.0, None)

    def timed(fn) -> np.ndarray:
        for _ in range(20):
            fn()
        out = np.empty(args.calls)
        for i in range(args.calls):
            start = time.perf_counter()
            fn()
            out[i] = time.perf_counter() - start
        return out * 1e3

    ours = timed(lambda: predictor.predict_candidates(caps, batches, live))
    X = predictor.candidate_features(caps, batches, live)
    forest = predictor.forests_["throughput_tps"]
    sk = timed(lambda: (forest.predict(X), predictor.forests_["gpu_power_total_w"].predict(X)))
    print(f"fit (2 forests x 100 trees, {len(profile)} rows): {fit_s * 1e3:.0f} ms")
    print(f"{'variant':<52} {'median ms':>9} {'p99 ms':>7} {'max ms':>7}")
    for name, t in (("predict_candidates(36) [numpy traversal, both targets]", ours),
                    ("sklearn RandomForestRegressor.predict x2 (reference)", sk)):
        print(f"{name:<52} {np.median(t):>9.3f} {np.percentile(t, 99):>7.3f} {t.max():>7.3f}")
    p99 = float(np.percentile(ours, 99))
    print(f"target p99 <= 15 ms: {'met' if p99 <= 15.0 else 'NOT met'} ({p99:.3f} ms)")
    return 0 if p99 <= 15.0 else 1


if __name__ == "__main__":
    sys.exit(main())
