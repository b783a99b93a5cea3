"""The real node: a vLLM server plus the host's GPUs, behind the `Node` protocol.

- Engine side: the engine's output counters and its true running and waiting
  queues and KV-cache use from the record `PalsScheduler` publishes every ~50 ms
  (`pals.integrations.engine_state`); latency histograms and request lengths
  from vLLM's /metrics (`pals.node.vllm_metrics`), scraped in the background;
  /metrics' counters and gauges stand in when no record is published (vLLM
  started without this PALS's scheduler), the gauges also while the record is
  stale. `pals.node.vllm_timeline` dates each reading so tokens and GPU energy
  cover the same span, and never lets a slow /metrics stall the control loop.
  The batch cap goes through the cap channel to `PalsScheduler`
  (`pals.integrations.cap_channel`), whose applied report is read back.
- GPU side: `pals.node.gpu.GpuBackend` (Zeus, raw NVML, or the simulated GPU
  TEST DOUBLE on hosts without a GPU), with every power-limit write going
  through `PowerLimitGuard`, so the original limits come back on `close()`,
  on exit and through `pals restore`.

With the simulated GPU test double, its load follows the engine: utilisation
is set from the running-request count on each sample, so GPU power rises with
the batch and is clipped by the cap, as the simulator's physics say. Those
watts are simulated and the samples say so in `notes`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from pals.core.clock import WallClock
from pals.core.node import Actuation, Constraints, Sample
from pals.errors import ConfigError, EngineUnreachable
from pals.node.vllm_metrics import BackgroundScrape, EngineMetrics, MetricsScraper, ScrapeResult
from pals.node.vllm_timeline import EngineTimeline

SIMULATED_GPU_NOTE = "GPU power and energy come from simulated GPUs (test double), not hardware"
GAUGE_FALLBACK_NOTE = "engine queues and KV use from vLLM's /metrics gauges"
"""The start of the note a sample carries when the scheduler's engine-state record is not in use."""


@dataclass(frozen=True)
class BatchCapState:
    """What the node knows about the batch cap."""

    requested: int | None
    """Last cap written to the channel (None: not written by this node)."""
    applied: int | None
    """Target cap the scheduler last reported applying."""
    effective: int | None
    """Limit the scheduler set on its last step (above `applied` while draining)."""
    applied_seq: int
    requested_seq: int


class VllmNode:
    """A vLLM server and its GPUs as one `Node`.

    Args:
        url: vLLM's base URL, e.g. http://127.0.0.1:8000.
        gpus: the host's GPUs (`pals.node.gpu.open_gpus(...)`).
        cap_channel_path: the file `PalsScheduler` polls ($PALS_CAP_CHANNEL of the server); its
            engine-state record is `<cap_channel_path>.state`.
        batch_cap_max: the server's --max-num-seqs; None reads it from the
            scheduler's applied report (the scheduler writes one at start-up).
        guard: the `PowerLimitGuard` for `gpus`; None makes one (signal handlers
            off: the caller owns SIGINT/SIGTERM; restore at exit stays on).
        model_name: for constraints; default: the model_name label on /metrics.
        tp: tensor-parallel degree of the engine.
        scrape_timeout_s: HTTP timeout of one /metrics request (it runs in the background).
        scrape_deadline_s: without an engine-state record: how long `sample()` waits for a
            scrape before it bridges with the last engine data; keep it well under the control
            interval. With one, `sample()` never waits for /metrics.
        stale_limit_s: how long old engine data (failed or slow scrapes, a record not renewed)
            is bridged, marked by its age, before `sample()` gives up.
        state_max_age_s: a busy engine's engine-state record older than this is stale: its queues
            give way to the gauges, and its counters are marked by their age. A record is not
            renewed while the engine runs one step, and nothing it holds can change during that
            step (new requests join the queue between steps), so only a stall of many seconds
            makes it stale.

    Raises:
        EngineUnreachable: /metrics cannot be read or lacks vLLM's families.
        ConfigError: the batch-cap channel has no report and no batch_cap_max was given.
    """

    def __init__(
        self,
        url: str,
        gpus,
        cap_channel_path: str | os.PathLike,
        *,
        batch_cap_max: int | None = None,
        guard=None,
        model_name: str | None = None,
        tp: int = 1,
        scrape_timeout_s: float = 10.0,
        scrape_deadline_s: float = 0.25,
        stale_limit_s: float = 15.0,
        state_max_age_s: float = 10.0,
    ) -> None:
        from pals.integrations.cap_channel import CapWriter
        from pals.integrations.engine_state import StateReader
        from pals.node.hwstate import PowerLimitGuard

        if not 0 < scrape_deadline_s <= scrape_timeout_s:
            raise ConfigError(f"scrape_deadline_s must be within (0, scrape_timeout_s], got {scrape_deadline_s}")
        self.url = url.rstrip("/")
        self.scraper = MetricsScraper(self.url, timeout_s=scrape_timeout_s)
        self.clock = WallClock()
        self._scrapes = BackgroundScrape(self.scraper, clock=self.clock.now_s)
        self.scrape_deadline_s = float(scrape_deadline_s)
        self.stale_limit_s = float(stale_limit_s)
        # Fails early, with one clear line, if this is not vLLM.
        first = self._first_scrape(scrape_timeout_s)
        self.gpus = gpus
        self.guard = guard if guard is not None else PowerLimitGuard(gpus, handle_signals=False)
        self.writer = CapWriter(cap_channel_path)
        self.state_reader = StateReader(cap_channel_path, max_age_s=state_max_age_s)
        if batch_cap_max is None:
            applied = self.writer.read_applied()
            if applied is None or applied.max_cap < 1:
                raise ConfigError(
                    f"no report from PalsScheduler in {self.writer.applied_path}: start vLLM with "
                    "--scheduler-cls pals.integrations.vllm_scheduler.PalsScheduler and "
                    f"PALS_CAP_CHANNEL={self.writer.path} (as `pals serve` does), or pass batch_cap_max"
                )
            batch_cap_max = applied.max_cap
        self.batch_cap_max = int(batch_cap_max)
        self.tp = int(tp)
        self._simulated = getattr(gpus, "kind", None) == "simulated"
        self._model_name = model_name or (first.metrics.model_names[0] if first.metrics.model_names else "unknown")
        self._constraints = self._build_constraints()
        self.timeline = EngineTimeline(self._scrapes, first, self.state_reader, self.clock.now_s,
                                       deadline_s=scrape_deadline_s, stale_limit_s=stale_limit_s)
        self._last_reading = None
        self._requested_cap: int | None = None
        self._closed = False

    def _first_scrape(self, timeout_s: float) -> ScrapeResult:
        self._scrapes.start()
        self._scrapes.wait(timeout_s + 5.0)
        if self._scrapes.last_ok is None:
            error = self._scrapes.last_error
            raise error.error if error is not None else EngineUnreachable(
                f"{self.scraper.metrics_url} did not answer within {timeout_s:g} s"
            )
        return self._scrapes.last_ok

    # -- Node ----------------------------------------------------------------------------

    def _build_constraints(self) -> Constraints:
        gpus = self.gpus
        lo_w, hi_w = gpus.power_limit_range_w(0)
        return Constraints(
            num_gpus=gpus.count(),
            power_cap_min_w=lo_w,
            power_cap_max_w=hi_w,
            batch_cap_max=self.batch_cap_max,
            power_cap_settable=gpus.can_set_power_limit(),
            tp=self.tp,
            gpu_name=gpus.name(0),
            model_name=self._model_name,
        )

    def constraints(self) -> Constraints:
        return self._constraints

    def batch_cap_state(self) -> BatchCapState:
        applied = self.writer.read_applied()
        return BatchCapState(
            requested=self._requested_cap,
            applied=None if applied is None else applied.cap,
            effective=None if applied is None else applied.effective_cap,
            applied_seq=0 if applied is None else applied.seq,
            requested_seq=self.writer.last_seq,
        )

    def _energies_j(self) -> tuple[float, ...]:
        return tuple(self.gpus.energy_j(i) for i in range(self.gpus.count()))

    @property
    def _previous(self) -> EngineMetrics:
        """The newest /metrics scrape in use (`pals.runtime.profiling` reads its token count)."""
        return self.timeline.metrics

    def sample(self) -> Sample:
        feed = self._feed_simulated_gpus if self._simulated else None
        reading = self.timeline.read(self._energies_j, on_running=feed)
        self._last_reading = reading
        n = self.gpus.count()
        power_w = tuple(self.gpus.power_w(i) for i in range(n))
        caps_w = tuple(self.gpus.get_power_limit_w(i) for i in range(n))
        notes = list(reading.notes)
        state = self.batch_cap_state()
        batch_cap = state.applied if state.applied is not None else (state.requested or self.batch_cap_max)
        if self._simulated:
            notes.append(SIMULATED_GPU_NOTE)
        if not self._constraints.power_cap_settable:
            notes.append("power caps not settable: batch-only control")
        if state.requested_seq > state.applied_seq:
            notes.append(f"batch cap {state.requested} written, not yet applied by the engine")
        win = reading.window
        return Sample(
            time_s=reading.time_s,
            gpu_power_w=power_w,
            gpu_energy_j_total=reading.energy_j,
            gpu_power_cap_w=caps_w,
            batch_cap=int(batch_cap),
            generated_tokens_total=reading.generated_tokens_total,
            prompt_tokens_total=reading.prompt_tokens_total,
            requests_running=reading.running,
            requests_waiting=reading.waiting,
            requests_finished_total=int(reading.requests_finished_total),
            kv_cache_usage=reading.kv_cache_usage,
            ttft=None if win is None else win.ttft,
            tpot=None if win is None else (win.tpot or win.itl),
            mean_prompt_tokens=None if win is None else win.mean_prompt_tokens,
            mean_output_tokens=None if win is None else win.mean_output_tokens,
            age_s=reading.age_s,
            notes=tuple(notes),
        )

    def status(self) -> dict:
        """Where the node's data comes from now (JSON-ready): counter and queue sources, how the
        readings were dated, scrape timing and the batch cap."""
        reading = self._last_reading
        cap = self.batch_cap_state()
        last_ok = self._scrapes.last_ok
        return {
            "counters_source": self.timeline.counters_source,
            "queues_source": None if reading is None else reading.queues_source,
            "readings": dict(self.timeline.counts),
            "engine_data_age_s": None if reading is None else round(reading.age_s, 3),
            "scrape_deadline_s": self.scrape_deadline_s,
            "last_scrape_s": None if last_ok is None else round(last_ok.end_s - last_ok.start_s, 4),
            "scrape_in_flight": self._scrapes.in_flight,
            "batch_cap": {"requested": cap.requested, "applied": cap.applied, "effective": cap.effective},
        }

    def apply(self, actuation: Actuation) -> None:
        if self._closed:
            raise ConfigError("this VllmNode is closed")
        self._constraints.check(actuation)
        if actuation.power_cap_w is not None and self._constraints.power_cap_settable:
            target_w = float(actuation.power_cap_w)
            if any(self.gpus.get_power_limit_w(i) != target_w for i in range(self.gpus.count())):
                self.guard.set_all_power_limits_w(target_w)
        if actuation.batch_cap is not None and actuation.batch_cap != self._requested_cap:
            self.writer.write(int(actuation.batch_cap))
            self._requested_cap = int(actuation.batch_cap)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Put the batch cap back to the maximum and restore the GPUs' original limits."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._requested_cap is not None and self._requested_cap != self.batch_cap_max:
                self.writer.write(self.batch_cap_max)
                self._requested_cap = self.batch_cap_max
        finally:
            self.guard.close()

    def wait_applied(self, timeout_s: float = 5.0, poll_s: float = 0.01) -> bool:
        """Wait until the scheduler reports the last written cap (True) or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.batch_cap_state()
            if state.applied_seq >= state.requested_seq:
                return True
            time.sleep(poll_s)
        return False

    def _feed_simulated_gpus(self, running: int) -> None:
        # The test double's draw follows the engine's load: idle with nothing
        # running, rising with the running batch (concave, as measured GPU power
        # curves are) up to full draw at max_num_seqs.
        share = min(1.0, running / max(1, self.batch_cap_max))
        utilisation = 0.0 if running == 0 else 0.35 + 0.65 * share**0.5
        self.gpus.set_utilisation(min(1.0, utilisation))


def default_channel_path(port: int) -> str:
    """Where `pals serve` puts the cap channel of a server on `port` (so `pals profile` finds it)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join("/tmp", f"pals-{os.getuid()}")
    return os.path.join(base, f"pals-cap-{port}")


def channel_path_for(url: str, explicit: str | None = None) -> str:
    """The cap channel of the server at `url`: explicit, $PALS_CAP_CHANNEL, or pals serve's default."""
    from urllib.parse import urlsplit

    from pals.integrations.cap_channel import ENV_VAR

    if explicit:
        return explicit
    if os.environ.get(ENV_VAR):
        return os.environ[ENV_VAR]
    try:
        port = urlsplit(url).port or 80
    except ValueError:
        raise ConfigError(f"vLLM URL {url!r} is not a valid URL; use http://HOST:PORT") from None
    return default_channel_path(port)


def open_gpu_backend(
    kind: str, sim_gpu: str | None = None, sim_gpus: int = 1, sim_state: str | None = None, settable: bool = True
):
    """Open GPUs; `kind` "simulated" builds the test double from a simulator GPU preset.

    `sim_state` (the double's driver-state file) and `settable` (False plays a
    process without permission to set limits) apply to the test double only.
    """
    from pals.node.gpu import open_gpus

    if kind == "simulated":
        kwargs = {"sim_gpus": sim_gpus, "driver_state_path": sim_state, "settable": settable}
        if sim_gpu:
            kwargs["sim_gpu"] = sim_gpu
        return open_gpus("simulated", **kwargs)
    return open_gpus(kind)
