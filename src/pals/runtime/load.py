"""The offered load, as one typed description, and the one function that turns it into a workload.

A load is a trace replayed open loop, Poisson arrivals at a rate, or a saturating closed loop.
Poisson and saturating loads draw their request lengths from an explicit `lengths` choice:

- `TraceLengths`: prompt and output lengths drawn independently from a trace's rows (`pals run`,
  `pals demo`, the predictors built on the fly).
- `UniformLengths`: uniform integer ranges (the paper-reproduction experiments).
- `LognormalLengths`: log-normal around given means (`pals profile` / `pals sweep` on the simulated
  node, and the load generator offered to a real vLLM node while profiling it).

A trace load keeps the trace's own (prompt, output) pairs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from pals.errors import ConfigError
from pals.sim.workload import (
    LengthDistribution,
    PoissonWorkload,
    SaturatingWorkload,
    TraceWorkload,
    Workload,
    load_trace,
)

LOGNORMAL_CV = 0.5
"""Coefficient of variation of log-normal lengths unless one is given."""

PACKAGED = ("conv", "code")
"""Short names of the shipped Azure LLM 2023 traces (`pals.sim.workload.PACKAGED_TRACES`)."""


def _trace_key(source: str) -> str:
    """Cache key of a trace: its short name, or a content hash of a custom CSV."""
    if source in PACKAGED:
        return source
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"trace file {source} does not exist; give conv, code or a CSV path")
    return f"trace-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


@dataclass(frozen=True)
class TraceLengths:
    """Prompt and output lengths resampled independently from a trace's columns."""

    trace: str = "conv"
    """"conv", "code" or a CSV path (columns TIMESTAMP, ContextTokens, GeneratedTokens)."""

    def distributions(self) -> tuple[LengthDistribution, LengthDistribution]:
        """(prompt, output) length distributions."""
        _, prompts, outputs = load_trace(self.trace)
        return LengthDistribution.empirical(prompts), LengthDistribution.empirical(outputs)

    def key(self) -> str:
        return f"{_trace_key(self.trace)}-indep"

    def label(self) -> str:
        return self.trace


@dataclass(frozen=True)
class UniformLengths:
    """Uniform integer lengths in closed ranges."""

    prompt_tokens: tuple[int, int]
    """(lowest, highest) prompt length. Units: tokens."""
    output_tokens: tuple[int, int]
    """(lowest, highest) output length. Units: tokens."""

    def distributions(self) -> tuple[LengthDistribution, LengthDistribution]:
        return LengthDistribution.uniform(*self.prompt_tokens), LengthDistribution.uniform(*self.output_tokens)

    def key(self) -> str:
        (p_lo, p_hi), (o_lo, o_hi) = self.prompt_tokens, self.output_tokens
        return f"uniform-{p_lo}-{p_hi}-{o_lo}-{o_hi}"

    def label(self) -> str:
        return f"uniform {self.prompt_tokens} / {self.output_tokens}"


@dataclass(frozen=True)
class LognormalLengths:
    """Log-normal lengths with given means and coefficient of variation (rounded, at least 1)."""

    mean_prompt_tokens: float
    """Mean prompt length. Units: tokens."""
    mean_output_tokens: float
    """Mean output length. Units: tokens."""
    cv: float = LOGNORMAL_CV
    """Coefficient of variation of both lengths."""

    def distributions(self) -> tuple[LengthDistribution, LengthDistribution]:
        return (LengthDistribution.lognormal(self.mean_prompt_tokens, self.cv),
                LengthDistribution.lognormal(self.mean_output_tokens, self.cv))

    def key(self) -> str:
        return f"lognormal-{self.mean_prompt_tokens:g}-{self.mean_output_tokens:g}-cv{self.cv:g}"

    def label(self) -> str:
        return f"lognormal {self.mean_prompt_tokens:g} / {self.mean_output_tokens:g} cv {self.cv:g}"


Lengths = Union[TraceLengths, UniformLengths, LognormalLengths]
"""How Poisson and saturating loads draw request lengths."""


@dataclass(frozen=True)
class LoadSpec:
    """Offered load: exactly one of a trace, a Poisson rate, or saturating."""

    trace: str | None = None
    """"conv", "code" or a CSV path (Azure LLM inference trace columns); replayed open loop, looped."""
    rate_scale: float = 1.0
    """Trace speed-up (>1: more load). Applies to `trace` only."""
    rate_rps: float | None = None
    """Poisson arrival rate. Units: requests/s."""
    saturate: bool = False
    """Closed loop: requests always waiting."""
    lengths: Lengths = TraceLengths()
    """Where Poisson and saturating loads draw prompt and output lengths from."""
    seed: int = 0
    """Seed of the request stream (Poisson and saturating; a trace is replayed as recorded)."""

    def __post_init__(self) -> None:
        chosen = sum([self.trace is not None, self.rate_rps is not None, bool(self.saturate)])
        if chosen != 1:
            raise ConfigError("give exactly one load: --trace conv|code|FILE, --rate R, or --saturate")
        if self.rate_rps is not None and not self.rate_rps > 0:
            raise ConfigError(f"--rate must be a positive number of requests/s, got {self.rate_rps}")
        if not self.rate_scale > 0:
            raise ConfigError(f"--rate-scale must be positive, got {self.rate_scale}")

    @classmethod
    def poisson_for_tps(cls, offered_tps: float, lengths: Lengths, seed: int = 0) -> "LoadSpec":
        """Poisson arrivals whose mean offered output rate is `offered_tps` tokens/s."""
        _, output = lengths.distributions()
        return cls(rate_rps=offered_tps / output.mean, lengths=lengths, seed=seed)

    def length_key(self) -> str:
        """Cache key of the length distribution (a file's content hash for custom traces)."""
        if self.trace is not None:
            return f"{_trace_key(self.trace)}-paired"
        return self.lengths.key()

    def length_label(self) -> str:
        """Where the lengths come from, for metadata and logs."""
        return self.trace if self.trace is not None else self.lengths.label()

    def label(self) -> str:
        """The load in a few words: 'trace conv x1.6', 'poisson 4 rps', 'saturating'."""
        if self.trace is not None:
            return f"trace {self.trace} x{self.rate_scale:g}"
        if self.rate_rps is not None:
            return f"poisson {self.rate_rps:g} rps"
        return "saturating"


def make_workload(load: LoadSpec) -> Workload:
    """The workload `load` describes (a fresh object; its `requests()` are reproducible)."""
    if load.trace is not None:
        return TraceWorkload.from_csv(load.trace, rate_scale=load.rate_scale, loop=True)
    prompt, output = load.lengths.distributions()
    if load.saturate:
        return SaturatingWorkload(prompt, output, seed=load.seed)
    return PoissonWorkload(load.rate_rps, prompt, output, seed=load.seed)


def saturating_equivalent(load: LoadSpec, seed: int | None = None) -> Workload:
    """Saturating load with `load`'s length distribution (for profiling and the Oracle's ground truth).

    Trace loads keep the trace's (prompt, output) pairs; Poisson and saturating loads draw the two
    lengths independently, as their own requests do. `seed` defaults to the load's.
    """
    seed = load.seed if seed is None else seed
    if load.trace is not None:
        return SaturatingWorkload.from_trace(load.trace, seed=seed)
    prompt, output = load.lengths.distributions()
    return SaturatingWorkload(prompt, output, seed=seed)
