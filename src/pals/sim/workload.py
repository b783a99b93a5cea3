"""Workloads for the simulated node: who asks for how many tokens, and when.

Three kinds, one contract (`Workload.requests()` returns a fresh, reproducible
iterator of `Request`s):

- `PoissonWorkload`: open loop, exponential inter-arrival times.
- `TraceWorkload`: open loop, replays a CSV trace (the shipped Azure LLM
  inference traces 2023, "conv" and "code", or any CSV with the columns
  TIMESTAMP, ContextTokens, GeneratedTokens), optionally sped up and looped.
- `SaturatingWorkload`: closed loop. The engine pulls a new request whenever
  its waiting queue runs short, so the node is always saturated; arrival
  times are the moment of the pull.

Every random draw comes from `np.random.default_rng(seed)` created inside
`requests()`, so two iterators of one workload yield the same requests and no
global random state is touched.
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from pals.core.untrusted import fmt_limit, number_in, read_text_file, show, whole_in
from pals.core.workload import WorkloadDescriptor
from pals.errors import ConfigError

_BLOCK = 4096
"""Requests drawn per numpy call: per-request scalar draws cost ~10x more."""

PACKAGED_TRACES = {"conv": "azure_llm_2023_conv.csv", "code": "azure_llm_2023_code.csv"}
"""Short names of the traces shipped in pals/data/traces (CC-BY 4.0, see ATTRIBUTION.md there)."""

TRACE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")

MAX_TOKENS = 16_777_216
"""Longest prompt or output one request may have. Units: tokens (real contexts reach ~1e6)."""
MIN_RATE_RPS = 1e-6
"""Slowest offered load accepted (one request in ~12 days). Units: requests/s."""
MAX_RATE_RPS = 10_000.0
"""Fastest offered load accepted, Poisson or trace (after its speed-up). Units: requests/s. A node
serves ~1-100 requests/s; beyond this a load is a typo (`--rate inf`) and would queue requests
faster than the simulation can drain them, growing without bound. Use a saturating load instead."""
MIN_RATE_SCALE, MAX_RATE_SCALE = 1e-6, 1e6
"""Range of a trace's speed-up factor."""
MAX_TRACE_SPAN_S = 1e9
"""Longest trace (first to last arrival) and longest Poisson duration accepted (~31 years). Units: s."""
MAX_TRACE_BYTES = 256 * 1024 * 1024
"""Largest trace file read (the shipped Azure traces are ~1 MB). Units: bytes."""
MAX_QUEUE_DEPTH = 1_048_576
"""Largest `min_waiting` of a saturating load. Units: requests."""


def _check_seed(seed: Any, what: str) -> int:
    """A seed for `np.random.default_rng`: a whole number >= 0 (numpy's own error is a traceback)."""
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= seed < 2**128:
        raise ConfigError(f"{what} seed must be a whole number from 0 to 2**128 - 1, got {show(seed)}")
    return int(seed)


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request as the engine sees it."""

    arrival_s: float
    """When it reaches the node (closed-loop workloads: 0, the engine stamps the pull time). Units: s."""
    prompt_tokens: int
    """Prompt length (prefill work). At least 1."""
    output_tokens: int
    """Tokens to generate, the first one included. At least 1."""


@dataclass(frozen=True)
class LengthDistribution:
    """A distribution of token counts (prompt or output lengths).

    Build one with `fixed`, `uniform`, `lognormal` or `empirical`; values are
    always integers >= 1.
    """

    kind: str
    params: tuple[float, ...] = ()
    values: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "uniform", "lognormal", "empirical"):
            raise ConfigError(
                f"length distribution kind {self.kind!r} is unknown; use fixed, uniform, lognormal or empirical"
            )
        if self.kind == "empirical" and not self.values:
            raise ConfigError("empirical length distribution needs at least one value")

    @classmethod
    def fixed(cls, tokens: int) -> "LengthDistribution":
        """Always `tokens` (a whole number from 1 to `MAX_TOKENS`)."""
        whole_in(tokens, "fixed length", 1, MAX_TOKENS, "tokens", integral_floats=True)
        return cls("fixed", (float(tokens),))

    @classmethod
    def uniform(cls, low_tokens: int, high_tokens: int) -> "LengthDistribution":
        """Uniform integers in [low_tokens, high_tokens], within 1..`MAX_TOKENS`."""
        whole_in(low_tokens, "uniform low length", 1, MAX_TOKENS, "tokens", integral_floats=True)
        whole_in(high_tokens, "uniform high length", 1, MAX_TOKENS, "tokens", integral_floats=True)
        if not low_tokens <= high_tokens:
            raise ConfigError(
                f"uniform lengths need 1 <= low <= high, got {low_tokens}..{high_tokens}"
            )
        return cls("uniform", (float(low_tokens), float(high_tokens)))

    @classmethod
    def lognormal(
        cls, mean_tokens: float, cv: float = 1.0, max_tokens: int = 32768
    ) -> "LengthDistribution":
        """Log-normal with the given mean and coefficient of variation, rounded, clipped to [1, max_tokens]."""
        number_in(mean_tokens, "lognormal mean length", 1, MAX_TOKENS, "tokens")
        number_in(cv, "lognormal cv", 0, 100)
        number_in(max_tokens, "lognormal max length", 1, MAX_TOKENS, "tokens")
        return cls("lognormal", (float(mean_tokens), float(cv), float(max_tokens)))

    @classmethod
    def empirical(cls, values: Sequence[int]) -> "LengthDistribution":
        """Resample (with replacement) from observed lengths, e.g. a trace's column (0 counts as 1)."""
        vals = []
        for v in values:
            if not (isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v <= MAX_TOKENS):
                raise ConfigError(f"empirical lengths must be numbers from 0 to {fmt_limit(MAX_TOKENS)} tokens, got {show(v)}")
            vals.append(max(1, int(v)))
        if not vals:
            raise ConfigError("empirical length distribution needs at least one value")
        return cls("empirical", (), tuple(vals))

    @property
    def mean(self) -> float:
        """Mean length in tokens (before clipping for lognormal)."""
        if self.kind == "fixed":
            return self.params[0]
        if self.kind == "uniform":
            return 0.5 * (self.params[0] + self.params[1])
        if self.kind == "lognormal":
            return self.params[0]
        return float(sum(self.values)) / len(self.values)

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        """`n` lengths as plain ints (the engine's hot loop wants Python ints)."""
        if self.kind == "fixed":
            return [int(self.params[0])] * n
        if self.kind == "uniform":
            lo, hi = int(self.params[0]), int(self.params[1])
            return rng.integers(lo, hi + 1, size=n).tolist()
        if self.kind == "lognormal":
            mean, cv, cap = self.params
            sigma2 = math.log1p(cv * cv)
            mu = math.log(mean) - 0.5 * sigma2
            draws = rng.lognormal(mu, math.sqrt(sigma2), size=n)
            return np.clip(np.rint(draws), 1, cap).astype(np.int64).tolist()
        idx = rng.integers(0, len(self.values), size=n)
        vals = self.values
        return [vals[i] for i in idx.tolist()]


class Workload:
    """Base class: a reproducible source of requests."""

    closed_loop: bool = False
    """True when the engine pulls requests on demand (saturating load)."""

    def requests(self) -> Iterator[Request]:
        """A fresh iterator over the requests, in arrival order."""
        raise NotImplementedError

    @property
    def descriptor(self) -> WorkloadDescriptor:
        raise NotImplementedError


class PoissonWorkload(Workload):
    """Open-loop Poisson arrivals with independent prompt and output lengths.

    Args:
        rate_rps: mean arrival rate, requests per second (> 0).
        prompt_tokens: prompt-length distribution.
        output_tokens: output-length distribution.
        seed: random seed; equal seeds give equal request sequences.
        duration_s: stop generating after this time (None: endless).
    """

    def __init__(
        self,
        rate_rps: float,
        prompt_tokens: LengthDistribution,
        output_tokens: LengthDistribution,
        seed: int = 0,
        duration_s: float | None = None,
    ) -> None:
        number_in(rate_rps, "Poisson rate_rps", MIN_RATE_RPS, MAX_RATE_RPS, "requests/s (for more, use a saturating load)")
        if duration_s is not None:
            number_in(duration_s, "Poisson duration_s", 0, MAX_TRACE_SPAN_S, "s")
        self.rate_rps = float(rate_rps)
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.seed = _check_seed(seed, "Poisson")
        self.duration_s = duration_s

    @property
    def descriptor(self) -> WorkloadDescriptor:
        return WorkloadDescriptor(
            self.prompt_tokens.mean, self.output_tokens.mean, self.rate_rps, "poisson"
        )

    def requests(self) -> Iterator[Request]:
        rng = np.random.default_rng(self.seed)
        t_s = 0.0
        end_s = math.inf if self.duration_s is None else self.duration_s
        while True:
            gaps = rng.exponential(1.0 / self.rate_rps, size=_BLOCK).tolist()
            prompts = self.prompt_tokens.sample(rng, _BLOCK)
            outputs = self.output_tokens.sample(rng, _BLOCK)
            for gap, p, o in zip(gaps, prompts, outputs):
                t_s += gap
                if t_s > end_s:
                    return
                yield Request(t_s, p, o)


def _parse_timestamp(text: str) -> float:
    """Seconds from a TIMESTAMP cell: a finite number of seconds, or an ISO date-time."""
    try:
        seconds = float(text)
    except ValueError:
        stamp = datetime.fromisoformat(text.strip())
        if stamp.tzinfo is None:
            # Naive times: read as UTC, so no local daylight-saving jump enters the gaps.
            stamp = stamp.replace(tzinfo=timezone.utc)
        return stamp.timestamp()
    if not math.isfinite(seconds):
        raise ValueError("not finite")
    return seconds


def _parse_tokens(text: str) -> int:
    """A token count cell: a finite number from 0 to MAX_TOKENS (fractions truncated, 0 raised to 1)."""
    value = float(text)
    if not (math.isfinite(value) and 0 <= value <= MAX_TOKENS):
        raise ValueError("out of range")
    return max(1, int(value))


def load_trace(path: str | Path) -> tuple[list[float], list[int], list[int]]:
    """Read a trace CSV into (arrival seconds from the first row, prompt tokens, output tokens).

    `path` is a file path or a shipped trace name ("conv", "code"). Rows are
    sorted by arrival. Token counts must be numbers from 0 to `MAX_TOKENS`; 0 is
    raised to 1 (every request carries a prompt and yields at least one token).

    Raises:
        ConfigError: missing or binary file, missing column, an unparsable or out-of-range row (one line
            naming file, row and column), or arrivals spanning more than `MAX_TRACE_SPAN_S`.
    """
    if isinstance(path, str) and path in PACKAGED_TRACES:
        return load_trace(Path(__file__).resolve().parent.parent / "data" / "traces" / PACKAGED_TRACES[path])
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"trace {path}: cannot open ({'not a file' if path.exists() else 'no such file'}); "
            f"give a CSV path or one of {sorted(PACKAGED_TRACES)}"
        )
    text = read_text_file(path, "trace", max_bytes=MAX_TRACE_BYTES)
    reader = csv.reader(io.StringIO(text, newline=""))
    times: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    row_no = 1
    try:
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in TRACE_COLUMNS if c not in header]
        if missing:
            raise ConfigError(
                f"trace {path}: missing column {missing[0]} (need {', '.join(TRACE_COLUMNS)})"
            )
        i_t, i_p, i_o = (header.index(c) for c in TRACE_COLUMNS)
        for row_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            col = TRACE_COLUMNS[0]
            try:
                times.append(_parse_timestamp(row[i_t]))
                col = TRACE_COLUMNS[1]
                prompts.append(_parse_tokens(row[i_p]))
                col = TRACE_COLUMNS[2]
                outputs.append(_parse_tokens(row[i_o]))
            except (ValueError, IndexError, OverflowError):
                cell = row[header.index(col)] if header.index(col) < len(row) else ""
                expected = "a finite time" if col == TRACE_COLUMNS[0] else f"a number from 0 to {fmt_limit(MAX_TOKENS)}"
                raise ConfigError(
                    f"trace {path}: row {row_no} column {col} is not {expected}: {show(cell)}"
                ) from None
    except csv.Error as exc:
        raise ConfigError(f"trace {path}: row {row_no} is corrupt CSV ({exc})") from None
    if not times:
        raise ConfigError(f"trace {path}: no data rows")
    order = sorted(range(len(times)), key=times.__getitem__)
    t0 = times[order[0]]
    if times[order[-1]] - t0 > MAX_TRACE_SPAN_S:
        raise ConfigError(
            f"trace {path}: arrivals span {times[order[-1]] - t0:.3g} s, more than {MAX_TRACE_SPAN_S:g} s; "
            "check the TIMESTAMP column's unit (seconds or ISO date-times)"
        )
    return (
        [times[i] - t0 for i in order],
        [prompts[i] for i in order],
        [outputs[i] for i in order],
    )


class TraceWorkload(Workload):
    """Replays a recorded trace (open loop).

    Build it with `TraceWorkload.from_csv`. Arrival times start at 0 s and are
    divided by `rate_scale`.
    """

    def __init__(
        self,
        arrivals_s: Sequence[float],
        prompt_tokens: Sequence[int],
        output_tokens: Sequence[int],
        rate_scale: float = 1.0,
        loop: bool = False,
        name: str = "trace",
    ) -> None:
        number_in(rate_scale, "trace rate_scale", MIN_RATE_SCALE, MAX_RATE_SCALE)
        if not (len(arrivals_s) == len(prompt_tokens) == len(output_tokens)) or not arrivals_s:
            raise ConfigError("trace needs equally long, non-empty arrival and length columns")
        self.arrivals_s = [float(t) for t in arrivals_s]
        self.prompt_tokens = [int(p) for p in prompt_tokens]
        self.output_tokens = [int(o) for o in output_tokens]
        self.rate_scale = float(rate_scale)
        self.loop = loop
        self.name = name
        self._check_columns()
        n = len(self.arrivals_s)
        # A loop repeats the window once its last request is in, one mean gap later.
        span_s = self.arrivals_s[-1] - self.arrivals_s[0]
        self._period_s = span_s + (span_s / (n - 1) if n > 1 else 1.0)
        rate_rps = n / self._period_s * self.rate_scale
        if rate_rps > MAX_RATE_RPS:
            raise ConfigError(
                f"trace {name} offers {rate_rps:.3g} requests/s at rate_scale {self.rate_scale:g}, more than "
                f"{fmt_limit(MAX_RATE_RPS)}; lower the rate scale, or use a saturating load"
            )

    def _check_columns(self) -> None:
        """Finite, sorted arrivals over a positive span; lengths within 1..MAX_TOKENS.

        A trace whose requests all arrive at one instant has no duration to replay or loop over:
        looping it would emit requests forever without time moving (the engine never returns).
        """
        times = self.arrivals_s
        if not all(math.isfinite(t) for t in times) or any(b < a for a, b in zip(times, times[1:])):
            raise ConfigError(f"trace {self.name}: arrival times must be finite and sorted")
        if times[-1] - times[0] > MAX_TRACE_SPAN_S:
            raise ConfigError(f"trace {self.name}: arrivals span more than {MAX_TRACE_SPAN_S:g} s")
        if len(times) > 1 and times[-1] == times[0]:
            raise ConfigError(
                f"trace {self.name}: all {len(times)} requests arrive at the same instant (zero duration); "
                "give a trace whose timestamps differ, or use a saturating load"
            )
        for column in (self.prompt_tokens, self.output_tokens):
            if any(not 1 <= tokens <= MAX_TOKENS for tokens in column):
                raise ConfigError(f"trace {self.name}: token counts must be from 1 to {fmt_limit(MAX_TOKENS)}")

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        rate_scale: float = 1.0,
        start_s: float = 0.0,
        duration_s: float | None = None,
        loop: bool = False,
    ) -> "TraceWorkload":
        """Load a trace.

        Args:
            path: CSV path, or "conv" / "code" for the shipped Azure 2023 traces.
            rate_scale: >1 compresses inter-arrival times (more load), <1 stretches them.
            start_s: skip the first `start_s` seconds of the trace (trace time).
            duration_s: keep only this many seconds after `start_s` (trace time; None: to the end).
            loop: repeat the selected window forever.
        """
        number_in(start_s, "trace start_s", 0, MAX_TRACE_SPAN_S, "s")
        if duration_s is not None:
            number_in(duration_s, "trace duration_s", 0, MAX_TRACE_SPAN_S, "s")
        times, prompts, outputs = load_trace(path)
        end_s = math.inf if duration_s is None else start_s + duration_s
        keep = [i for i, t in enumerate(times) if start_s <= t < end_s]
        if not keep:
            raise ConfigError(
                f"trace {path}: no requests between {start_s:g} s and {end_s:g} s; "
                f"the trace spans 0-{times[-1]:.0f} s"
            )
        t0 = times[keep[0]]
        return cls(
            [times[i] - t0 for i in keep],
            [prompts[i] for i in keep],
            [outputs[i] for i in keep],
            rate_scale=rate_scale,
            loop=loop,
            name=str(path),
        )

    @property
    def descriptor(self) -> WorkloadDescriptor:
        n = len(self.arrivals_s)
        return WorkloadDescriptor(
            sum(self.prompt_tokens) / n,
            sum(self.output_tokens) / n,
            n / self._period_s * self.rate_scale,
            self.name,
        )

    def requests(self) -> Iterator[Request]:
        scale = 1.0 / self.rate_scale
        offset_s = 0.0
        while True:
            for t, p, o in zip(self.arrivals_s, self.prompt_tokens, self.output_tokens):
                yield Request((t + offset_s) * scale, p, o)
            if not self.loop:
                return
            offset_s += self._period_s


class SaturatingWorkload(Workload):
    """Closed loop: the engine always finds requests waiting.

    Each engine replica keeps at least `min_waiting` requests queued (default:
    the node's batch cap maximum), pulling new ones on demand; their arrival
    time is the moment of the pull.

    Args:
        prompt_tokens: prompt-length distribution.
        output_tokens: output-length distribution.
        seed: random seed.
        min_waiting: queue depth to keep (None: the node's batch_cap_max).
    """

    closed_loop = True

    def __init__(
        self,
        prompt_tokens: LengthDistribution,
        output_tokens: LengthDistribution,
        seed: int = 0,
        min_waiting: int | None = None,
    ) -> None:
        if min_waiting is not None:
            whole_in(min_waiting, "saturating min_waiting", 1, MAX_QUEUE_DEPTH, "requests")
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.seed = _check_seed(seed, "saturating load")
        self.min_waiting = min_waiting

    @classmethod
    def from_trace(
        cls, path: str | Path, seed: int = 0, min_waiting: int | None = None
    ) -> "SaturatingWorkload":
        """Saturating load whose (prompt, output) pairs are resampled jointly from a trace."""
        _, prompts, outputs = load_trace(path)
        # Resample whole rows: prompt and output lengths are correlated in real traces.
        return _PairedSaturating(prompts, outputs, seed=seed, min_waiting=min_waiting, name=str(path))

    @property
    def descriptor(self) -> WorkloadDescriptor:
        return WorkloadDescriptor(
            self.prompt_tokens.mean, self.output_tokens.mean, None, "saturating"
        )

    def requests(self) -> Iterator[Request]:
        rng = np.random.default_rng(self.seed)
        while True:
            prompts = self.prompt_tokens.sample(rng, _BLOCK)
            outputs = self.output_tokens.sample(rng, _BLOCK)
            for p, o in zip(prompts, outputs):
                yield Request(0.0, p, o)


class _PairedSaturating(SaturatingWorkload):
    """Saturating load drawing (prompt, output) pairs from a trace's rows."""

    def __init__(
        self,
        prompts: Sequence[int],
        outputs: Sequence[int],
        seed: int,
        min_waiting: int | None,
        name: str,
    ) -> None:
        super().__init__(
            LengthDistribution.empirical(prompts),
            LengthDistribution.empirical(outputs),
            seed=seed,
            min_waiting=min_waiting,
        )
        self._pairs = list(zip(self.prompt_tokens.values, self.output_tokens.values))
        self._name = name

    @property
    def descriptor(self) -> WorkloadDescriptor:
        return WorkloadDescriptor(
            self.prompt_tokens.mean, self.output_tokens.mean, None, f"saturating:{self._name}"
        )

    def requests(self) -> Iterator[Request]:
        rng = np.random.default_rng(self.seed)
        pairs = self._pairs
        while True:
            for i in rng.integers(0, len(pairs), size=_BLOCK).tolist():
                p, o = pairs[i]
                yield Request(0.0, p, o)
