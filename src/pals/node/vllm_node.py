"""The real node: a vLLM server plus the host's GPUs, behind the `Node` protocol.

- Engine side: token counters and latency histograms from vLLM's /metrics
  (`pals.node.vllm_metrics`); the running and waiting queues and KV-cache use from
  the record `PalsScheduler` publishes every step (`pals.integrations.engine_state`),
  falling back to vLLM's gauges when that record is missing or stale (the gauges
  read 0 in most scrapes of a saturated server); the batch cap through the cap
  channel to `PalsScheduler` (`pals.integrations.cap_channel`), whose applied
  report is read back.
- GPU side: `pals.node.gpu.GpuBackend` (Zeus, raw NVML, or the simulated GPU
  TEST DOUBLE on hosts without a GPU), with every power-limit write going
  through `PowerLimitGuard`, so the original limits come back on `close()`,
  on exit and through `pals restore`.

Timing. A scrape runs on a worker thread and `sample()` waits for it at most
`scrape_deadline_s`, so a slow /metrics never stalls the control loop. When the
scrape finishes in time, the sample is *aligned*: its `time_s` is the middle of
the scrape (when vLLM read its counters) and the GPU energy counters, read just
before and just after, are interpolated to that instant, so tokens and energy
cover exactly the same span (`age_s` 0) and the controller's token total is
vLLM's counter. When it does not, the sample is taken now and the engine data is
the last scrape's, `age_s` old (bridged; the scrape finishes in the background
and serves the next sample). After `stale_limit_s` without an answer, `sample()`
raises.

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
from pals.node.vllm_metrics import BackgroundScrape, EngineMetrics, MetricsScraper, ScrapeResult, window

SIMULATED_GPU_NOTE = "GPU power and energy come from simulated GPUs (test double), not hardware"
GAUGE_FALLBACK_NOTE = "engine queues and KV use from vLLM's /metrics gauges (often 0 under load)"
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


@dataclass(frozen=True)
class _Queues:
    running: int
    waiting: int
    kv_cache_usage: float | None
    source: str
    """"scheduler" (the engine-state record) or "gauges" (vLLM's /metrics)."""
    detail: str


class _EnergyLog:
    """The GPU energy counters read around recent scrapes, to interpolate them to a scrape's middle."""

    def __init__(self) -> None:
        self._readings: list[tuple[float, tuple[float, ...]]] = []

    def add(self, t_s: float, energy_j: tuple[float, ...]) -> None:
        self._readings.append((t_s, energy_j))

    def at(self, t_s: float) -> tuple[float, ...]:
        """The counters at `t_s`, linear between the readings around it (clamped to the ends)."""
        readings = self._readings
        before = [r for r in readings if r[0] <= t_s]
        after = [r for r in readings if r[0] >= t_s]
        if not before or not after:
            return (before or after)[-1 if before else 0][1]
        (ta, ea), (tb, eb) = before[-1], after[0]
        frac = 0.0 if tb <= ta else (t_s - ta) / (tb - ta)
        return tuple(a + frac * (b - a) for a, b in zip(ea, eb))

    def keep_from(self, t_s: float) -> None:
        """Forget readings no later sample needs: keep the last one at or before `t_s`, and later ones."""
        older = [i for i, r in enumerate(self._readings) if r[0] <= t_s]
        if older:
            del self._readings[: older[-1]]


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
        scrape_deadline_s: how long `sample()` waits for a scrape before it bridges with the
            last engine data; keep it well under the control interval.
        stale_limit_s: how long failed or slow scrapes are bridged with the last good engine
            metrics (marked by their age) before `sample()` gives up.
        state_max_age_s: a busy engine's engine-state record older than this is not used.

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
        state_max_age_s: float = 2.0,
    ) -> None:
        from pals.integrations.cap_channel import CapWriter
        from pals.integrations.engine_state import StateReader, state_path_for
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
        self.state_reader = StateReader(state_path_for(cap_channel_path), max_age_s=state_max_age_s)
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
        self._previous: EngineMetrics = first.metrics
        """The engine metrics of the last sample (`pals.runtime.profiling` reads its token count)."""
        self._counter_time_s = first.mid_s
        self._used_seq = first.seq
        self._last_time_s = -float("inf")
        self._window = None
        self._energy_log = _EnergyLog()
        self._queues: _Queues | None = None
        self.counts = {"aligned": 0, "late": 0, "bridged": 0}
        """Samples by how their engine data came: aligned (a scrape in time), late (a scrape that
        finished after an earlier deadline), bridged (no new scrape: the last data, aged)."""
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

    def sample(self) -> Sample:
        state, state_why = self.state_reader.current()
        if self._simulated:
            self._feed_simulated_gpus(state.running if state is not None else self._previous.requests_running)
        t0_s = self.clock.now_s()
        energy0_j = self._energies_j()
        self._energy_log.add(t0_s, energy0_j)
        self._scrapes.start()  # no-op while one is still in flight from an earlier sample
        self._scrapes.wait(self.scrape_deadline_s - (self.clock.now_s() - t0_s))
        new = self._new_scrape()  # before the closing energy reading, so the scrape ended before it
        self._energy_log.add(self.clock.now_s(), self._energies_j())
        n = self.gpus.count()
        power_w = tuple(self.gpus.power_w(i) for i in range(n))
        caps_w = tuple(self.gpus.get_power_limit_w(i) for i in range(n))
        notes: list[str] = []
        if new is not None and new.mid_s > self._last_time_s:
            # Tokens and energy at the same instant: the scrape's middle, energy interpolated
            # between the readings around it (this call's, or an earlier call's for a scrape
            # that finished after that call's deadline).
            self.counts["aligned"] += 1
            time_s, energy_j, age_s = new.mid_s, self._energy_log.at(new.mid_s), 0.0
        else:
            # Dated at this call's start, before the scrape it starts: that scrape, however late
            # it finishes, then still lands after this sample and can be aligned.
            time_s, energy_j, age_s = t0_s, energy0_j, max(0.0, t0_s - self._counter_time_s)
            if new is not None:
                self.counts["late"] += 1  # ran across an earlier sample: placed now, with its age
            else:
                self.counts["bridged"] += 1
                notes.append(self._bridge_note(age_s))
        self._energy_log.keep_from(time_s)
        self._last_time_s = time_s
        metrics = self._previous
        win = self._window
        queues = self._pick_queues(state, state_why, metrics)
        if queues.source != "scheduler":
            notes.append(f"{GAUGE_FALLBACK_NOTE}: {queues.detail}")
        state_cap = self.batch_cap_state()
        batch_cap = state_cap.applied if state_cap.applied is not None else (state_cap.requested or self.batch_cap_max)
        if self._simulated:
            notes.append(SIMULATED_GPU_NOTE)
        if not self._constraints.power_cap_settable:
            notes.append("power caps not settable: batch-only control")
        if state_cap.requested_seq > state_cap.applied_seq:
            notes.append(f"batch cap {state_cap.requested} written, not yet applied by the engine")
        return Sample(
            time_s=time_s,
            gpu_power_w=power_w,
            gpu_energy_j_total=energy_j,
            gpu_power_cap_w=caps_w,
            batch_cap=int(batch_cap),
            generated_tokens_total=metrics.generation_tokens_total,
            prompt_tokens_total=metrics.prompt_tokens_total,
            requests_running=queues.running,
            requests_waiting=queues.waiting,
            requests_finished_total=int(metrics.requests_finished_total),
            kv_cache_usage=queues.kv_cache_usage,
            ttft=None if win is None else win.ttft,
            tpot=None if win is None else (win.tpot or win.itl),
            mean_prompt_tokens=None if win is None else win.mean_prompt_tokens,
            mean_output_tokens=None if win is None else win.mean_output_tokens,
            age_s=age_s,
            notes=tuple(notes),
        )

    def _new_scrape(self) -> ScrapeResult | None:
        """The newest successful scrape not used yet (it becomes the engine data), else None."""
        ok = self._scrapes.last_ok
        if ok is None or ok.seq <= self._used_seq:
            self._window = None
            return None
        self._used_seq = ok.seq
        self._window = window(self._previous, ok.metrics) if ok.metrics.time_s > self._previous.time_s else None
        self._previous = ok.metrics
        self._counter_time_s = ok.mid_s
        return ok

    def _bridge_note(self, age_s: float) -> str:
        """Why this sample reuses old engine data; raises once that data is too old."""
        error = self._scrapes.last_error
        recent_error = error is not None and error.seq > self._used_seq
        why = str(error.error) if recent_error else f"no answer within {self.scrape_deadline_s:g} s"
        if age_s > self.stale_limit_s:
            raise EngineUnreachable(f"vLLM /metrics: {why}; no engine data for {age_s:.1f} s")
        return f"vLLM /metrics did not answer in time ({why}); engine data {age_s:.1f} s old"

    def _pick_queues(self, state, state_why: str, metrics: EngineMetrics) -> _Queues:
        """The scheduler's engine-state record when current, else vLLM's gauges."""
        if state is not None:
            queues = _Queues(state.running, state.waiting, state.kv_cache_usage, "scheduler", state_why)
        else:
            queues = _Queues(metrics.requests_running, metrics.requests_waiting, metrics.kv_cache_usage, "gauges",
                             state_why)
        self._queues = queues
        return queues

    def status(self) -> dict:
        """Where the node's data comes from now (JSON-ready): queue source, scrape timing, batch cap."""
        queues = self._queues
        cap = self.batch_cap_state()
        return {
            "queues_source": None if queues is None else queues.source,
            "queues_detail": None if queues is None else queues.detail,
            "samples": dict(self.counts),
            "scrape_deadline_s": self.scrape_deadline_s,
            "last_scrape_s": None if self._scrapes.last_ok is None
            else round(self._scrapes.last_ok.end_s - self._scrapes.last_ok.start_s, 4),
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
