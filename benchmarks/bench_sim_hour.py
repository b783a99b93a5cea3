"""One simulated hour of a saturated 4 x A100-SXM4-80GB node serving Mixtral-8x7B (TP 4, batch cap 64).

The Azure conv trace (2023, CC-BY) is sped up `--rate-scale` times and looped, so the queue never
empties; a controller-like loop samples the node every 0.5 s of virtual time. Prints wall time,
real-time factor, engine steps per second and peak memory. Targets: >= 1,000x real time, <= 500 MB.
--gpu/--model/--tp/--batch-cap run another deployment (e.g. an H100 at batch cap 1024).

    .venv/bin/python benchmarks/bench_sim_hour.py [--hours 1] [--rate-scale 2.5] [--profile]
    .venv/bin/python benchmarks/bench_sim_hour.py --gpu H100-SXM --model Mistral-7B --tp 1 --batch-cap 1024 --rate-scale 40
"""

from __future__ import annotations

import argparse
import resource
import sys
import time


def run(hours: float, rate_scale: float, interval_s: float, gpu: str = "A100-SXM4-80GB", model: str = "Mixtral-8x7B",
        tp: int = 4, batch_cap: int = 64) -> dict[str, float]:
    from pals.core.node import Actuation
    from pals.sim.node import SimNode, SimNodeSpec
    from pals.sim.workload import TraceWorkload

    spec = SimNodeSpec(model, gpu, num_gpus=4, tp=tp, batch_cap_max=batch_cap)
    workload = TraceWorkload.from_csv("conv", rate_scale=rate_scale, loop=True)
    t0 = time.perf_counter()
    node = SimNode(spec, workload, seed=0, initial=Actuation(power_cap_w=spec.gpu_spec.tdp_w, batch_cap=batch_cap))
    end_s = hours * 3600.0
    k = 0
    running_sum = 0
    while True:
        k += 1
        t = min(k * interval_s, end_s)
        node.clock.wait_until(t)
        running_sum += node.sample().requests_running
        if t >= end_s:
            break
    wall_s = time.perf_counter() - t0
    stats = node.request_stats()
    steps = sum(e.steps_total for e in node.engines)
    return {
        "sim_s": end_s,
        "wall_s": wall_s,
        "realtime_factor": end_s / wall_s,
        "steps": steps,
        "steps_per_wall_s": steps / wall_s,
        "samples": k,
        "mean_running": running_sum / k,
        "throughput_tps": stats.generated_tokens_total / end_s,
        "node_tokens_per_j": stats.generated_tokens_total / node.node_energy_j_total(),
        "gpu_power_mean_w": node.energy_j_total() / end_s / spec.num_gpus,
        "finished": stats.finished,
        "waiting_at_end": sum(e.waiting for e in node.engines),
        "lost": stats.lost,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--rate-scale", type=float, default=2.5,
                        help="conv trace speed-up (about 2 saturates Mixtral TP 4 at batch 64)")
    parser.add_argument("--interval-s", type=float, default=0.5, help="controller sampling period")
    parser.add_argument("--gpu", default="A100-SXM4-80GB")
    parser.add_argument("--model", default="Mixtral-8x7B")
    parser.add_argument("--tp", type=int, default=4)
    parser.add_argument("--batch-cap", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile report")
    args = parser.parse_args(argv)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        out = run(args.hours, args.rate_scale, args.interval_s, args.gpu, args.model, args.tp, args.batch_cap)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    else:
        out = run(args.hours, args.rate_scale, args.interval_s, args.gpu, args.model, args.tp, args.batch_cap)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    for key, value in out.items():
        print(f"{key:>20}: {value:,.3f}" if isinstance(value, float) else f"{key:>20}: {value:,}")
    print(f"{'peak_rss_mb':>20}: {peak_mb:,.1f}")
    ok = out["realtime_factor"] >= 1000.0 and peak_mb <= 500.0
    print("target (>= 1,000x real time, <= 500 MB):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
