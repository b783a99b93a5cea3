"""The cluster coordinator: every few seconds, re-split the cluster budget across nodes.

"The cluster decides where and how much, the node decides how" (PALS paper, limits):
each round the coordinator reads every node's status through its endpoint,
builds one `NodeDemand` per node (the node's predicted frontier, its QoS
target, an estimate of its offered load), splits the cluster budget with
`allocation.allocate` (QoS first, then marginal tokens/J) and pushes each
node's budget and target back through the same endpoint.

Two safety rules on the writes:
- budgets that go down are written before budgets that go up, so the budgets
  in force never sum to more than the cluster budget, even mid-round;
- a node whose budget moves by less than `min_change_w` is left alone (fewer
  writes and less churn in the nodes' hysteresis), unless skipping it would
  leave the budgets in force above the cluster budget.

Where a node's frontier comes from, in order: a `frontier_sources[name]`
callable given by the caller (the experiments fit each node's predictor
in-process), the node's GET /frontier, else a linear estimate from its status
(`linear_frontier`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from pals.core.power import PAPER_ALPHA, PAPER_BETA_W
from pals.core.clock import Clock
from pals.cluster.allocation import Allocation, Frontier, NodeDemand, allocate
from pals.cluster.client import NodeClient, NodeStatus
from pals.errors import ConfigError

FrontierSource = Callable[[NodeStatus], Frontier]



def linear_frontier(status: NodeStatus, alpha: float = PAPER_ALPHA, beta_w: float = PAPER_BETA_W) -> Frontier:
    """Last-resort frontier from one status: throughput proportional to GPU power.

    Spans the node power at the lowest and highest GPU caps; throughput scales
    with GPU power from the node's last (power, throughput) reading. Crude (it
    ignores that tokens/J changes with the cap), so the coordinator uses it
    only when neither a predictor nor the node's /frontier is available.
    """
    gpus = status.num_gpus or 4
    cap_min_w = status.power_cap_min_w or 100.0
    cap_max_w = status.power_cap_max_w or 400.0
    floor_w = alpha * gpus * cap_min_w + beta_w
    ceiling_w = alpha * gpus * cap_max_w + beta_w
    power_now_w = status.node_power_w or ceiling_w
    tps_now = status.throughput_tps or 0.0
    gpu_now_w = max(1.0, (power_now_w - beta_w) / alpha)
    points = []
    for i in range(9):
        node_w = floor_w + (ceiling_w - floor_w) * i / 8
        gpu_w = (node_w - beta_w) / alpha
        points.append((node_w, tps_now * min(gpu_w, gpu_now_w * 1.5) / gpu_now_w))
    return Frontier.from_points(points)


@dataclass(frozen=True)
class CoordinatorRound:
    """One round: what was read, how the budget was split, what was written."""

    round_index: int
    time_s: float | None
    statuses: dict[str, NodeStatus]
    allocation: Allocation
    demand_tps: dict[str, float]
    budgets_written: dict[str, float]
    targets_written: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else round(float(x), 2)

        return {
            "round": self.round_index,
            "time_s": self.time_s,
            "budgets_w": {k: round(v, 1) for k, v in self.allocation.budgets_w.items()},
            "need_w": {k: clean(v) for k, v in self.allocation.need_w.items()},
            "qos_fraction": round(self.allocation.qos_fraction, 4),
            "feasible": self.allocation.feasible,
            "unallocated_w": round(self.allocation.unallocated_w, 1),
            "demand_tps": {k: clean(v) for k, v in self.demand_tps.items()},
            "throughput_tps": {k: clean(s.throughput_tps) for k, s in self.statuses.items()},
            "node_power_w": {k: clean(s.node_power_w) for k, s in self.statuses.items()},
            "budgets_written": {k: round(v, 1) for k, v in self.budgets_written.items()},
            "targets_written": {k: round(v, 1) for k, v in self.targets_written.items()},
        }


@dataclass
class Coordinator:
    """Splits `cluster_budget_w` across `clients` every round (rule: `pals.cluster.allocation`).

    Args:
        clients: one `NodeClient` per node; names must be unique.
        cluster_budget_w: total node (wall) power of the cluster. Units: W.
        targets_tps: QoS throughput target per node name (a node without one gets target 0:
            it is served from the slack only).
        frontier_sources: per node name, a callable status -> Frontier (optional).
        priorities: per node name, weight on its QoS fraction when needs do not fit.
        step_w: increment of the slack pass. Units: W.
        min_change_w: smaller budget moves are not written. Units: W.
        demand_margin: a node that served all its load is assumed able to use this much more
            (fraction) before extra power stops buying throughput.
        load_smoothing: weight of the newest throughput reading in the offered-load estimate (EWMA).
    """

    clients: Sequence[NodeClient]
    cluster_budget_w: float
    targets_tps: Mapping[str, float] = field(default_factory=dict)
    frontier_sources: Mapping[str, FrontierSource] = field(default_factory=dict)
    priorities: Mapping[str, float] = field(default_factory=dict)
    step_w: float = 10.0
    min_change_w: float = 10.0
    demand_margin: float = 0.15
    load_smoothing: float = 0.3
    rounds: list[CoordinatorRound] = field(default_factory=list, init=False, repr=False)
    _written_budget_w: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _written_target_tps: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _load_tps: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.clients]
        if not names:
            raise ConfigError("the coordinator needs at least one node; give --node URL")
        if len(set(names)) != len(names):
            raise ConfigError(f"node names must be unique, got {names}")
        if not math.isfinite(self.cluster_budget_w) or self.cluster_budget_w <= 0:
            raise ConfigError(f"cluster_budget_w must be a positive number of watts, got {self.cluster_budget_w!r}")
        unknown = set(self.targets_tps) - set(names)
        if unknown:
            raise ConfigError(f"targets given for unknown nodes {sorted(unknown)}; node names are {names}")
        for name, target in self.targets_tps.items():
            if not math.isfinite(target) or target < 0:
                raise ConfigError(f"target for node {name} must be >= 0 tokens/s, got {target!r}")

    def _frontier(self, client: NodeClient, status: NodeStatus) -> Frontier:
        source = self.frontier_sources.get(client.name)
        if source is not None:
            return source(status)
        served = client.frontier()
        return served if served is not None else linear_frontier(status)

    def _demand_tps(self, status: NodeStatus) -> float:
        """Offered load estimate: unbounded while work queues up, else the smoothed served rate."""
        measured = status.throughput_tps
        if measured is None:
            return math.inf
        previous = self._load_tps.get(status.name, measured)
        smoothed = previous + self.load_smoothing * (measured - previous)
        self._load_tps[status.name] = smoothed
        if not status.demand_limited:
            return math.inf
        return max(smoothed, measured) * (1.0 + self.demand_margin)

    def step(self) -> CoordinatorRound:
        """One round: read every node, split the budget, write budgets (down first) and targets."""
        statuses = {c.name: c.status() for c in self.clients}
        demands = []
        demand_tps = {}
        for client in self.clients:
            status = statuses[client.name]
            frontier = self._frontier(client, status)
            demand_tps[client.name] = self._demand_tps(status)
            demands.append(
                NodeDemand(
                    name=client.name,
                    floor_w=frontier.node_power_w[0],
                    ceiling_w=frontier.node_power_w[-1],
                    target_tps=float(self.targets_tps.get(client.name, 0.0)),
                    frontier=frontier,
                    demand_tps=demand_tps[client.name],
                    priority=float(self.priorities.get(client.name, 1.0)),
                )
            )
        result = allocate(demands, self.cluster_budget_w, step_w=self.step_w)
        budgets_written = self._write_budgets(result.budgets_w)
        targets_written = {}
        for client in self.clients:
            target = self.targets_tps.get(client.name)
            if target and self._written_target_tps.get(client.name) != target:
                client.set_target(target)
                self._written_target_tps[client.name] = target
                targets_written[client.name] = target
        times = [s.time_s for s in statuses.values() if s.time_s is not None]
        record = CoordinatorRound(
            round_index=len(self.rounds),
            time_s=max(times) if times else None,
            statuses=statuses,
            allocation=result,
            demand_tps=demand_tps,
            budgets_written=budgets_written,
            targets_written=targets_written,
        )
        self.rounds.append(record)
        return record

    def _write_budgets(self, budgets_w: Mapping[str, float]) -> dict[str, float]:
        planned = dict(self._written_budget_w)
        changes = {}
        for name, budget_w in budgets_w.items():
            if name not in planned or abs(budget_w - planned[name]) >= self.min_change_w:
                changes[name] = budget_w
        # Skipping a small move must not leave the budgets in force above the cluster budget.
        if sum({**planned, **changes}.values()) > self.cluster_budget_w + 1e-6:
            changes = dict(budgets_w)
        by_name = {c.name: c for c in self.clients}
        # Decreases first: the budgets in force never sum above the cluster budget mid-round.
        order = sorted(changes, key=lambda n: changes[n] - self._written_budget_w.get(n, math.inf))
        for name in order:
            by_name[name].set_budget(changes[name])
            self._written_budget_w[name] = changes[name]
        return changes

    def run(self, clock: Clock, interval_s: float, duration_s: float | None = None, on_round=None) -> list[CoordinatorRound]:
        """Run rounds every `interval_s` on `clock` until `duration_s` (forever if None).

        Args:
            clock: a WallClock for real nodes.
            interval_s: seconds between rounds.
            duration_s: stop after this long (None: until interrupted).
            on_round: called with each `CoordinatorRound` (e.g. to print it).
        """
        if interval_s <= 0:
            raise ConfigError(f"interval_s must be positive, got {interval_s:g}")
        start_s = clock.now_s()
        next_s = start_s
        while duration_s is None or clock.now_s() - start_s < duration_s:
            record = self.step()
            if on_round is not None:
                on_round(record)
            next_s += interval_s
            clock.wait_until(next_s)
        return self.rounds
