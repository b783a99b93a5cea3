"""Split a cluster power budget across nodes: QoS first, then efficiency.

A pure function: no I/O, no clocks. The coordinator feeds it one `NodeDemand`
per node (built from that node's status and its predicted frontier) and pushes
the resulting per-node budgets back through each node's endpoint.

The rule, in three passes (each node's share never leaves
[floor_w, ceiling_w], and the shares never sum to more than the cluster budget):

1. **Floors.** Every node gets the least it can draw (all GPUs at their lowest
   cap, engine busy). If even the floors do not fit, every node gets the same
   fraction of its floor and the allocation is marked infeasible: no node is
   switched off, because the coordinator does not own admission.
2. **QoS.** Each node is raised to the power its frontier says it needs to
   serve its throughput target (or its offered load, if lower). When the needs
   do not all fit, the budget is water-filled on the *fraction of target* each
   node reaches (max-min fairness): every node gets the power for the same
   fraction f of its target, with f as large as the budget allows. Node order
   plays no part, so no model is starved to save another; `priority` can
   weight the fraction (a node with priority 2 is filled to min(1, 2f)).
3. **Slack.** What is left goes, in `step_w` increments, to the node whose
   next increment buys the most *useful* throughput (throughput up to its
   offered load), i.e. the highest marginal tokens per joule. When no increment
   buys anything, the remainder is spread over the nodes' headroom (up to each
   ceiling) in proportion to it, as a margin for load bursts and prediction
   error; anything beyond every ceiling stays unallocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from pals.errors import ConfigError


@dataclass(frozen=True)
class Frontier:
    """Best predicted throughput of one node at each node power budget.

    Points are (node_power_w, throughput_tps), sorted by power, with throughput
    made non-decreasing (a larger budget can always reuse a smaller budget's
    configuration).
    """

    node_power_w: tuple[float, ...]
    throughput_tps: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.node_power_w) != len(self.throughput_tps) or not self.node_power_w:
            raise ConfigError(
                "a frontier needs the same non-zero number of power and throughput points; "
                f"got {len(self.node_power_w)} and {len(self.throughput_tps)}"
            )
        if not all(math.isfinite(x) for x in (*self.node_power_w, *self.throughput_tps)):
            raise ConfigError("a frontier's power and throughput points must be finite numbers")

    @classmethod
    def from_points(cls, points: Sequence[tuple[float, float]]) -> "Frontier":
        """Build the upper envelope of (node_power_w, throughput_tps) points.

        Args:
            points: any configurations' predicted (power, throughput), in any order.

        Returns:
            The frontier: for each distinct power, the best throughput at that power or less.
        """
        if not points:
            raise ConfigError("a frontier needs at least one (power, throughput) point")
        ordered = sorted((float(p), float(t)) for p, t in points)
        powers: list[float] = []
        tputs: list[float] = []
        best = -math.inf
        for power_w, tps in ordered:
            best = max(best, tps)
            if powers and power_w == powers[-1]:
                tputs[-1] = best
            else:
                powers.append(power_w)
                tputs.append(best)
        return cls(tuple(powers), tuple(tputs))

    def throughput_at(self, node_power_w: float) -> float:
        """Best throughput within `node_power_w` (linear between points, 0 below the first)."""
        powers, tputs = self.node_power_w, self.throughput_tps
        if node_power_w < powers[0]:
            return 0.0
        if node_power_w >= powers[-1]:
            return tputs[-1]
        for i in range(1, len(powers)):
            if node_power_w < powers[i]:
                span = powers[i] - powers[i - 1]
                frac = (node_power_w - powers[i - 1]) / span
                return tputs[i - 1] + frac * (tputs[i] - tputs[i - 1])
        return tputs[-1]  # pragma: no cover - loop always returns

    def power_for(self, throughput_tps: float) -> float:
        """Least node power whose throughput reaches `throughput_tps`; inf if none does."""
        powers, tputs = self.node_power_w, self.throughput_tps
        if throughput_tps <= tputs[0]:
            return powers[0]
        for i in range(1, len(powers)):
            if tputs[i] >= throughput_tps:
                rise = tputs[i] - tputs[i - 1]
                frac = 0.0 if rise <= 0 else (throughput_tps - tputs[i - 1]) / rise
                return powers[i - 1] + frac * (powers[i] - powers[i - 1])
        return math.inf


@dataclass(frozen=True)
class NodeDemand:
    """What the allocator needs to know about one node."""

    name: str
    floor_w: float
    """Least node power the node can be held to (lowest cap, engine busy). Units: W."""
    ceiling_w: float
    """Most node power the node can use (its natural draw at its largest configuration). Units: W."""
    target_tps: float
    """Throughput target (QoS). Units: tokens/s."""
    frontier: Frontier
    demand_tps: float = math.inf
    """Offered load: throughput above it buys nothing. Units: tokens/s."""
    priority: float = 1.0
    """Weight on the QoS fraction when needs do not fit (2 = filled twice as fast)."""

    def __post_init__(self) -> None:
        for label, value in (("floor_w", self.floor_w), ("ceiling_w", self.ceiling_w),
                             ("target_tps", self.target_tps), ("priority", self.priority)):
            if not math.isfinite(value):
                raise ConfigError(f"node {self.name!r}: {label} must be a finite number, got {value!r}")
        if math.isnan(self.demand_tps) or self.demand_tps < 0:
            raise ConfigError(f"node {self.name!r}: demand_tps must be >= 0 (inf: unbounded), got {self.demand_tps!r}")
        if not 0 <= self.floor_w <= self.ceiling_w:
            raise ConfigError(
                f"node {self.name!r}: floor_w {self.floor_w:g} W must be between 0 and "
                f"ceiling_w {self.ceiling_w:g} W"
            )
        if self.target_tps < 0:
            raise ConfigError(f"node {self.name!r}: target_tps must be >= 0, got {self.target_tps:g}")
        if self.priority <= 0:
            raise ConfigError(f"node {self.name!r}: priority must be positive, got {self.priority:g}")

    def need_w(self, fraction: float = 1.0) -> float:
        """Power to serve `fraction` of the QoS target (clamped to [floor_w, ceiling_w])."""
        wanted_tps = min(self.target_tps, self.demand_tps) * fraction
        if wanted_tps <= 0:
            return self.floor_w  # nothing to serve: the floor (a frontier may start above it)
        power_w = self.frontier.power_for(wanted_tps)
        return min(self.ceiling_w, max(self.floor_w, power_w))

    def useful_tps(self, node_power_w: float) -> float:
        """Throughput at `node_power_w` that the offered load can actually use."""
        return min(self.frontier.throughput_at(node_power_w), self.demand_tps)


@dataclass(frozen=True)
class Allocation:
    """Per-node budgets and how they were reached."""

    budgets_w: dict[str, float]
    qos_fraction: float
    """Fraction of every node's target the QoS pass could fund (1.0 = all met)."""
    feasible: bool
    """False when even the nodes' floors exceed the cluster budget."""
    unallocated_w: float
    need_w: dict[str, float] = field(default_factory=dict)
    """Power each node needs for its full target (before the budget). Units: W."""

    @property
    def total_w(self) -> float:
        return float(sum(self.budgets_w.values()))


def allocate(nodes: Sequence[NodeDemand], cluster_budget_w: float, step_w: float = 10.0) -> Allocation:
    """Split `cluster_budget_w` across `nodes` (rule in the module docstring).

    Args:
        nodes: one demand per node; names must be unique.
        cluster_budget_w: total node (wall) power allowed. Units: W.
        step_w: increment of the slack pass. Units: W.

    Returns:
        An `Allocation` whose budgets sum to at most `cluster_budget_w`.
    """
    if not math.isfinite(cluster_budget_w) or cluster_budget_w <= 0:
        raise ConfigError(f"cluster_budget_w must be positive, got {cluster_budget_w:g} W")
    if not math.isfinite(step_w) or step_w <= 0:
        raise ConfigError(f"step_w must be positive, got {step_w:g} W")
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise ConfigError(f"node names must be unique, got {names}")
    if not nodes:
        return Allocation({}, 1.0, True, cluster_budget_w)

    full_need = {n.name: n.need_w(1.0) for n in nodes}
    floor_total_w = sum(n.floor_w for n in nodes)
    if floor_total_w > cluster_budget_w:
        scale = cluster_budget_w / floor_total_w
        budgets = {n.name: n.floor_w * scale for n in nodes}
        return Allocation(budgets, 0.0, False, 0.0, full_need)

    # QoS pass.
    if sum(full_need.values()) <= cluster_budget_w:
        budgets = dict(full_need)
        fraction = 1.0
    else:
        fraction = _max_fair_fraction(nodes, cluster_budget_w)
        budgets = {n.name: n.need_w(min(1.0, fraction * n.priority)) for n in nodes}

    # Slack pass: greedy by marginal useful tokens/J.
    left_w = cluster_budget_w - sum(budgets.values())
    by_name = {n.name: n for n in nodes}
    while left_w > 1e-9:
        increment_w = min(step_w, left_w)
        best_name, best_gain = None, 0.0
        for name, node in by_name.items():
            room_w = min(increment_w, node.ceiling_w - budgets[name])
            if room_w <= 1e-9:
                continue
            gain = (node.useful_tps(budgets[name] + room_w) - node.useful_tps(budgets[name])) / room_w
            if gain > best_gain + 1e-12:
                best_name, best_gain = name, gain
        if best_name is None:
            break
        room_w = min(increment_w, by_name[best_name].ceiling_w - budgets[best_name])
        budgets[best_name] += room_w
        left_w -= room_w

    # Margin pass: spread what buys nothing now over the headroom.
    headroom = {name: by_name[name].ceiling_w - budgets[name] for name in budgets}
    headroom_total_w = sum(max(0.0, h) for h in headroom.values())
    if left_w > 1e-9 and headroom_total_w > 1e-9:
        share_w = min(left_w, headroom_total_w)
        for name, room_w in headroom.items():
            budgets[name] += share_w * max(0.0, room_w) / headroom_total_w
        left_w -= share_w
    return Allocation(budgets, fraction, True, max(0.0, left_w), full_need)


def _max_fair_fraction(nodes: Sequence[NodeDemand], cluster_budget_w: float) -> float:
    """Largest f in [0, 1] with sum(need_w(min(1, f * priority))) <= budget (bisection)."""
    def total(fraction: float) -> float:
        return sum(n.need_w(min(1.0, fraction * n.priority)) for n in nodes)

    low, high = 0.0, 1.0
    for _ in range(50):
        mid = 0.5 * (low + high)
        if total(mid) <= cluster_budget_w:
            low = mid
        else:
            high = mid
    return low
