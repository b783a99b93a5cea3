"""The probe's loop: every planned power cap, every batch that fits, within the time budget.

Caps are written only through `pals.node.hwstate.PowerLimitGuard` (it saves the original limit before the
first write and restores it on exit, on terminating signals and, after a crash, through `pals restore`). A
cap the driver refuses is skipped with one note; when the first write is refused (no permission in a
container, say) the probe measures at the limit in force instead, and says so. A batch that runs out of
device memory is noted, and larger batches are not tried. Every note goes to the user once and into the
host description.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pals.errors import PalsError
from pals.node.gpu_backend import GpuBackend
from pals.node.hwstate import PowerLimitGuard
from pals.probe.measure import Bench, BenchOutOfMemory, EnergyMeter, measure_point
from pals.probe.plan import CapPlan, ProbeSettings
from pals.probe.rows import Measurement

READBACK_TOLERANCE_W = 0.5


@dataclass
class ProbeRun:
    """What a run measured and what it had to say."""

    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    caps_measured_w: list[float] = field(default_factory=list)
    """Caps at which at least one batch was measured. Units: W."""
    cap_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time spent at each cap (key: '700 W'). Units: s."""
    restored_to_w: float | None = None
    """The limit read back after the guard restored it (None: no cap was written). Units: W."""


class _Loop:
    """One run's state: the budget clock, the notes, the batches still worth trying."""

    def __init__(self, settings: ProbeSettings, gpus: GpuBackend, bench: Bench, meter: EnergyMeter,
                 batches: tuple[int, ...], say: Callable[[str], None], progress,
                 on_measurement: Callable[[list[Measurement]], None] | None, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.gpus = gpus
        self.bench = bench
        self.meter = meter
        self.batches = batches
        self.say = say
        self.progress = progress
        self.on_measurement = on_measurement
        self.clock = clock
        self.run = ProbeRun()
        self.start_s = clock()
        self.oom_batch: int | None = None
        self.budget_hit = False

    def note(self, text: str) -> None:
        self.run.notes.append(text)
        self.say(f"note: {text}")

    def over_budget(self) -> bool:
        budget = self.settings.time_budget_s
        return budget is not None and self.clock() - self.start_s > budget

    def measure_cap(self, cap_w: float) -> None:
        """Every batch at the cap in force (the guard has written it)."""
        t0 = self.clock()
        index = self.settings.gpu_index
        for batch in self.batches:
            self.progress.set_postfix_str(f"{cap_w:g} W batch {batch}")
            if self.oom_batch is not None and batch >= self.oom_batch:
                self.progress.update(1)
                continue
            if self.over_budget():
                if not self.budget_hit:
                    self.note(f"time budget of {self.settings.time_budget_s:g} s spent: stopped before {cap_w:g} W "
                              f"batch {batch} (the rest of the plan is not measured)")
                self.budget_hit = True
                self.progress.update(1)
                continue
            try:
                m = measure_point(self.bench, self.meter, batch=batch, cap_w=self.gpus.get_power_limit_w(index),
                                  prompt_tokens=self.settings.prompt_tokens, decode_steps=self.settings.decode_steps,
                                  min_window_s=self.settings.min_window_s, clock=self.clock)
                self.run.measurements.append(m)
                if not self.run.caps_measured_w or self.run.caps_measured_w[-1] != m.power_cap_w:
                    self.run.caps_measured_w.append(m.power_cap_w)
                if self.on_measurement is not None:
                    self.on_measurement(self.run.measurements)
            except BenchOutOfMemory as error:
                self.oom_batch = batch
                self.note(f"batch {batch} at {cap_w:g} W ran out of device memory ({error}); larger batches skipped")
            self.progress.update(1)
        self.run.cap_seconds[f"{cap_w:g} W"] = round(self.clock() - t0, 2)


def run_probe(settings: ProbeSettings, gpus: GpuBackend, bench: Bench, plan: CapPlan, batches: tuple[int, ...], *,
              say: Callable[[str], None] = print, progress_bar: bool = True, state_path: str | Path | None = None,
              guard_factory: Callable[..., PowerLimitGuard] = PowerLimitGuard,
              meter: EnergyMeter | None = None,
              on_measurement: Callable[[list[Measurement]], None] | None = None,
              clock: Callable[[], float] = time.perf_counter) -> ProbeRun:
    """Measure every (cap, batch) of the plan; restores the limit before returning (or raising).

    Args:
        settings: the run's flags.
        gpus: the GPU layer's backend (power, energy, limits).
        bench: the work (torch, or a test fake).
        plan: the caps (`pals.probe.plan.plan_caps`).
        batches: the batches that fit in memory (`batches_that_fit`).
        say: where notes go (one line each).
        progress_bar: show a tqdm bar on stderr.
        state_path: the guard's saved-limits file (default: PALS's state dir).
        guard_factory: PowerLimitGuard (tests may wrap it).
        meter: the energy meter (default: counter where readable, else power samples).
        on_measurement: called with every measurement so far after each one (the CLI rewrites the CSV, so a
            run stopped by a timeout still leaves what it measured).
        clock: time source of the windows and the budget (tests give the GPU test double's clock).

    Raises:
        ConfigError: another PALS process holds the GPU (nothing was written).
        ActuationError: the original limit could not be restored (`pals restore` can, later).
    """
    from tqdm import tqdm

    meter = meter or EnergyMeter(gpus, settings.gpu_index)
    index = settings.gpu_index
    with tqdm(total=len(plan.caps_w) * len(batches), desc="pals probe", unit="point", disable=not progress_bar,
              dynamic_ncols=True) as progress:
        loop = _Loop(settings, gpus, bench, meter, batches, say, progress, on_measurement, clock)
        if plan.note:
            loop.note(plan.note)
        if not plan.writes:
            loop.measure_cap(plan.caps_w[0])
            return loop.run
        # The guard restores on leaving the block, also when an error unwinds (reported, not masking it).
        with guard_factory(gpus, state_path, gpu_indices=[index]) as guard:
            for position, cap_w in enumerate(plan.caps_w):
                if loop.over_budget():
                    loop.measure_cap(cap_w)  # records the skip in the notes and the bar
                    continue
                try:
                    guard.set_power_limit_w(index, cap_w)
                except PalsError as error:
                    if position == 0:
                        now_w = gpus.get_power_limit_w(index)
                        loop.note(f"could not set a power cap ({error}): measuring at the current limit {now_w:g} W "
                                  "only")
                        progress.total = len(batches)
                        progress.refresh()
                        loop.measure_cap(now_w)
                        break
                    loop.note(f"could not set {cap_w:g} W ({error}): that cap is skipped")
                    progress.update(len(batches))
                    continue
                time.sleep(settings.settle_s)
                loop.measure_cap(cap_w)
        loop.run.restored_to_w = gpus.get_power_limit_w(index)
        return loop.run
