"""Timing and energy of one (cap, batch) point, independent of torch.

A `Bench` runs the work (the torch implementation is `pals.probe.bench.TorchBench`; tests use a fake); an
`EnergyMeter` reads the GPU through the GPU layer (`GpuBackend.energy_j`, or `power_w` samples where the
energy counter cannot be read). `measure_point` warms each phase up once (which also tells how many repeats
fill `min_window_s`), then times a window of repeats between two device synchronisations with an energy
reading at each end.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Protocol

from pals.errors import PalsError
from pals.node.gpu_backend import GpuBackend
from pals.probe.rows import Measurement

MAX_REPEATS = 1000
"""Most repeats of one phase in a window (a tiny CPU model could otherwise loop for long)."""


class BenchOutOfMemory(Exception):
    """The batch did not fit in device memory (the bench has freed what it allocated)."""


class Bench(Protocol):
    """The work a probe times: one batch at a time."""

    decode_mode: str
    """'cudagraph' or 'eager' (for the batch prepared last)."""

    def prepare(self, batch: int) -> None:
        """Allocate the KV cache and inputs of `batch` sequences. Raises BenchOutOfMemory."""

    def prefill(self) -> None:
        """Queue one prefill of batch x prompt tokens into the cache (from position 0). Raises BenchOutOfMemory."""

    def setup_decode(self) -> None:
        """One-time work before the decode is timed (capturing its CUDA graph); after a prefill."""

    def decode(self) -> None:
        """Queue `decode_steps` single-token steps from a cache of `prompt` tokens. Raises BenchOutOfMemory."""

    def synchronize(self) -> None:
        """Wait for every queued kernel."""

    def release(self) -> None:
        """Free the batch's cache, inputs and graphs."""


class EnergyMeter:
    """GPU energy between two points in time, through the GPU layer.

    Uses the cumulative energy counter when it can be read; otherwise power samples taken at every repeat
    boundary (each after a synchronisation), integrated over the window.
    """

    def __init__(self, gpus: GpuBackend, index: int, source: str | None = None) -> None:
        self.gpus = gpus
        self.index = index
        if source is None:
            try:
                gpus.energy_j(index)
                source = "nvml-energy"
            except PalsError:
                source = "power-samples"
        self.source = "test-double" if getattr(gpus, "kind", "") == "simulated" else source
        self.uses_counter = source == "nvml-energy"

    def energy_j(self) -> float:
        return self.gpus.energy_j(self.index)

    def power_w(self) -> float:
        return self.gpus.power_w(self.index)


def _window(bench: Bench, meter: EnergyMeter, work: Callable[[], None], repeats: int,
            clock: Callable[[], float]) -> tuple[float, float]:
    """(seconds, joules) of `repeats` runs of `work`, between two synchronisations."""
    bench.synchronize()
    samples: list[float] = []
    # Time runs from just before the first reading to just before the last: the GPU test double stamps its energy
    # when a reading starts, and an NVML reading takes well under 1 ms against windows of >= min_window_s.
    t0 = clock()
    e0 = meter.energy_j() if meter.uses_counter else 0.0
    if not meter.uses_counter:
        samples.append(meter.power_w())
    for _ in range(repeats):
        work()
        if not meter.uses_counter:
            bench.synchronize()
            samples.append(meter.power_w())
    bench.synchronize()
    elapsed_s = clock() - t0
    e1 = meter.energy_j() if meter.uses_counter else 0.0
    energy_j = e1 - e0 if meter.uses_counter else sum(samples) / len(samples) * elapsed_s
    return elapsed_s, energy_j


def _timed_once(bench: Bench, work: Callable[[], None], clock: Callable[[], float]) -> float:
    bench.synchronize()
    t0 = clock()
    work()
    bench.synchronize()
    return clock() - t0


def repeats_for(warm_s: float, min_window_s: float) -> int:
    """Repeats of a phase that took `warm_s` so the window lasts at least `min_window_s` (1..MAX_REPEATS)."""
    if not math.isfinite(warm_s) or warm_s <= 0:
        return MAX_REPEATS
    return max(1, min(MAX_REPEATS, math.ceil(min_window_s / warm_s)))


def measure_point(bench: Bench, meter: EnergyMeter, *, batch: int, cap_w: float, prompt_tokens: int,
                  decode_steps: int, min_window_s: float,
                  clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Prefill and decode of one batch at the cap in force (see the module docstring).

    The first prefill fills the cache the decode starts from; `setup_decode` captures the CUDA graph where the
    bench uses one, before the warm-up decode that sets the repeats. `clock` is the time source (tests give the GPU test double's). Raises
    BenchOutOfMemory (the bench released the batch).
    """
    bench.prepare(batch)
    try:
        warm_prefill_s = _timed_once(bench, bench.prefill, clock)
        prefill_n = repeats_for(warm_prefill_s, min_window_s)
        prefill_s, prefill_j = _window(bench, meter, bench.prefill, prefill_n, clock)
        bench.setup_decode()
        warm_decode_s = _timed_once(bench, bench.decode, clock)
        decode_n = repeats_for(warm_decode_s, min_window_s)
        decode_s, decode_j = _window(bench, meter, bench.decode, decode_n, clock)
        power_read_w = meter.power_w()
        steps = decode_n * decode_steps
        return Measurement(
            power_cap_w=cap_w, batch=batch, prompt_tokens=prompt_tokens, decode_steps=decode_steps,
            prefill_s=prefill_s / prefill_n, prefill_energy_j=prefill_j / prefill_n, prefill_repeats=prefill_n,
            decode_step_s=decode_s / steps, decode_step_energy_j=decode_j / steps, decode_repeats=decode_n,
            decode_mode=bench.decode_mode, power_read_w=power_read_w,
        )
    finally:
        bench.release()
