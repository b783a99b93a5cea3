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
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pals.core.workload import WorkloadDescriptor
from pals.errors import ConfigError

_BLOCK = 4096
"""Requests drawn per numpy call: per-request scalar draws cost ~10x more."""

PACKAGED_TRACES = {"conv": "azure_llm_2023_conv.csv", "code": "azure_llm_2023_code.csv"}
"""Short names of the traces shipped in pals/data/traces (CC-BY 4.0, see ATTRIBUTION.md there)."""

TRACE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


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

    @classmethod
    def fixed(cls, tokens: int) -> "LengthDistribution":
        """Always `tokens`."""
        if tokens < 1:
            raise ConfigError(f"fixed length must be at least 1 token, got {tokens}")
        return cls("fixed", (float(tokens),))

    @classmethod
    def uniform(cls, low_tokens: int, high_tokens: int) -> "LengthDistribution":
        """Uniform integers in [low_tokens, high_tokens]."""
        if not 1 <= low_tokens <= high_tokens:
            raise ConfigError(
                f"uniform lengths need 1 <= low <= high, got {low_tokens}..{high_tokens}"
            )
        return cls("uniform", (float(low_tokens), float(high_tokens)))

    @classmethod
    def lognormal(
        cls, mean_tokens: float, cv: float = 1.0, max_tokens: int = 32768
    ) -> "LengthDistribution":
        """Log-normal with the given mean and coefficient of variation, rounded, clipped to [1, max_tokens]."""
        if mean_tokens < 1 or cv < 0 or max_tokens < 1:
            raise ConfigError(
                f"lognormal lengths need mean >= 1, cv >= 0 and max >= 1, got {mean_tokens}, {cv}, {max_tokens}"
            )
        return cls("lognormal", (float(mean_tokens), float(cv), float(max_tokens)))

    @classmethod
    def empirical(cls, values: Sequence[int]) -> "LengthDistribution":
        """Resample (with replacement) from observed lengths, e.g. a trace's column."""
        vals = tuple(max(1, int(v)) for v in values)
        if not vals:
            raise ConfigError("empirical length distribution needs at least one value")
        return cls("empirical", (), vals)

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
        if not rate_rps > 0:
            raise ConfigError(f"PoissonWorkload rate_rps must be > 0, got {rate_rps}")
        if duration_s is not None and duration_s < 0:
            raise ConfigError(f"PoissonWorkload duration_s must be >= 0, got {duration_s}")
        self.rate_rps = float(rate_rps)
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.seed = seed
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
    """Seconds from a TIMESTAMP cell: a number of seconds, or an ISO date-time."""
    try:
        return float(text)
    except ValueError:
        stamp = datetime.fromisoformat(text.strip())
    if stamp.tzinfo is None:
        # Naive times: read as UTC, so no local daylight-saving jump enters the gaps.
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def load_trace(path: str | Path) -> tuple[list[float], list[int], list[int]]:
    """Read a trace CSV into (arrival seconds from the first row, prompt tokens, output tokens).

    `path` is a file path or a shipped trace name ("conv", "code"). Rows are
    sorted by arrival. Token counts below 1 are raised to 1 (every request
    carries a prompt and yields at least one token).

    Raises:
        ConfigError: missing file, missing column or an unparsable row (one line naming file, row and column).
    """
    if isinstance(path, str) and path in PACKAGED_TRACES:
        return load_trace(Path(__file__).resolve().parent.parent / "data" / "traces" / PACKAGED_TRACES[path])
    path = Path(path)
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise ConfigError(
            f"trace {path}: cannot open ({exc.strerror}); give a CSV path or one of {sorted(PACKAGED_TRACES)}"
        ) from None
    with handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in TRACE_COLUMNS if c not in header]
        if missing:
            raise ConfigError(
                f"trace {path}: missing column {missing[0]} (need {', '.join(TRACE_COLUMNS)})"
            )
        i_t, i_p, i_o = (header.index(c) for c in TRACE_COLUMNS)
        times: list[float] = []
        prompts: list[int] = []
        outputs: list[int] = []
        for row_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            col = TRACE_COLUMNS[0]
            try:
                times.append(_parse_timestamp(row[i_t]))
                col = TRACE_COLUMNS[1]
                prompts.append(max(1, int(float(row[i_p]))))
                col = TRACE_COLUMNS[2]
                outputs.append(max(1, int(float(row[i_o]))))
            except (ValueError, IndexError):
                cell = row[header.index(col)] if header.index(col) < len(row) else ""
                raise ConfigError(
                    f"trace {path}: row {row_no} column {col} is not a number or time: {cell!r}"
                ) from None
    if not times:
        raise ConfigError(f"trace {path}: no data rows")
    order = sorted(range(len(times)), key=times.__getitem__)
    t0 = times[order[0]]
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
        if not rate_scale > 0:
            raise ConfigError(f"trace rate_scale must be > 0, got {rate_scale}")
        if not (len(arrivals_s) == len(prompt_tokens) == len(output_tokens)) or not arrivals_s:
            raise ConfigError("trace needs equally long, non-empty arrival and length columns")
        self.arrivals_s = list(arrivals_s)
        self.prompt_tokens = [int(p) for p in prompt_tokens]
        self.output_tokens = [int(o) for o in output_tokens]
        self.rate_scale = float(rate_scale)
        self.loop = loop
        self.name = name
        n = len(self.arrivals_s)
        # A loop repeats the window once its last request is in, one mean gap later.
        span_s = self.arrivals_s[-1] - self.arrivals_s[0]
        self._period_s = span_s + (span_s / (n - 1) if n > 1 else 1.0)

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
        if min_waiting is not None and min_waiting < 1:
            raise ConfigError(f"SaturatingWorkload min_waiting must be >= 1, got {min_waiting}")
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.seed = seed
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
