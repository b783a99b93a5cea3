"""Timing and energy of one (cap, batch) point, independent of torch.

A `Bench` runs the work (the torch implementation is `pals.probe.bench.TorchBench`; tests use a fake); an
`EnergyMeter` reads the GPU through the GPU layer (`GpuBackend.energy_j`, or `power_w` samples where the
energy counter cannot be read). `measure_point` warms each phase up once, then times a window of repeats that
lasts at least `min_window_s`, with an energy reading at each end.
"""

from __future__ import annotations

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


def _window(bench: Bench, meter: EnergyMeter, work: Callable[[], None], min_window_s: float,
            clock: Callable[[], float]) -> tuple[float, float, int]:
    """(seconds, joules, repeats) of as many runs of `work` as fill `min_window_s` (at most MAX_REPEATS).

    The device is synchronised after every run, so the window ends on the run that fills it whatever the first
    run cost (one synchronisation is ~50 us against runs of >= ~10 ms).
    """
    bench.synchronize()
    samples: list[float] = []
    # Time runs from just before the first reading to just before the last: the GPU test double stamps its energy
    # when a reading starts, and an NVML reading takes well under 1 ms against windows of >= min_window_s.
    t0 = clock()
    e0 = meter.energy_j() if meter.uses_counter else 0.0
    if not meter.uses_counter:
        samples.append(meter.power_w())
    repeats = 0
    while True:
        work()
        bench.synchronize()
        repeats += 1
        if not meter.uses_counter:
            samples.append(meter.power_w())
        elapsed_s = clock() - t0
        if elapsed_s >= min_window_s or repeats >= MAX_REPEATS:
            break
    e1 = meter.energy_j() if meter.uses_counter else 0.0
    energy_j = e1 - e0 if meter.uses_counter else sum(samples) / len(samples) * elapsed_s
    return elapsed_s, energy_j, repeats


def measure_point(bench: Bench, meter: EnergyMeter, *, batch: int, cap_w: float, prompt_tokens: int,
                  decode_steps: int, min_window_s: float,
                  clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Prefill and decode of one batch at the cap in force (see the module docstring).

    One untimed run of each phase first (lazy kernel loading, allocator growth); `setup_decode` captures the CUDA
    graph where the bench uses one. `clock` is the time source (tests give the GPU test double's). Raises
    BenchOutOfMemory (the bench released the batch).
    """
    bench.prepare(batch)
    try:
        bench.prefill()  # warm-up: kernels load, the allocator grows; also fills the cache the decode starts from
        prefill_s, prefill_j, prefill_n = _window(bench, meter, bench.prefill, min_window_s, clock)
        bench.setup_decode()
        bench.decode()  # warm-up
        decode_s, decode_j, decode_n = _window(bench, meter, bench.decode, min_window_s, clock)
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
