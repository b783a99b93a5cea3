"""Dating a vLLM engine's telemetry so tokens and GPU energy cover the same span.

The controller rates tokens and energy between two samples; the token total and tokens per
joule are only right if each sample's token counters and energy counters are read at the same
instant (or carry the true difference as `age_s`). `EngineTimeline.read()` makes one
`EngineReading` per control interval from two sources:

- The engine-state record `PalsScheduler` publishes (`pals.integrations.engine_state`): the
  engine's own output counters (the same token ids `vllm:generation_tokens` counts) and its
  true queues, renewed every ~50 ms while the engine works and at once when it goes idle or
  wakes up, stamped with the host's monotonic clock. The reading is dated at the record's
  instant (*aligned*) with the GPU energy counters interpolated there from the readings
  around it; an idle engine's counters hold, so its reading is dated now. No HTTP round trip
  is on the control path.
- vLLM's /metrics (`pals.node.vllm_metrics`), scraped on a worker thread: the latency
  histograms and request lengths always, and the counters and queues too when no record is
  published (a vLLM started without this PALS's scheduler). Then a scrape that finishes within
  `deadline_s` is *aligned* at its middle; one that does not is bridged with the last engine
  data, aged (`age_s`), and lands in a later reading.

Energy counters are monotonic: interpolating them between two real readings keeps every
interval's energy non-negative and the energy of a run exact (intervals add up to the counter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pals.errors import EngineUnreachable
from pals.node.vllm_metrics import BackgroundScrape, EngineMetrics, MetricsWindow, ScrapeResult, window


@dataclass(frozen=True)
class EngineReading:
    """The engine's side of one sample, with the GPU energy counters read at its instant."""

    time_s: float
    """The instant the counters describe, on the node's monotonic clock. Units: s."""
    energy_j: tuple[float, ...]
    """GPU energy counters at `time_s` (read, or interpolated between readings). Units: J."""
    age_s: float
    """How much older than `time_s` the engine counters are (0 when aligned). Units: s."""
    generated_tokens_total: float
    prompt_tokens_total: float
    requests_finished_total: float
    running: int
    waiting: int
    kv_cache_usage: float | None
    counters_source: str
    """"scheduler" (the engine-state record) or "metrics" (vLLM's /metrics counters)."""
    queues_source: str
    """"scheduler" (the engine-state record) or "gauges" (vLLM's /metrics gauges)."""
    how: str
    """aligned, now (idle engine or unchanged record), late, bridged or stale (see the module doc)."""
    window: MetricsWindow | None
    """Latency histograms and request lengths since the previous new scrape (None without one)."""
    notes: tuple[str, ...] = ()


class _EnergyLog:
    """Recent GPU energy readings, to interpolate the counters to a past instant."""

    def __init__(self) -> None:
        self._readings: list[tuple[float, tuple[float, ...]]] = []

    def add(self, t_s: float, energy_j: tuple[float, ...]) -> None:
        self._readings.append((t_s, energy_j))

    def at(self, t_s: float) -> tuple[float, ...]:
        """The counters at `t_s`: linear between the readings around it, clamped to the ends."""
        before = [r for r in self._readings if r[0] <= t_s]
        after = [r for r in self._readings if r[0] >= t_s]
        if not before or not after:
            return (before[-1] if before else after[0])[1]
        (ta, ea), (tb, eb) = before[-1], after[0]
        frac = 0.0 if tb <= ta else (t_s - ta) / (tb - ta)
        return tuple(a + frac * (b - a) for a, b in zip(ea, eb))

    def keep_from(self, t_s: float) -> None:
        """Forget what no later reading needs: keep the last reading at or before `t_s`, and later ones."""
        older = [i for i, r in enumerate(self._readings) if r[0] <= t_s]
        if older:
            del self._readings[: older[-1]]


class EngineTimeline:
    """Dated engine readings for `VllmNode` (see the module docstring).

    Args:
        scrapes: the background /metrics scraper; `first` its first successful scrape.
        state_reader: the engine-state reader (`pals.integrations.engine_state.StateReader`);
            the counters come from its records when one from a live engine is there at start.
        clock: the node's monotonic clock (`now_s()`), the one the scrapes and records use.
        deadline_s: how long `read()` waits for a scrape when the counters come from /metrics.
        stale_limit_s: how long old engine data is bridged before `read()` raises.
    """

    def __init__(self, scrapes: BackgroundScrape, first: ScrapeResult, state_reader, clock, deadline_s: float,
                 stale_limit_s: float) -> None:
        self.scrapes = scrapes
        self.state_reader = state_reader
        self.clock = clock
        self.deadline_s = float(deadline_s)
        self.stale_limit_s = float(stale_limit_s)
        self.metrics: EngineMetrics = first.metrics
        """The newest scrape used (`pals.runtime.profiling` reads its token count through the node)."""
        self._metrics_time_s = first.mid_s
        self._used_seq = first.seq
        self._window: MetricsWindow | None = None
        self._energy = _EnergyLog()
        self._last_time_s = -float("inf")
        self._last_key = None
        self._state_counter_time_s = clock()
        snapshot = state_reader.read()
        live, _ = state_reader.judge(snapshot)
        self.counters_source = "scheduler" if snapshot is not None and live else "metrics"
        """Where the token and request counters come from for the node's lifetime (one counter
        throughout: switching between two counters mid-run would make a jump, not a rate)."""
        self._last_counters = snapshot
        self.counts = {"aligned": 0, "now": 0, "late": 0, "bridged": 0, "stale": 0}
        """Readings by how they were dated (see `EngineReading.how`)."""

    def read(self, energies: Callable[[], tuple[float, ...]], on_running: Callable[[int], None] | None = None
             ) -> EngineReading:
        """One reading; `energies()` reads the GPU energy counters, `on_running(n)` is told the
        running count first (the simulated GPUs' load follows it).

        Raises:
            EngineUnreachable: no new engine data for `stale_limit_s`.
        """
        snapshot = self.state_reader.read()
        live, why = self.state_reader.judge(snapshot)
        if on_running is not None:
            on_running(snapshot.running if live else self.metrics.requests_running)
        t0_s = self.clock()
        energy0_j = energies()
        self._energy.add(t0_s, energy0_j)
        self.scrapes.start()  # no-op while one is still in flight from an earlier reading
        if self.counters_source == "metrics":
            self.scrapes.wait(self.deadline_s - (self.clock() - t0_s))
        new = self._take_scrape()  # before the closing energy reading, so the scrape ended before it
        self._energy.add(self.clock(), energies())
        if self.counters_source == "scheduler":
            reading = self._from_state(snapshot, live, why, t0_s, energy0_j)
        else:
            reading = self._from_scrape(new, t0_s, energy0_j, live, snapshot, why)
        self.counts[reading.how] += 1
        self._last_time_s = reading.time_s
        self._energy.keep_from(reading.time_s)
        return reading

    def _take_scrape(self) -> ScrapeResult | None:
        """The newest successful scrape not used yet (it becomes the engine metrics), else None."""
        ok = self.scrapes.last_ok
        if ok is None or ok.seq <= self._used_seq:
            self._window = None
            return None
        self._used_seq = ok.seq
        self._window = window(self.metrics, ok.metrics) if ok.metrics.time_s > self.metrics.time_s else None
        self.metrics = ok.metrics
        self._metrics_time_s = ok.mid_s
        return ok

    def _queues(self, live: bool, snapshot, why: str) -> tuple[int, int, float | None, str, list[str]]:
        if live:
            return snapshot.running, snapshot.waiting, snapshot.kv_cache_usage, "scheduler", []
        m = self.metrics
        note = f"engine queues and KV use from vLLM's /metrics gauges (they read 0 in most scrapes under load): {why}"
        return m.requests_running, m.requests_waiting, m.kv_cache_usage, "gauges", [note]

    def _from_state(self, snapshot, live: bool, why: str, t0_s: float, energy0_j) -> EngineReading:
        notes: list[str] = []
        if snapshot is None:
            # A data-parallel engine's record is missing: count on from the last complete one.
            how, time_s, energy_j, age_s = "stale", t0_s, energy0_j, t0_s - self._state_counter_time_s
        else:
            self._last_counters = snapshot
            key = snapshot.key
            if key != self._last_key and not snapshot.idle and snapshot.monotonic_s > self._last_time_s:
                # A new record of a working engine: date the reading at its instant.
                how, time_s, age_s = "aligned", snapshot.monotonic_s, 0.0
                energy_j = self._energy.at(time_s)
            elif live:
                # Idle (its counters hold until work arrives) or renewed within the limit.
                how, time_s, energy_j, age_s = "now", t0_s, energy0_j, 0.0
            else:
                how, time_s, energy_j = "stale", t0_s, energy0_j
                age_s = self.state_reader.age_s(snapshot)
            self._last_key = key
        if how == "stale":
            if age_s > self.stale_limit_s:
                raise EngineUnreachable(f"PalsScheduler's engine-state record: {why}; no engine data for {age_s:.1f} s")
            notes.append(f"engine counters {age_s:.1f} s old: {why}")
        else:
            self._state_counter_time_s = time_s
        running, waiting, kv, queues_source, queue_notes = self._queues(live, snapshot, why)
        last = self._last_counters
        return EngineReading(
            time_s=time_s, energy_j=energy_j, age_s=max(0.0, age_s),
            generated_tokens_total=float(last.generated_tokens_total), prompt_tokens_total=float(last.prompt_tokens_total),
            requests_finished_total=float(last.finished_total), running=running, waiting=waiting, kv_cache_usage=kv,
            counters_source="scheduler", queues_source=queues_source, how=how, window=self._window,
            notes=tuple(notes + queue_notes),
        )

    def _from_scrape(self, new: ScrapeResult | None, t0_s: float, energy0_j, live: bool, snapshot,
                     why: str) -> EngineReading:
        notes: list[str] = []
        if new is not None and new.mid_s > self._last_time_s:
            # Tokens and energy at the same instant: the scrape's middle, energy interpolated
            # between the readings around it (this call's, or an earlier call's for a scrape
            # that finished after that call's deadline).
            how, time_s, energy_j, age_s = "aligned", new.mid_s, self._energy.at(new.mid_s), 0.0
        else:
            # Dated at this call's start, before the scrape it starts: that scrape, however late
            # it finishes, then still lands after this reading and can be aligned.
            time_s, energy_j, age_s = t0_s, energy0_j, max(0.0, t0_s - self._metrics_time_s)
            how = "late" if new is not None else "bridged"
            if new is None:
                notes.append(self._bridge_note(age_s))
        m = self.metrics
        running, waiting, kv, queues_source, queue_notes = self._queues(live, snapshot, why)
        return EngineReading(
            time_s=time_s, energy_j=energy_j, age_s=age_s,
            generated_tokens_total=m.generation_tokens_total, prompt_tokens_total=m.prompt_tokens_total,
            requests_finished_total=m.requests_finished_total, running=running, waiting=waiting, kv_cache_usage=kv,
            counters_source="metrics", queues_source=queues_source, how=how, window=self._window,
            notes=tuple(notes + queue_notes),
        )

    def _bridge_note(self, age_s: float) -> str:
        """Why this reading reuses old engine data; raises once that data is too old."""
        error = self.scrapes.last_error
        recent_error = error is not None and error.seq > self._used_seq
        why = str(error.error) if recent_error else f"no answer within {self.deadline_s:g} s"
        if age_s > self.stale_limit_s:
            raise EngineUnreachable(f"vLLM /metrics: {why}; no engine data for {age_s:.1f} s")
        return f"vLLM /metrics did not answer in time ({why}); engine data {age_s:.1f} s old"
