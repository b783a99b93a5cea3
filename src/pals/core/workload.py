"""What a predictor may know about a workload: mean lengths and offered rate, not the sequence."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from pals.core.untrusted import is_real_number, show
from pals.errors import ConfigError


def _finite_real(value: Any) -> bool:
    """A real number (not bool) that is finite; an int too large for a float is not."""
    try:
        return is_real_number(value) and math.isfinite(value)
    except OverflowError:
        return False


@dataclass(frozen=True)
class WorkloadDescriptor:
    """The workload a configuration is measured (or predicted) under."""

    mean_prompt_tokens: float
    """Mean prompt length. Units: tokens."""
    mean_output_tokens: float
    """Mean generated length. Units: tokens."""
    arrival_rate_rps: float | None = None
    """Offered load in requests/s; None means saturating (requests always waiting, so the
    batch cap is always full)."""
    name: str = field(default="workload", compare=False)
    """A label for logs (not part of the identity)."""

    def __post_init__(self) -> None:
        for key in ("mean_prompt_tokens", "mean_output_tokens"):
            value = getattr(self, key)
            if not (_finite_real(value) and value > 0):
                raise ConfigError(f"workload {key} must be a positive number of tokens, got {show(value)}")
        rate = self.arrival_rate_rps
        if rate is not None and not (_finite_real(rate) and rate > 0):
            raise ConfigError(
                f"workload arrival_rate_rps must be positive requests/s or None for saturating, got {show(rate)}"
            )

    @property
    def saturating(self) -> bool:
        return self.arrival_rate_rps is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean_prompt_tokens": float(self.mean_prompt_tokens),
            "mean_output_tokens": float(self.mean_output_tokens),
            "arrival_rate_rps": None if self.arrival_rate_rps is None else float(self.arrival_rate_rps),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WorkloadDescriptor":
        try:
            rate = data.get("arrival_rate_rps")
            return cls(float(data["mean_prompt_tokens"]), float(data["mean_output_tokens"]),
                       None if rate is None else float(rate))
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            raise ConfigError(f"workload description {show(dict(data), 80)} is malformed: {error}") from None
