"""vLLM telemetry from its Prometheus `/metrics` page.

One scrape becomes one immutable `EngineMetrics` (families summed over the
`engine` label, i.e. over data-parallel ranks). Rates and latency percentiles
come from the difference of two scrapes (`window()`), so they describe what
happened between them, not since the server started.

`BackgroundScrape` runs scrapes on one worker thread, so a caller waits for one
only as long as it chooses (`pals.node.vllm_timeline`).

Both the current metric names and the older ones are accepted
(`vllm:kv_cache_usage_perc` / `vllm:gpu_cache_usage_perc`,
`vllm:request_time_per_output_token_seconds` / `vllm:time_per_output_token_seconds`).
"""

from __future__ import annotations

import math
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from pals.errors import EngineUnreachable
from pals.core.node import LatencySummary

# Family names as prometheus-client's parser reports them: counters lose `_total`.
_REQUIRED = {
    "generation_tokens": ("vllm:generation_tokens",),
    "prompt_tokens": ("vllm:prompt_tokens",),
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
}
_OPTIONAL = {
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "request_success": ("vllm:request_success",),
    "preemptions": ("vllm:num_preemptions",),
}
_HISTOGRAMS = {
    "ttft": ("vllm:time_to_first_token_seconds",),
    "itl": ("vllm:inter_token_latency_seconds",),
    "tpot": ("vllm:request_time_per_output_token_seconds", "vllm:time_per_output_token_seconds"),
    "e2e": ("vllm:e2e_request_latency_seconds",),
    "prompt_len": ("vllm:request_prompt_tokens",),
    "output_len": ("vllm:request_generation_tokens",),
}


@dataclass(frozen=True)
class Histogram:
    """Cumulative histogram: `buckets` are (upper bound, cumulative count), +Inf last."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float

    def minus(self, earlier: "Histogram | None") -> "Histogram":
        """The observations made since `earlier` (a counter reset gives self)."""
        if earlier is None or earlier.count > self.count or len(earlier.buckets) != len(self.buckets):
            return self
        return Histogram(
            tuple((le, c - e) for (le, c), (_, e) in zip(self.buckets, earlier.buckets)),
            self.count - earlier.count,
            self.sum - earlier.sum,
        )

    def quantile(self, q: float) -> float | None:
        """Prometheus' histogram_quantile: linear inside the bucket; None when empty."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        lower_le, lower_count = 0.0, 0.0
        for le, cum in self.buckets:
            if cum >= rank:
                if math.isinf(le):
                    return lower_le  # beyond the last finite bound: report that bound
                width = cum - lower_count
                frac = 0.0 if width <= 0 else (rank - lower_count) / width
                return lower_le + (le - lower_le) * frac
            lower_le, lower_count = le, cum
        return lower_le

    def summary(self) -> LatencySummary | None:
        if self.count <= 0:
            return None
        return LatencySummary(p50_s=self.quantile(0.5), p99_s=self.quantile(0.99), count=int(self.count))

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None


@dataclass(frozen=True)
class EngineMetrics:
    """One scrape of vLLM's /metrics, summed over engines."""

    time_s: float
    """When the scrape finished, on the caller's monotonic clock. Units: s."""
    generation_tokens_total: float
    prompt_tokens_total: float
    requests_running: int
    requests_waiting: int
    kv_cache_usage: float | None = None
    """Fraction of KV-cache blocks in use, 0-1 (mean over engines)."""
    requests_finished_total: float = 0.0
    preemptions_total: float = 0.0
    histograms: dict[str, Histogram] = field(default_factory=dict)
    """By short name: ttft, itl, tpot, e2e, prompt_len, output_len (those present)."""
    model_names: tuple[str, ...] = ()
    num_engines: int = 1


@dataclass(frozen=True)
class MetricsWindow:
    """What happened between two scrapes."""

    duration_s: float
    generation_tps: float
    """Output tokens per second. Units: tokens/s."""
    prompt_tps: float
    requests_finished: float
    preemptions: float
    ttft: LatencySummary | None
    itl: LatencySummary | None
    tpot: LatencySummary | None
    mean_prompt_tokens: float | None
    mean_output_tokens: float | None


def _first(families: dict, names: tuple[str, ...]):
    for name in names:
        if name in families:
            return families[name]
    return None


def _sum_samples(family, sample_name: str, skip_label: tuple[str, str] | None = None) -> tuple[float, int]:
    total, engines = 0.0, set()
    for s in family.samples:
        if s.name != sample_name:
            continue
        if skip_label and s.labels.get(skip_label[0]) == skip_label[1]:
            continue
        total += s.value
        engines.add(s.labels.get("engine", "0"))
    return total, len(engines)


def _histogram(family) -> Histogram:
    buckets: dict[float, float] = {}
    count = total = 0.0
    for s in family.samples:
        if s.name.endswith("_bucket"):
            le = float(s.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + s.value
        elif s.name.endswith("_count"):
            count += s.value
        elif s.name.endswith("_sum"):
            total += s.value
    return Histogram(tuple(sorted(buckets.items())), count, total)


def parse_metrics(text: str, time_s: float | None = None, source: str = "/metrics") -> EngineMetrics:
    """Parse one /metrics page.

    Raises:
        EngineUnreachable: the page lacks a family the controller needs (not a
            vLLM server, or an unsupported version); the message names them.
    """
    from prometheus_client.parser import text_string_to_metric_families

    try:
        families = {f.name: f for f in text_string_to_metric_families(text)}
    except ValueError as exc:
        raise EngineUnreachable(f"{source} is not a Prometheus text page ({exc}); is this a vLLM server?") from None
    missing = [names[0] for names in _REQUIRED.values() if _first(families, names) is None]
    if missing:
        raise EngineUnreachable(
            f"{source} lacks {', '.join(missing)}: not a vLLM server, or a vLLM too old for PALS "
            "(needs the V1 engine's metrics, vLLM 0.8+)"
        )
    gen = _first(families, _REQUIRED["generation_tokens"])
    prompt = _first(families, _REQUIRED["prompt_tokens"])
    running = _first(families, _REQUIRED["requests_running"])
    waiting = _first(families, _REQUIRED["requests_waiting"])
    gen_total, num_engines = _sum_samples(gen, "vllm:generation_tokens_total")
    prompt_total, _ = _sum_samples(prompt, "vllm:prompt_tokens_total")
    running_n, _ = _sum_samples(running, running.name)
    waiting_n, _ = _sum_samples(waiting, waiting.name)
    kv_usage = None
    kv = _first(families, _OPTIONAL["kv_cache_usage"])
    if kv is not None and kv.samples:
        # Mean over engines: each engine's fraction of its own cache.
        kv_usage = sum(s.value for s in kv.samples) / len(kv.samples)
    finished = 0.0
    succ = _first(families, _OPTIONAL["request_success"])
    if succ is not None:
        # "abort" and "error" did not complete; they are not finished work.
        finished = sum(
            s.value
            for s in succ.samples
            if s.name.endswith("_total") and s.labels.get("finished_reason") not in ("abort", "error")
        )
    preempt = _first(families, _OPTIONAL["preemptions"])
    preempt_total = _sum_samples(preempt, "vllm:num_preemptions_total")[0] if preempt is not None else 0.0
    hists = {}
    for key, names in _HISTOGRAMS.items():
        fam = _first(families, names)
        if fam is not None and fam.type == "histogram":
            hists[key] = _histogram(fam)
    models = tuple(sorted({s.labels["model_name"] for s in gen.samples if "model_name" in s.labels}))
    return EngineMetrics(
        time_s=time.monotonic() if time_s is None else time_s,
        generation_tokens_total=gen_total,
        prompt_tokens_total=prompt_total,
        requests_running=int(round(running_n)),
        requests_waiting=int(round(waiting_n)),
        kv_cache_usage=kv_usage,
        requests_finished_total=finished,
        preemptions_total=preempt_total,
        histograms=hists,
        model_names=models,
        num_engines=max(1, num_engines),
    )


def window(earlier: EngineMetrics, later: EngineMetrics) -> MetricsWindow:
    """Rates and latency percentiles between two scrapes of the same server."""
    dt_s = later.time_s - earlier.time_s
    if dt_s <= 0:
        raise ValueError(f"scrapes are not in time order (dt = {dt_s:g} s)")

    def delta(a: float, b: float) -> float:
        return b - a if b >= a else b  # a counter reset (server restart) starts again at 0

    def hist(key: str) -> Histogram | None:
        h = later.histograms.get(key)
        return None if h is None else h.minus(earlier.histograms.get(key))

    def summary(key: str) -> LatencySummary | None:
        h = hist(key)
        return None if h is None else h.summary()

    def mean(key: str) -> float | None:
        h = hist(key)
        return None if h is None else h.mean

    return MetricsWindow(
        duration_s=dt_s,
        generation_tps=delta(earlier.generation_tokens_total, later.generation_tokens_total) / dt_s,
        prompt_tps=delta(earlier.prompt_tokens_total, later.prompt_tokens_total) / dt_s,
        requests_finished=delta(earlier.requests_finished_total, later.requests_finished_total),
        preemptions=delta(earlier.preemptions_total, later.preemptions_total),
        ttft=summary("ttft"),
        itl=summary("itl"),
        tpot=summary("tpot"),
        mean_prompt_tokens=mean("prompt_len"),
        mean_output_tokens=mean("output_len"),
    )


class MetricsScraper:
    """Fetches and parses `<base_url>/metrics`.

    Args:
        base_url: The server, e.g. http://127.0.0.1:8000 (a trailing /metrics is accepted).
        timeout_s: Per-request timeout.
    """

    def __init__(self, base_url: str, timeout_s: float = 2.0) -> None:
        url = base_url.rstrip("/")
        if url.endswith("/metrics"):
            url = url[: -len("/metrics")]
        if not url.startswith(("http://", "https://")):
            raise EngineUnreachable(f"vLLM URL {base_url!r} must start with http:// or https://")
        self.base_url = url
        self.metrics_url = url + "/metrics"
        self.timeout_s = float(timeout_s)

    def fetch_text(self) -> str:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=self.timeout_s) as resp:
                return resp.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            raise EngineUnreachable(
                f"{self.metrics_url} answered HTTP {exc.code}; is this a vLLM server with metrics enabled?"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EngineUnreachable(
                f"cannot reach {self.metrics_url} ({reason}); check the URL and that vLLM is running"
            ) from None

    def scrape(self) -> EngineMetrics:
        text = self.fetch_text()
        return parse_metrics(text, time_s=time.monotonic(), source=self.metrics_url)


@dataclass(frozen=True)
class ScrapeResult:
    """One finished scrape: when it started and ended (the caller's monotonic clock), and its outcome."""

    seq: int
    """Number of the scrape, from 1."""
    start_s: float
    end_s: float
    metrics: EngineMetrics | None
    """The parsed page; None when the scrape failed."""
    error: EngineUnreachable | None = None

    @property
    def mid_s(self) -> float:
        """Best estimate of when vLLM read its counters: the middle of the request. Units: s."""
        return 0.5 * (self.start_s + self.end_s)


class BackgroundScrape:
    """At most one /metrics scrape in flight, on a worker thread, so a caller can wait with a deadline.

    A scrape still running when the caller's deadline passes is not abandoned: it finishes in the
    background and its result is there for the next call (the counters are cumulative, so a late
    result loses nothing). The HTTP timeout of `scraper` bounds how long one can hang. One worker
    thread lives as long as this object (a daemon thread; it sleeps between scrapes), so a
    `start()` never waits for a new thread to be scheduled on a starved host.
    """

    def __init__(self, scraper: MetricsScraper, clock=time.monotonic) -> None:
        self.scraper = scraper
        self._clock = clock
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.last_ok: ScrapeResult | None = None
        """The newest successful scrape."""
        self.last_error: ScrapeResult | None = None
        """The newest failed scrape."""

    @property
    def in_flight(self) -> bool:
        return not self._idle.is_set()

    def start(self) -> bool:
        """Start a scrape unless one is in flight; True when one was started."""
        with self._lock:
            if not self._idle.is_set():
                return False
            self._idle.clear()
            self._seq += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="pals-vllm-scrape", daemon=True)
                self._thread.start()
            self._wake.set()
        return True

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the scrape in flight; True when none is in flight."""
        return self._idle.wait(max(0.0, timeout_s))

    def _serve(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                seq = self._seq
            self._run(seq)

    def _run(self, seq: int) -> None:
        start_s = self._clock()
        metrics = error = None
        try:
            metrics = self.scraper.scrape()
        except EngineUnreachable as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a worker thread must hand every failure back
            error = EngineUnreachable(f"scraping {self.scraper.metrics_url} failed: {type(exc).__name__}: {exc}")
        result = ScrapeResult(seq, start_s, self._clock(), metrics, error)
        with self._lock:
            if metrics is not None:
                self.last_ok = result
            else:
                self.last_error = result
            self._idle.set()
