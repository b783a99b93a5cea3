"""The ground truth of the DELIVERED load: what the dynamic Oracle chooses from (simulated node only).

The simulator generates the load, so the runtime knows it exactly: not only its rate but the very
request stream the run serves (same arrivals, same lengths). For each configuration of the grid
the truth is a static run of that configuration on that stream, from the start of control (after
the same warm-up as the run) to the run's end, read as the loop reads a run (`measure_series`):
per control interval, the output tokens generated, the GPU energy drawn and whether requests
waited. The Oracle (`pals.control.policies.oracle`) asks for every candidate's tokens, GPU energy
and QoS-violating intervals (the summaries' own test, `pals.control.qos.QosWindow`, over the
static run's series) per window of the run (`DeliveredTruth.table`), and plans over them.

Held constant, a candidate's truth is exactly what the hindsight oracle's static run of it on the
same stream measures (`pals.runtime.hindsight`): without a budget a static configuration does not
react to telemetry, and the truth makes the same calls on the node in the same order (so even the
telemetry's random draws match). The Oracle's best constant plan is therefore the hindsight static
optimum, and its varying plans can only do better by the truth. It knows the stream's future: it
is a bound, not a controller.

Caps between grid caps (a budget's bound) are interpolated between the two grid caps around them
(same batch); caps or batches outside the grid are measured on demand (caps rounded down to
`off_grid_step_w`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pals.control.policies import PlanOutcome, TruthTable
from pals.control.qos import QosWindow
from pals.control.types import observe
from pals.core.node import Actuation
from pals.core.paper import CONTROL_INTERVAL_S, PAPER_BATCH_CAPS, PAPER_POWER_CAPS_W
from pals.runtime.deployment import Deployment
from pals.runtime.load import LoadSpec, make_workload
from pals.sim.node import NoiseConfig, SimNode, SimNodeSpec
from pals.sim.workload import Workload


@dataclass(frozen=True)
class SeriesMeasurement:
    """One configuration held over a request stream, interval by interval (as the loop observes it)."""

    interval_tokens: np.ndarray
    """Output tokens generated in each control interval from node time 0 (zero before the start)."""
    interval_gpu_energy_j: np.ndarray
    """GPU energy (all GPUs) drawn in each interval. Units: J."""
    interval_waiting: np.ndarray
    """Requests waiting at the end of each interval."""
    interval_s: float
    """Length of each interval. Units: s."""

    def violations(self, target_tps: float | None, start: int) -> np.ndarray:
        """Per interval from `start` on: whether it violates `target_tps` (the summaries' test)."""
        flags = np.zeros(len(self.interval_tokens), dtype=bool)
        if target_tps is None:
            return flags
        window = QosWindow()
        for k in range(start, len(flags)):
            flags[k] = window.add(float(self.interval_tokens[k]), self.interval_s, int(self.interval_waiting[k]),
                                  target_tps)[1]
        return flags


def measure_series(spec: SimNodeSpec, workload: Workload, cap_w: float, batch: int, *, horizon_s: float,
                   seed: int, start_s: float = 0.0, interval_s: float = CONTROL_INTERVAL_S,
                   noise: NoiseConfig | None = None) -> SeriesMeasurement:
    """Hold (cap, batch) from `start_s` to `horizon_s` on a fresh node serving `workload` (before
    `start_s` at the node's initial configuration, as a run's warm-up is); record each interval.

    Each interval is read as the control loop reads it (`pals.control.types.observe` on the node's
    samples, with the run's telemetry `noise` and `seed`): throughput from the engine's counters,
    requests waiting, GPU energy from the energy counters (exact on the simulator). A static
    configuration does not react to telemetry, so without a budget this is the very series the
    static run of the hindsight oracle observes, and both count QoS violations alike.
    """
    return measure_schedule(spec, workload, [(start_s, cap_w, batch)], horizon_s=horizon_s, seed=seed,
                            interval_s=interval_s, noise=noise)


def measure_schedule(spec: SimNodeSpec, workload: Workload, schedule: Sequence[tuple[float, float, int]], *,
                     horizon_s: float, seed: int, interval_s: float = CONTROL_INTERVAL_S,
                     noise: NoiseConfig | None = None) -> SeriesMeasurement:
    """Like `measure_series`, for a schedule of (from node time, cap, batch), the first entry at the start of control."""
    node = SimNode(spec, workload, seed=seed, noise=noise)
    steps = max(1, int(math.ceil(horizon_s / interval_s - 1e-9)))
    changes = {min(steps - 1, int(round(t_s / interval_s))): (cap_w, batch) for t_s, cap_w, batch in schedule}
    first = min(changes)
    tokens, energy, waiting = np.zeros(steps), np.zeros(steps), np.zeros(steps, dtype=int)
    # The same calls as a run, in the same order (the telemetry's random draws then match too):
    # warm up in one go, then per interval: sample, apply any change, wait.
    node.clock.wait_until(first * interval_s)
    previous = node.sample()
    for k in range(first, steps):
        if k in changes:
            node.apply(Actuation(*changes[k]))
        node.clock.wait_until((k + 1) * interval_s)
        current = node.sample()
        obs = observe(previous, current)
        tokens[k], energy[k], waiting[k] = obs.generated_tokens, obs.gpu_energy_j, obs.requests_waiting
        previous = current
    return SeriesMeasurement(tokens, energy, waiting, interval_s)


def series_from_records(records: Sequence[Mapping[str, Any]], horizon_s: float,
                        interval_s: float = CONTROL_INTERVAL_S) -> SeriesMeasurement:
    """The series of a static run from its decision records (JSON form): what `measure_series` records.

    Each record's sample is the loop's observation of one interval (throughput x interval = tokens,
    GPU power x interval = energy, requests waiting), placed by its node time.
    """
    steps = max(1, int(math.ceil(horizon_s / interval_s - 1e-9)))
    tokens, energy, waiting = np.zeros(steps), np.zeros(steps), np.zeros(steps, dtype=int)
    for record in records:
        sample = record.get("sample")
        if sample is None:
            continue
        k = int(round(float(record["time_s"]) / interval_s)) - 1
        if 0 <= k < steps:
            dt = float(record["interval_s"])
            # The counter's own delta when logged (what observe() counts), else rate x interval.
            logged = sample.get("generated_tokens")
            tokens[k] = float(logged) if logged is not None else float(sample["throughput_tps"]) * dt
            energy[k] = float(sample["gpu_power_w"]) * dt
            waiting[k] = int(sample["requests_waiting"])
    return SeriesMeasurement(tokens, energy, waiting, interval_s)


class DeliveredTruth:
    """Ground truth of each configuration on the run's own request stream (the Oracle's `LoadTruth`).

    Args:
        deployment: the simulated node.
        load: the run's offered load, seed included (the truth replays the same stream).
        horizon_s: node time the run ends at (its warm-up plus its duration). Units: s.
        start_s: node time control starts at (the run's warm-up); the truth's figures and QoS
            windows begin there. Units: s.
        caps_w, batches: the grid (the Oracle's candidates).
        seed: the run's node seed (its telemetry noise), so that the truth reads intervals as the run does.
        noise: the run's telemetry noise (None: the simulator's default, as `run_scenario` uses).
        off_grid_step_w: caps outside the grid are measured rounded down to this step. Units: W.
        interval_s: the control interval the series is recorded at. Units: s.
    """

    def __init__(self, deployment: Deployment, load: LoadSpec, horizon_s: float, *, start_s: float = 0.0,
                 caps_w: Sequence[float] = PAPER_POWER_CAPS_W,
                 batches: Sequence[int] | None = None, seed: int = 0, off_grid_step_w: float = 5.0,
                 interval_s: float = CONTROL_INTERVAL_S, noise: NoiseConfig | None = None) -> None:
        self.spec = deployment.sim_spec()
        self.load = load
        if batches is None:
            batches = [b for b in PAPER_BATCH_CAPS if b <= deployment.batch_cap_max]
        self.caps_ = np.array(sorted(float(c) for c in caps_w))
        self.batches_ = np.array(sorted(int(b) for b in batches))
        self.horizon_s, self.start_s = float(horizon_s), float(start_s)
        self.seed, self.off_grid_step_w, self.interval_s, self.noise = seed, off_grid_step_w, interval_s, noise
        self._series: dict[tuple[float, int], SeriesMeasurement] = {}
        self._flags: dict[tuple[float, int, float | None], np.ndarray] = {}
        self._lock = threading.Lock()
        self.measurements_ = 0
        """How many configurations were measured (each a run over the horizon)."""
        self.evaluations_ = 0
        """How many plans were run to check them (`evaluate`)."""

    def series(self, cap_w: float, batch: int) -> SeriesMeasurement:
        """One configuration held over the stream, measured once and kept."""
        key = (round(float(cap_w), 3), int(batch))
        with self._lock:
            found = self._series.get(key)
        if found is not None:
            return found
        measured = measure_series(self.spec, make_workload(self.load), key[0], key[1], horizon_s=self.horizon_s,
                                  seed=self.seed, start_s=self.start_s, interval_s=self.interval_s, noise=self.noise)
        with self._lock:
            self._series[key] = measured
            self.measurements_ += 1
        return measured

    def add_series(self, cap_w: float, batch: int, series: SeriesMeasurement) -> None:
        """Hand over a configuration's series measured elsewhere: a static run on the same stream, seed
        and warm-up without a budget (`series_from_records`) is the same measurement."""
        with self._lock:
            self._series[(round(float(cap_w), 3), int(batch))] = series

    def _first(self) -> int:
        """Index of the first controlled interval."""
        return int(round(self.start_s / self.interval_s))

    def _arrays(self, cap_w: float, batch: int, target_tps: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens, GPU energy, violation flag) per interval of one measured configuration."""
        series = self.series(cap_w, batch)
        key = (round(float(cap_w), 3), int(batch), target_tps)
        flags = self._flags.get(key)
        if flags is None:
            first = min(self._first(), len(series.interval_tokens) - 1)
            flags = self._flags[key] = series.violations(target_tps, first).astype(float)
        return series.interval_tokens, series.interval_gpu_energy_j, flags

    def _candidate(self, cap_w: float, batch: int, target_tps: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One candidate's per-interval arrays, interpolated between the grid caps around it."""
        caps = self.caps_
        if batch in set(self.batches_.tolist()) and caps[0] <= cap_w <= caps[-1]:
            i = int(np.searchsorted(caps, cap_w - 1e-6))
            if abs(caps[i] - cap_w) < 1e-6:
                return self._arrays(caps[i], batch, target_tps)
            lo, hi = self._arrays(caps[i - 1], batch, target_tps), self._arrays(caps[i], batch, target_tps)
            w = (cap_w - caps[i - 1]) / (caps[i] - caps[i - 1])
            return tuple((1 - w) * a + w * b for a, b in zip(lo, hi))  # type: ignore[return-value]
        step = self.off_grid_step_w
        rounded = max(self.spec.gpu_spec.power_limit_min_w, math.floor(cap_w / step + 1e-9) * step)
        return self._arrays(rounded, batch, target_tps)

    def evaluate(self, schedule: Sequence[tuple[float, float, int]], target_tps: float | None) -> PlanOutcome:
        """Run a schedule of (from node time, cap, batch) on the stream, as `measure_series` does; its totals.

        The Oracle checks a plan that changes configuration this way: the per-window truth assumes
        each configuration was held all along, while a switch carries the queue over.
        """
        series = measure_schedule(self.spec, make_workload(self.load), schedule, horizon_s=self.horizon_s,
                                  seed=self.seed, interval_s=self.interval_s, noise=self.noise)
        first = self._first()
        flags = series.violations(target_tps, first)
        self.evaluations_ += 1
        return PlanOutcome(float(series.interval_tokens[first:].sum()), float(series.interval_gpu_energy_j[first:].sum()),
                           int(flags[first:].sum()), len(flags) - first)

    def table(self, power_cap_w: np.ndarray, batch_cap: np.ndarray, target_tps: float | None,
              window_s: float) -> TruthTable:
        """Each candidate's tokens, GPU energy and violating intervals per window of `window_s` from the
        start of control (the Oracle's query; `pals.control.policies.oracle`)."""
        caps, batches = np.broadcast_arrays(np.asarray(power_cap_w, float).reshape(-1),
                                            np.asarray(batch_cap).reshape(-1))
        n = max(1, int(math.ceil(self.horizon_s / self.interval_s - 1e-9)))
        first = min(self._first(), n - 1)
        per_window = max(1, int(round(window_s / self.interval_s)))
        edges = np.arange(first, n, per_window)
        counts = np.diff(np.append(edges, n))
        columns = [self._candidate(float(c), int(b), target_tps) for c, b in zip(caps, batches)]

        def windows(k: int) -> np.ndarray:
            return np.stack([np.add.reduceat(col[k][first:n], edges - first) for col in columns], axis=1)

        return TruthTable(window_start_s=edges * self.interval_s, window_s=counts * self.interval_s,
                          tokens=windows(0), gpu_energy_j=windows(1), violations=windows(2),
                          intervals=counts, load_label=f"truth of {self.load.label()}")
