"""The node-power line: wall power estimated from GPU power instead of polling IPMI.

PALS paper, section 3.1: P_node = alpha x sum(P_gpu) + beta, fitted on 4x A100 nodes with
alpha ~ 1.05 and beta ~ 340-350 W (R^2 ~ 0.98, MAE 12-27 W). `pals fit` refits both from a
profile that carries measured node power (`pals.model.syspower`); without one the paper's
values below stand.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_ALPHA = 1.05
"""Wall watts per GPU watt (PALS section 3.1: fitted alpha ~ 1.05)."""
PAPER_BETA_W = 345.0
"""Wall power with the GPUs drawing nothing: CPUs, memory, fans, PSU losses (PALS: 340-350 W). Units: W."""


@dataclass(frozen=True)
class NodePowerModel:
    """P_node = alpha * sum(P_gpu) + beta_w, used when the node reports no wall power."""

    alpha: float = PAPER_ALPHA
    """Wall watts per GPU watt."""
    beta_w: float = PAPER_BETA_W
    """Wall power at zero GPU power. Units: W."""

    def node_w(self, gpu_power_total_w: float) -> float:
        """Wall power of a node whose GPUs draw `gpu_power_total_w` together. Units: W."""
        return self.alpha * gpu_power_total_w + self.beta_w

    def gpu_w(self, node_power_w: float) -> float:
        """Inverse: the GPU total that gives `node_power_w`. Units: W."""
        return (node_power_w - self.beta_w) / self.alpha
