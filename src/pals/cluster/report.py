"""What the coordinator did in one round, as typed records (`RoundReport`, `NodeRound`).

`pals coordinate` prints and logs them; a metrics exporter can read
`Coordinator.last_report` (every figure has its unit in its name). Budgets here
are node (wall) power budgets in W; "counted" means what the coordinator held
against the cluster budget for that node (see `pals.cluster.coordinator` for
what is safe to count when a node is down or runs without a budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pals.cluster.allocation import Allocation
from pals.cluster.client import NodeStatus


@dataclass(frozen=True)
class NodeRound:
    """One node in one round."""

    name: str
    up: bool
    """True when the node answered GET /status this round."""
    error: str | None
    """Why it was down, or why a write to it failed (None: all went well)."""
    budget_reported_w: float | None
    """Node budget in force as the node reported it (None: down, no budget, or not a node budget)."""
    budget_counted_start_w: float
    """What was counted against the cluster for this node before any write: the reported budget,
    its maximum draw if it runs without a budget, its last safe budget if it is down. Units: W."""
    budget_planned_w: float | None
    """This node's share of the cluster budget (None: down, so not planned). Units: W."""
    budget_written_w: float | None
    """Budget sent with PUT /budget this round (None: nothing sent). Units: W."""
    budget_in_force_w: float
    """What is counted for this node after the round: the written budget once the node confirmed
    it; after a failed write, the larger of before and after (the write may or may not have taken
    effect). Units: W."""
    drift: str | None
    """"missing" (the node reports no node budget: restarted, removed or never set), "changed"
    (it differs from what the coordinator last knew: set by someone else) or None."""
    reconciled: bool
    """True when a drifted budget was overwritten with the plan this round."""
    clipped: bool
    """True when a raise was cut short so the budgets in force could not exceed the cluster
    budget (another node did not confirm a decrease)."""
    target_written_tps: float | None
    """Target sent with PUT /target this round (None: nothing sent). Units: tokens/s."""
    read_s: float
    """Time spent reading this node (status and frontier). Units: s."""

    @property
    def write_failed(self) -> bool:
        return self.up and self.error is not None


@dataclass(frozen=True)
class RoundReport:
    """One coordinator round: what was read, how the budget was split, what was written."""

    round_index: int
    time_s: float | None
    """Latest node clock among the answers (the nodes' own `time_s`). Units: s."""
    duration_s: float
    """Wall time the round took, reads and writes. Units: s."""
    cluster_budget_w: float
    reserved_down_w: float
    """Counted for nodes that are down (their last safe budgets); the rest went to healthy nodes. Units: W."""
    in_force_start_w: float
    """Sum counted before the round's writes (above the cluster budget after an out-of-band raise). Units: W."""
    in_force_end_w: float
    """Sum counted after the round's writes. Units: W."""
    nodes: dict[str, NodeRound]
    actions: tuple[str, ...]
    """One line per thing done or seen (write, rewrite, node down, clipped raise)."""
    allocation: Allocation
    """The split among the nodes that answered (over the budget left after the reserve)."""
    statuses: dict[str, NodeStatus] = field(default_factory=dict, repr=False)
    """Statuses of the nodes that answered."""
    demand_tps: dict[str, float] = field(default_factory=dict)
    """Offered-load estimate per node that answered (inf: work queues up). Units: tokens/s."""

    @property
    def nodes_up(self) -> int:
        return sum(1 for n in self.nodes.values() if n.up)

    @property
    def nodes_down(self) -> int:
        return len(self.nodes) - self.nodes_up

    @property
    def over_budget_w(self) -> float:
        """How far the sum counted after the round is above the cluster budget (0 when within). Units: W."""
        return max(0.0, self.in_force_end_w - self.cluster_budget_w)

    @property
    def budgets_written(self) -> dict[str, float]:
        return {k: n.budget_written_w for k, n in self.nodes.items() if n.budget_written_w is not None}

    @property
    def targets_written(self) -> dict[str, float]:
        return {k: n.target_written_tps for k, n in self.nodes.items() if n.target_written_tps is not None}

    def summary_line(self) -> str:
        """One line for a terminal."""
        budgets = ", ".join(
            f"{k} {n.budget_in_force_w:.0f} W" + ("" if n.up else " [down]") for k, n in self.nodes.items()
        )
        return (
            f"round {self.round_index}: {budgets} (total {self.in_force_end_w:.0f} of {self.cluster_budget_w:.0f} W, "
            f"{self.nodes_up} up, {self.nodes_down} down, QoS fraction {self.allocation.qos_fraction:.2f}, "
            f"{self.duration_s:.2f} s)"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (one line of `pals coordinate --log`)."""

        def clean(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else round(float(x), 2)

        return {
            "round": self.round_index,
            "time_s": self.time_s,
            "duration_s": round(self.duration_s, 4),
            "cluster_budget_w": self.cluster_budget_w,
            "reserved_down_w": round(self.reserved_down_w, 1),
            "in_force_start_w": round(self.in_force_start_w, 1),
            "in_force_end_w": round(self.in_force_end_w, 1),
            "budgets_w": {k: round(n.budget_in_force_w, 1) for k, n in self.nodes.items()},
            "planned_w": {k: clean(n.budget_planned_w) for k, n in self.nodes.items()},
            "need_w": {k: clean(v) for k, v in self.allocation.need_w.items()},
            "qos_fraction": round(self.allocation.qos_fraction, 4),
            "feasible": self.allocation.feasible,
            "unallocated_w": round(self.allocation.unallocated_w, 1),
            "demand_tps": {k: clean(v) for k, v in self.demand_tps.items()},
            "throughput_tps": {k: clean(s.throughput_tps) for k, s in self.statuses.items()},
            "node_power_w": {k: clean(s.node_power_w) for k, s in self.statuses.items()},
            "budgets_written": {k: round(v, 1) for k, v in self.budgets_written.items()},
            "targets_written": {k: round(v, 1) for k, v in self.targets_written.items()},
            "nodes": {
                k: {
                    "up": n.up,
                    "error": n.error,
                    "budget_reported_w": clean(n.budget_reported_w),
                    "budget_counted_start_w": clean(n.budget_counted_start_w),
                    "budget_written_w": clean(n.budget_written_w),
                    "budget_in_force_w": clean(n.budget_in_force_w),
                    "drift": n.drift,
                    "reconciled": n.reconciled,
                    "clipped": n.clipped,
                    "read_s": round(n.read_s, 4),
                }
                for k, n in self.nodes.items()
            },
            "actions": list(self.actions),
        }
