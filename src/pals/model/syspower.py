"""System (wall) power from GPU power: P_node = alpha * sum(P_gpu) + beta.

The PALS paper estimates node power from GPU power with a fitted line instead
of polling IPMI every interval (alpha ~ 1.05, beta ~ 340-350 W on 4x A100,
R^2 ~ 0.98, MAE 12-27 W). `fit_syspower` refits it from profile rows that
carry measured node power; without such rows the paper's values are used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import numpy as np

from pals.core.power import PAPER_ALPHA, PAPER_BETA_W
from pals.core.untrusted import is_real_number, number_in, show
from pals.errors import ConfigError, ProfileError

SOURCES = ("fitted", "paper-default")


@dataclass(frozen=True)
class SysPowerFit:
    """A fitted (or default) node-power line.

    Attributes:
        alpha: Node watts per summed GPU watt.
        beta_w: Node power at zero GPU power. Units: W.
        r2: Coefficient of determination on the fitted rows (NaN for the paper default).
        mae_w: Mean absolute error on the fitted rows. Units: W (NaN for the default).
        n_rows: Rows fitted (0 for the default).
        source: "fitted" or "paper-default".
    """

    alpha: float = PAPER_ALPHA
    beta_w: float = PAPER_BETA_W
    r2: float = float("nan")
    mae_w: float = float("nan")
    n_rows: int = 0
    source: str = "paper-default"

    def __post_init__(self) -> None:
        # Wide ranges: a fit on an odd profile may be far from the paper's 1.05 and 345 W, but not this far.
        number_in(self.alpha, "alpha", -1e3, 1e3, where="node-power line ")
        number_in(self.beta_w, "beta_w", -1e6, 1e6, "W", where="node-power line ")
        for name in ("r2", "mae_w"):  # NaN is the documented "not fitted" value
            if not is_real_number(getattr(self, name)):
                raise ConfigError(f"node-power line {name} must be a number (NaN when not fitted), got {show(getattr(self, name))}")
        if not isinstance(self.n_rows, int) or isinstance(self.n_rows, bool) or self.n_rows < 0:
            raise ConfigError(f"node-power line n_rows must be a whole number >= 0, got {show(self.n_rows)}")
        if self.source not in SOURCES:
            raise ConfigError(f"node-power line source must be one of {', '.join(SOURCES)}, got {show(self.source)}")

    def node_power_w(self, gpu_power_total_w):
        """Predicted node power for a summed GPU power (scalar or array). Units: W."""
        return self.alpha * np.asarray(gpu_power_total_w, dtype=np.float64) + self.beta_w

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SysPowerFit":
        """The inverse of `to_dict`, validated (a saved predictor's header is untrusted input).

        Raises:
            ConfigError: not a mapping, unknown or missing keys, or a field out of its domain.
        """
        names = {f.name for f in fields(cls)}
        if not isinstance(data, Mapping) or set(data) != names:
            raise ConfigError(f"node-power line must have exactly the keys {', '.join(sorted(names))}")
        return cls(**data)


def fit_syspower(gpu_power_total_w, node_power_w) -> SysPowerFit:
    """Least-squares fit of node power against summed GPU power.

    Args:
        gpu_power_total_w: Summed GPU power per row. Units: W.
        node_power_w: Measured node power per row (NaN rows are ignored). Units: W.

    Raises:
        ProfileError: fewer than 3 rows with node power, or GPU power that does not vary.
    """
    x = np.asarray(gpu_power_total_w, dtype=np.float64)
    y = np.asarray(node_power_w, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        raise ProfileError(
            f"need at least 3 profile rows with node power to fit P_node = alpha*P_gpu + beta, got {x.size}; "
            "profile on a node that reports node power, or use the paper's alpha 1.05, beta 345 W"
        )
    if np.ptp(x) <= 0:
        raise ProfileError("GPU power does not vary across the profile rows; profile several power caps to fit node power")
    design = np.column_stack([x, np.ones_like(x)])
    (alpha, beta), *_ = np.linalg.lstsq(design, y, rcond=None)
    fitted = alpha * x + beta
    ss_res = float(np.sum((y - fitted) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return SysPowerFit(
        alpha=float(alpha),
        beta_w=float(beta),
        r2=float(r2),
        mae_w=float(np.mean(np.abs(y - fitted))),
        n_rows=int(x.size),
        source="fitted",
    )


def syspower_from_profile(profile) -> SysPowerFit:
    """Fit from a profile's rows when they carry node power, else the paper's default line."""
    node_w = profile.column("node_power_w")
    if np.sum(np.isfinite(node_w)) >= 3:
        try:
            return fit_syspower(profile.column("gpu_power_total_w"), node_w)
        except ProfileError:
            pass  # GPU power does not vary (one configuration): the line is not identifiable
    return SysPowerFit()
