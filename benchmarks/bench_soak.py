"""Soak: 24 simulated hours of closed-loop control with changes every few minutes and faults.

A 4 x A100-SXM4-80GB node serving Mixtral-8x7B (TP 4: one engine replica, the cheapest deployment
to simulate per second of node time) runs the `pals` policy (or `--policy`) for `--hours`. Every
3-10 minutes (random) the budget (none or 900-1,800 W node), the throughput target (none or
20-90 % of the node's capacity) or the offered load (Poisson, 1-12 requests/s with the Azure
conversation trace's lengths) changes. `FaultyNode` injects every fault kind now and then
(probability `--fault-rate` per sample each) plus a 5-15 s telemetry outage every ~4 hours (the
safe configuration). The decision log is written, rotated and compressed as in production.

Prints: RSS at the start, once the loop's in-memory records are full, the middle and the end, next
to the RSS of the same simulated day without a controller (the simulator alone, in a child
process: it keeps a log entry per request and grows, by design), so the difference is what the
controller holds; and the controller's own retained memory (the loop and its policy, a deep size
walk);
energy exactness (the summary's GPU energy against the sum of the interval energies and against
the simulator's exact counter over the span measured); crashes (exceptions that escaped the
loop: must be 0); the decision log's files and lines; wall time.

    .venv/bin/python benchmarks/bench_soak.py [--hours 24] [--policy pals] [--fault-rate 2e-4] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import gc
import gzip
import math
import random
import sys
import tempfile
import time
from pathlib import Path

CAPACITY_TPS = 2170.0
"""The node's maximum throughput on conversation-trace lengths (as in `pals demo`)."""


def memory_points(end_s: float) -> list[tuple[str, float]]:
    """When memory is measured: at the start, once the loop's in-memory records are full (10,000
    intervals: 1.4 h), at the middle and at the end."""
    points = [("start", 60.0), ("2 h", 7200.0), ("middle", end_s / 2), ("end", end_s)]
    return [(label, at_s) for label, at_s in points if at_s <= end_s]


def step_cache_entries(sim) -> int:
    """Entries in the simulator's step-cost memo (keyed by the power cap among others)."""
    model = sim.step_model
    return len(getattr(model, "_cache", {})) + len(getattr(model, "_clock_cache", {}))


def rss_mb() -> float:
    """Resident set size now (not the peak). Units: MB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def deep_size_mb(root, exclude: tuple) -> float:
    """Bytes reachable from `root` (objects in `exclude` and modules not followed), each small
    object rounded up to its allocator size class. Units: MB."""
    import types

    seen = {id(x) for x in exclude}
    stack, total = [root], 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(obj))
        size = sys.getsizeof(obj)
        # Small objects live in pymalloc's 16-byte size classes (a 24-byte float takes 32).
        total += (size + 15) // 16 * 16 if size <= 512 else size
        stack.extend(gc.get_referents(obj))
    return total / 1e6


class ShiftingPoisson:
    """Poisson arrivals whose rate changes every 3-10 minutes (random, seeded), endless."""

    closed_loop = False

    def __init__(self, prompts, outputs, seed: int) -> None:
        self.prompts, self.outputs, self.seed = prompts, outputs, seed
        self.changes = 0

    @property
    def descriptor(self):
        from pals.core.workload import WorkloadDescriptor

        return WorkloadDescriptor(self.prompts.mean, self.outputs.mean, 6.0, "poisson")

    def requests(self):
        import numpy as np

        from pals.sim.workload import Request

        rng = np.random.default_rng(self.seed)
        t_s, change_s, rate = 0.0, 0.0, 6.0
        while True:
            gaps = rng.exponential(1.0, 1024).tolist()  # unit-rate gaps, scaled by the rate in force
            for gap, p, o in zip(gaps, self.prompts.sample(rng, 1024), self.outputs.sample(rng, 1024)):
                if t_s >= change_s:
                    rate = float(rng.uniform(1.0, 12.0))
                    change_s += float(rng.uniform(180.0, 600.0))
                    self.changes += 1
                t_s += gap / rate
                yield Request(t_s, p, o)


class Recorder:
    """The simulator as a node, remembering its exact GPU energy at the latest sample times."""

    def __init__(self, sim) -> None:
        self.sim = sim
        self.truth_j: collections.OrderedDict[float, float] = collections.OrderedDict()

    def constraints(self):
        return self.sim.constraints()

    def apply(self, actuation) -> None:
        self.sim.apply(actuation)

    def sample(self):
        s = self.sim.sample()
        self.truth_j[s.time_s] = self.sim.energy_j_total()
        while len(self.truth_j) > 64:
            self.truth_j.popitem(last=False)
        return s


def node_spec():
    from pals.sim.node import SimNodeSpec

    return SimNodeSpec("Mixtral-8x7B", "A100-SXM4-80GB", num_gpus=4, tp=4, batch_cap_max=64)


def workload_for(seed: int) -> ShiftingPoisson:
    from pals.sim.workload import LengthDistribution, load_trace

    _, prompts, outputs = load_trace("conv")
    return ShiftingPoisson(LengthDistribution.empirical(prompts), LengthDistribution.empirical(outputs), seed)


def predictor_and_power_model():
    """The simulated node's fitted predictor (profiled once, cached) and its node-power line."""
    from pals.core.power import NodePowerModel

    try:  # after the renovation: pals.runtime builds it
        from pals.runtime.deployment import Deployment
        from pals.runtime.load import LoadSpec
        from pals.runtime.predictors import simulated_predictor as get_predictor
    except ImportError:  # before it: pals.control.scenario did
        from pals.control.scenario import Deployment, LoadSpec, get_predictor
    predictor = get_predictor(Deployment("Mixtral-8x7B"), LoadSpec(saturate=True))
    fitted = getattr(predictor, "syspower_", None)
    return predictor, NodePowerModel() if fitted is None else NodePowerModel(fitted.alpha, fitted.beta_w)


def simulator_alone(args) -> int:
    """The reference child: the same simulated node and load, sampled every 0.5 s, no controller."""
    from pals.sim.node import SimNode

    sim = SimNode(node_spec(), workload_for(args.seed), seed=args.seed)
    points = memory_points(args.hours * 3600.0)
    k = 0
    while points:
        k += 1
        sim.clock.wait_until(0.5 * k)
        sim.sample()
        if 0.5 * k >= points[0][1] - 1e-9:
            print(f"RSS {points.pop(0)[0]}={rss_mb():.3f}", flush=True)
    return 0


def reference_rss(args) -> dict[str, float]:
    """RSS of `simulator_alone` at the memory points, run in a child process (its own RSS)."""
    import subprocess

    command = [sys.executable, __file__, "--sim-only", "--hours", str(args.hours), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    out = {}
    for line in done.stdout.splitlines():
        if line.startswith("RSS "):
            label, value = line[4:].rsplit("=", 1)
            out[label] = float(value)
    return out


def build(args, out_dir: Path):
    from pals.control.budget import PowerBudget
    from pals.control.decision_log import DecisionLog
    from pals.control.loop import ControlLoop
    from pals.control.policies import make_policy
    from pals.core.power import NodePowerModel
    from pals.node.faults import FAULT_KINDS, Fault, FaultyNode
    from pals.sim.node import SimNode

    predictor, power_model = predictor_and_power_model() if args.policy != "baseline" else (None, NodePowerModel())
    workload = workload_for(args.seed)
    sim = SimNode(node_spec(), workload, seed=args.seed)
    end_s = args.hours * 3600.0
    rng = random.Random(args.seed)
    faults = [Fault(kind, probability=args.fault_rate) for kind in FAULT_KINDS]
    outage_s = 3600.0
    while outage_s < end_s:  # a telemetry outage every ~4 h: the safe configuration
        length_s = rng.uniform(5.0, 15.0)
        faults.append(Fault("sample_error", start_s=outage_s, end_s=outage_s + length_s))
        outage_s += rng.uniform(3.0, 5.0) * 3600.0
    recorder = Recorder(sim)
    node = FaultyNode(recorder, faults, seed=args.seed)
    c = sim.constraints()
    policy = make_policy(args.policy, predictor=predictor, power_cap_max_w=c.power_cap_max_w, batch_cap_max=c.batch_cap_max)
    log = DecisionLog(out_dir / "decisions.jsonl") if not args.no_log else None
    loop = ControlLoop(node, policy, sim.clock, budget=PowerBudget(1500.0), decision_log=log, power_model=power_model)
    return loop, node, sim, recorder, workload, end_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--policy", default="pals")
    parser.add_argument("--fault-rate", type=float, default=2e-4, help="chance per sample of each fault kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-log", action="store_true", help="keep the decision log in memory only")
    parser.add_argument("--no-reference", action="store_true", help="skip the simulator-alone RSS reference")
    parser.add_argument("--sim-only", action="store_true", help=argparse.SUPPRESS)  # the reference child
    args = parser.parse_args(argv)
    if args.sim_only:
        return simulator_alone(args)

    import logging

    logging.basicConfig(level=logging.ERROR)  # the loop logs each fault kind; the soak counts them
    from pals.control.budget import PowerBudget, ThroughputTarget

    with tempfile.TemporaryDirectory(prefix="pals-soak-") as tmp:
        out_dir = Path(tmp)
        loop, node, sim, recorder, workload, end_s = build(args, out_dir)
        rng = random.Random(args.seed + 1)
        state = {"next_change_s": rng.uniform(180.0, 600.0), "changes": 0, "gpu_j": [], "first_s": None,
                 "last_rated_s": None, "rss": {}, "controller": {},
                 "cache": {}}

        def on_step(line: dict) -> None:
            t_s = line["t_s"]
            if state["first_s"] is None:
                state["first_s"] = line["time_s"]
                state["truth0_j"] = recorder.truth_j[line["time_s"]]
            sample = line["sample"]
            if sample is not None:
                state["gpu_j"].append(sample["gpu_power_w"] * line["interval_s"])
                state["last_rated_s"] = line["time_s"]
                state["truth1_j"] = recorder.truth_j.get(line["time_s"], math.nan)
            if t_s >= state["next_change_s"]:
                state["next_change_s"] += rng.uniform(180.0, 600.0)
                state["changes"] += 1
                if rng.random() < 0.5:
                    loop.set_budget(None if rng.random() < 0.2 else PowerBudget(rng.uniform(900.0, 1800.0), "node"))
                else:
                    loop.set_target(None if rng.random() < 0.2 else ThroughputTarget(rng.uniform(0.2, 0.9) * CAPACITY_TPS))
            for label, at_s in memory_points(end_s):
                if label not in state["rss"] and t_s >= at_s - 1e-9:
                    state["rss"][label] = rss_mb()
                    state["controller"][label] = deep_size_mb(loop, exclude=(node, sim, recorder, loop.clock))
                    state["cache"][label] = step_cache_entries(sim)

        if not args.no_reference:
            state["reference"] = reference_rss(args)
        crashes = 0
        started = time.perf_counter()
        while sim.now_s < end_s - 1e-9:
            try:
                loop.run(duration_s=end_s - sim.now_s, on_step=on_step)
            except Exception as error:  # counted: the soak's verdict
                crashes += 1
                print(f"CRASH at {sim.now_s:.1f} s: {type(error).__name__}: {error}")
                sim.clock.wait_until(sim.now_s + loop.interval_s)
        loop.close()
        wall_s = time.perf_counter() - started
        report(args, loop, node, sim, workload, state, crashes, wall_s, out_dir)
    return 0 if crashes == 0 else 1


def report(args, loop, node, sim, workload, state, crashes, wall_s, out_dir: Path) -> None:
    from pals.control.decision_log import DecisionLog

    s = loop.summary()
    summed_j = math.fsum(state["gpu_j"])
    truth_j = state["truth1_j"] - state["truth0_j"]
    energy_faults = sum(node.injected[k] for k in ("nan_energy", "energy_reset", "energy_jump", "frozen_energy"))
    stats = sim.request_stats()
    print(f"soak: {args.hours:g} h simulated of Mixtral-8x7B on 4x A100 (TP4), policy {args.policy}, "
          f"seed {args.seed}, fault rate {args.fault_rate:g}/sample/kind")
    print(f"  wall time            {wall_s:.1f} s ({args.hours * 3600 / wall_s:.0f}x real time)")
    print(f"  intervals            {s['intervals']} rated of {loop.interval_index}; summary covers {s['duration_s']:.1f} s")
    print(f"  changes              {state['changes']} budget/target, {workload.changes} offered-load; "
          f"{loop.config_changes} configuration changes")
    print(f"  faults injected      {sum(node.injected.values())}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(node.injected.items())))
    health = loop.health_json()
    print("  loop health          " + ", ".join(f"{k} {v}" for k, v in health.items() if k not in ("last_error",)))
    print(f"  crashes              {crashes}")
    labels = [label for label, _ in memory_points(args.hours * 3600.0)]
    reference = state.get("reference", {})
    difference = {label: state["rss"][label] - reference[label] for label in labels
                  if label in state["rss"] and label in reference}
    for name, figures, note in (
        ("RSS", state["rss"], "this process: simulator, controller, faults"),
        ("RSS, no controller", reference, f"the simulator alone, same day; {stats.submitted} requests by the end"),
        ("RSS difference", difference, "what the controller adds"),
        ("controller", state["controller"], f"retained: the loop, its policy, {len(loop.log.records())} records in memory"),
    ):
        row = ", ".join(f"{label} {figures.get(label, math.nan):.1f}" for label in labels)
        print(f"  {name + ' (MB)':25s}{row}  ({note})")
    row = ", ".join(f"{label} {state['cache'].get(label, 0)}" for label in labels)
    print(f"  simulator step cache     {row}  (entries; each new cap the controller sets adds more; "
          "cleared at 500,000: the RSS difference's growth)")
    print(f"  GPU energy (J)       summary {s['gpu_energy_j']:.1f}; sum of intervals {summed_j:.1f} "
          f"(rel diff {abs(s['gpu_energy_j'] - summed_j) / summed_j:.1e}); simulator {truth_j:.1f} "
          f"(rel diff {abs(s['gpu_energy_j'] - truth_j) / truth_j:.1e}; {energy_faults} energy-counter faults "
          "repaired from power readings)")
    print(f"  node energy (J)      summary {s['energy_j']:.1f}; tokens/J {s['tokens_per_joule']:.3f}; "
          f"throughput {s['throughput_tps']:.0f} tok/s; budget overshoot {s['budget_overshoot_pct']:.2f} % of budget intervals")
    if not args.no_log:
        files = DecisionLog.files(out_dir / "decisions.jsonl")
        lines = 0
        for file in files:
            opener = gzip.open if file.name.endswith(".gz") else open
            with opener(file, "rb") as handle:
                lines += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        sizes = ", ".join(f"{f.name} {f.stat().st_size / 1e6:.1f}" for f in files)
        print(f"  decision log         {len(files)} files ({size_mb:.0f} MB on disk: {sizes}), {lines} lines "
              f"for {loop.interval_index} intervals; {loop.log.lines_lost} lost")


if __name__ == "__main__":
    sys.exit(main())
