"""Latency service-level objectives (SLOs): what the operator asks of TPOT and TTFT, and when an
interval breaks them.

An `Slo` bounds one quantile (p50, p90 or p99) of time per output token (TPOT) and/or time to first
token (TTFT). A larger batch cap makes every decode step longer (more sequences per step) and a
lower power cap slows every step, so the SLO bounds the batch, and cap and batch trade off against
it: the selection (`pals.control.policies.selection.slo_mask`) keeps only configurations predicted
to meet it.

An interval breaks the SLO (`slo_breaches`) when requests ran (a latency figure with a count, and
requests running or waiting at the end of the interval) and the node's reported quantile of TPOT
(or TTFT) is above the objective. The node's latency figures cover its own recent window (the
simulator: the last 30 s of requests; vLLM: the requests since the previous scrape), so a change of
configuration shows in them with that lag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from pals.errors import ConfigError

SLO_QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99)
"""The quantiles an SLO may bound (those nodes report)."""
DEFAULT_SLO_QUANTILE = 0.99
"""The quantile an SLO bounds unless told otherwise."""
MAX_TPOT_MS = 60_000.0
"""Largest TPOT objective accepted (a minute per token is no objective). Units: ms."""
MAX_TTFT_S = 3_600.0
"""Largest TTFT objective accepted. Units: s."""


def _bounded(name: str, value: Any, high: float, unit: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"SLO {name} must be a number, got {value!r}")
    if not 0 < value <= high:
        raise ConfigError(f"SLO {name} must be > 0 and at most {high:g} {unit}, got {value!r}")


@dataclass(frozen=True)
class Slo:
    """A latency objective on TPOT and/or TTFT at one quantile (at least one of the two set)."""

    tpot_ms: float | None = None
    """Objective on the time per output token (after the first). None: no TPOT objective. Units: ms."""
    ttft_s: float | None = None
    """Objective on the time to first token. None: no TTFT objective. Units: s."""
    quantile: float = DEFAULT_SLO_QUANTILE
    """The quantile both objectives bound: 0.5, 0.9 or 0.99."""

    def __post_init__(self) -> None:
        _bounded("tpot_ms", self.tpot_ms, MAX_TPOT_MS, "ms")
        _bounded("ttft_s", self.ttft_s, MAX_TTFT_S, "s")
        if self.tpot_ms is None and self.ttft_s is None:
            raise ConfigError("an SLO needs tpot_ms or ttft_s (or both); to remove the SLO, set none")
        if isinstance(self.quantile, bool) or self.quantile not in SLO_QUANTILES:
            raise ConfigError(f"SLO quantile must be one of {', '.join(map(str, SLO_QUANTILES))}, got {self.quantile!r}")

    @property
    def tpot_s(self) -> float | None:
        """The TPOT objective in seconds (None without one). Units: s."""
        return None if self.tpot_ms is None else self.tpot_ms / 1000.0

    @property
    def label(self) -> str:
        """The quantile as a percentile name: "p50", "p90", "p99"."""
        return f"p{round(self.quantile * 100):d}"

    def describe(self) -> str:
        parts = ([] if self.tpot_ms is None else [f"TPOT {self.label} <= {self.tpot_ms:g} ms"]) + \
                ([] if self.ttft_s is None else [f"TTFT {self.label} <= {self.ttft_s:g} s"])
        return " and ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"tpot_ms": self.tpot_ms, "ttft_s": self.ttft_s, "quantile": self.quantile}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "Slo | None":
        """Read `to_json` output (or a `PUT /slo` body) back; None when both objectives are null."""
        if data is None:
            return None
        if not isinstance(data, Mapping):
            raise ConfigError(f"an SLO must be a JSON object like {{\"tpot_ms\": 50, \"ttft_s\": 2.0}}, got {data!r}")
        unknown = set(data) - {"tpot_ms", "ttft_s", "quantile"}
        if unknown:
            raise ConfigError(f"unknown SLO key(s) {', '.join(sorted(map(repr, unknown)))}; "
                              "use tpot_ms, ttft_s and quantile")
        if data.get("tpot_ms") is None and data.get("ttft_s") is None:
            return None
        quantile = data.get("quantile")
        return cls(data.get("tpot_ms"), data.get("ttft_s"), DEFAULT_SLO_QUANTILE if quantile is None else quantile)


def slo_breaches(slo: Slo | None, tpot_s: float | None, ttft_s: float | None, requests_active: bool) -> tuple[bool, bool]:
    """(TPOT broken, TTFT broken) for one interval: the reported quantile (`tpot_s`, `ttft_s`, at
    `slo.quantile`; None when not reported) above the objective while requests ran."""
    if slo is None or not requests_active:
        return False, False
    tpot = slo.tpot_s is not None and tpot_s is not None and tpot_s > slo.tpot_s
    ttft = slo.ttft_s is not None and ttft_s is not None and ttft_s > slo.ttft_s
    return bool(tpot), bool(ttft)
