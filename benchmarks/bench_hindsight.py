"""The hindsight oracle's sweep: wall time sequential vs a process pool, and that both give the same table.

Every fixed configuration of the paper's grid (36) runs as the static policy on the same Poisson
stream (half of the node's capacity, target 95 % of it). Prints the wall time per worker count.
A pool pays off only on cores nobody else is using; `pals run --policy hindsight --workers N`.

    PYTHONPATH=src python benchmarks/bench_hindsight.py [--model Llama-2-7B --tp 1] [--duration-s 60]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    from pals.runtime.deployment import Deployment
    from pals.runtime.hindsight import MeetCriteria, hindsight_static_optimum
    from pals.runtime.load import LoadSpec, UniformLengths

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="Llama-2-7B")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--capacity-tps", type=float, default=4640.0,
                        help="the node's saturated throughput at 400 W, batch 64 (Llama-2-7B TP1: ~4,640 tok/s)")
    args = parser.parse_args()
    deployment = Deployment(args.model, tp=args.tp)
    lengths = UniformLengths((600, 1400), (100, 300))
    load = LoadSpec.poisson_for_tps(0.5 * args.capacity_tps, lengths, seed=7)
    print(f"{deployment.describe()}, 36 configurations x {args.duration_s:g} s simulated, {os.cpu_count()} cores")
    tables = {}
    for workers in (1, 2):
        start = time.perf_counter()
        result = hindsight_static_optimum(deployment, load, duration_s=args.duration_s, seed=7, workers=workers,
                                          target_tps=0.475 * args.capacity_tps,
                                          criteria=MeetCriteria(max_qos_violation_pct=10.0))
        tables[workers] = result.rows
        best = result.best
        print(f"workers {workers}: {time.perf_counter() - start:6.1f} s wall; optimum "
              f"{'none' if best is None else f'{best.power_cap_w:g} W / {best.batch_cap} at {best.tokens_per_joule:.4f} tok/J'}")
    print("same table:", tables[1] == tables[2])


if __name__ == "__main__":
    main()
