"""The cluster coordinator: every few seconds, re-split the cluster budget across nodes.

"The cluster decides where and how much, the node decides how" (PALS paper, limits):
each round the coordinator reads every node's status through its endpoint
(in parallel, each read bounded by the client's deadline), builds one
`NodeDemand` per node that answered (its predicted frontier, its QoS target,
an estimate of its offered load), splits the budget with `allocation.allocate`
(QoS first, then marginal tokens/J) and pushes each node's budget and target
back through the same endpoint.

The cluster budget is enforced against what the nodes *report*, not against
what the coordinator last wrote: every round, each node's budget in force (from
its GET /status) is compared with the plan, and a budget that drifted (someone
PUT /budget by hand) or went missing (the node restarted) is rewritten.

What is counted against the cluster budget for each node ("safe" means: never
less than the node may really be allowed to draw):
- a node that answered: the node budget it reports; if it reports none (or only
  a GPU budget) it may draw up to its maximum, so that is counted;
- a node that is down, slow or answers garbage: its *last safe budget*, the last
  budget it was known to have in force. After a write that failed (it may or
  may not have taken effect) that is the larger of the old and the new budget.
  A node never heard from is counted at its maximum draw: `max_node_power_w`
  for it, else `unknown_node_max_w`. The reserve stays until the node answers
  again, because a node whose endpoint is down may still be serving at that
  budget; to drop a dead node for good, restart the coordinator without it.
The budget left after the reserve of the down nodes is split among the healthy
nodes, so the total counted stays within the cluster budget while one node is
unreachable, and nothing stops because of it.

Write order, so that the budgets in force never sum above the cluster budget at
any moment (given that they did not at the start of the round):
- decreases (and budgets for nodes that have none, capped at what is counted for
  them) are sent first, to all nodes at once; they only lower the total;
- then each raise is reserved in turn against what is now counted (a decrease
  that was not confirmed still counts at its old budget) and cut to what still
  fits; the raises are sent at once, and any subset of them landing fits;
- a move smaller than `min_change_w` is skipped (less churn in the nodes'
  hysteresis), unless skipping would leave the total above the budget.
Reads and each write phase run in parallel (`max_parallel` nodes at a time), so
one slow node costs a round at most its deadline per phase, not one per node.
If the coordinator itself stops, every node keeps its last budget, and those sum
to at most the cluster budget.

Where a node's frontier comes from, in order: a `frontier_sources[name]`
callable given by the caller (the experiments fit each node's predictor
in-process), the node's GET /frontier, else a linear estimate from its status
(`linear_frontier`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Mapping, Sequence

from pals.cluster.allocation import Allocation, Frontier, NodeDemand, allocate
from pals.cluster.client import NodeClient, NodeStatus
from pals.cluster.report import NodeRound, RoundReport
from pals.core.clock import Clock
from pals.core.power import PAPER_ALPHA, PAPER_BETA_W
from pals.errors import ConfigError

FrontierSource = Callable[[NodeStatus], Frontier]
LOG = logging.getLogger("pals.cluster.coordinator")

MIN_BUDGET_W = 1.0
"""Smallest budget written: a node held to it runs at its lowest configuration."""
MAX_CLUSTER_BUDGET_W = 1e9
"""Largest cluster budget accepted (1 GW): anything above is a typo, not a cluster."""
MAX_TARGET_TPS = 1e7
"""Largest per-node throughput target accepted (tokens/s)."""
DEFAULT_GPUS, DEFAULT_CAP_MIN_W, DEFAULT_CAP_MAX_W = 4, 100.0, 400.0
DEFAULT_UNKNOWN_NODE_MAX_W = PAPER_ALPHA * DEFAULT_GPUS * DEFAULT_CAP_MAX_W + PAPER_BETA_W
"""Maximum draw assumed for a node never heard from (4 GPUs at 400 W on the paper's power line: 2,025 W)."""
_EPS_W = 1e-6


def _node_limits(status: NodeStatus) -> tuple[int, float, float]:
    """(GPUs, lowest cap, highest cap) from a status; defaults where missing or absurd."""
    gpus = status.num_gpus if status.num_gpus is not None and 1 <= status.num_gpus <= 64 else DEFAULT_GPUS
    low, high = status.power_cap_min_w, status.power_cap_max_w
    if low is None or high is None or not 0 < low < high <= 5000:
        low, high = DEFAULT_CAP_MIN_W, DEFAULT_CAP_MAX_W
    return gpus, low, high


def linear_frontier(status: NodeStatus, alpha: float = PAPER_ALPHA, beta_w: float = PAPER_BETA_W) -> Frontier:
    """Last-resort frontier from one status: throughput proportional to GPU power.

    Spans the node power at the lowest and highest GPU caps; throughput scales
    with GPU power from the node's last (power, throughput) reading. Crude (it
    ignores that tokens/J changes with the cap), so the coordinator uses it
    only when neither a predictor nor the node's /frontier is available.
    Missing or absurd constraints (a garbled status) fall back to 4 GPUs, 100-400 W.
    """
    gpus, cap_min_w, cap_max_w = _node_limits(status)
    floor_w = alpha * gpus * cap_min_w + beta_w
    ceiling_w = alpha * gpus * cap_max_w + beta_w
    power_now_w = status.node_power_w if status.node_power_w and status.node_power_w > 0 else ceiling_w
    tps_now = status.throughput_tps if status.throughput_tps and status.throughput_tps > 0 else 0.0
    gpu_now_w = max(1.0, (power_now_w - beta_w) / alpha)
    points = []
    for i in range(9):
        node_w = floor_w + (ceiling_w - floor_w) * i / 8
        gpu_w = (node_w - beta_w) / alpha
        points.append((node_w, tps_now * min(gpu_w, gpu_now_w * 1.5) / gpu_now_w))
    return Frontier.from_points(points)


def max_draw_w(status: NodeStatus, frontier: Frontier | None = None) -> float:
    """Most node power a node can draw without a budget: every GPU at its highest cap (paper
    power line), or its frontier's top point if that is higher. Units: W."""
    gpus, _, cap_max_w = _node_limits(status)
    line_w = PAPER_ALPHA * gpus * cap_max_w + PAPER_BETA_W
    return max(line_w, frontier.node_power_w[-1]) if frontier is not None else line_w


@dataclass
class _Memory:
    """What the coordinator remembers about one node between rounds."""

    last_safe_w: float | None = None
    """Budget counted for it after the last round it took part in (worst case after a failed write)."""
    expected_w: float | None = None
    """Budget it confirmed last (None after a failed write: unknown which one holds)."""
    max_draw_w: float | None = None
    load_tps: float | None = None


@dataclass
class _Read:
    status: NodeStatus | None = None
    frontier: Frontier | None = None
    error: str | None = None
    read_s: float = 0.0


@dataclass
class _Outcome:
    written_w: float | None = None
    error: str | None = None
    clipped: bool = False


@dataclass
class Coordinator:
    """Splits `cluster_budget_w` across `clients` every round (rule: `pals.cluster.allocation`).

    Args:
        clients: one `NodeClient` per node; names must be unique. Each call must end in bounded
            time (`HttpNodeClient` does: its `timeout_s`).
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
        max_node_power_w: per node name, its maximum draw, counted while it is down and was never
            seen, or while it runs without a budget. Units: W.
        unknown_node_max_w: maximum draw assumed for a node never heard from without an entry in
            `max_node_power_w`. Units: W.
        node_deadline_s: a node whose reads (status, frontier) take longer is down for the round;
            a write that takes longer has failed (a guard for clients that do not bound their own
            calls). Units: s.
        max_parallel: nodes read or written at the same time.
        history_rounds: reports kept in `rounds` (oldest dropped first).
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
    max_node_power_w: Mapping[str, float] = field(default_factory=dict)
    unknown_node_max_w: float = DEFAULT_UNKNOWN_NODE_MAX_W
    node_deadline_s: float = 30.0
    max_parallel: int = 16
    history_rounds: int = 10_000
    rounds: deque[RoundReport] = field(init=False, repr=False)
    _memory: dict[str, _Memory] = field(default_factory=dict, init=False, repr=False)
    _clients: dict[str, NodeClient] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.clients]
        if not names:
            raise ConfigError("the coordinator needs at least one node; give --node URL")
        if len(set(names)) != len(names):
            raise ConfigError(f"node names must be unique, got {names}")
        _check_range("cluster_budget_w", self.cluster_budget_w, MIN_BUDGET_W, MAX_CLUSTER_BUDGET_W, "W")
        for label, mapping in (("targets", self.targets_tps), ("priorities", self.priorities),
                               ("maximum node powers", self.max_node_power_w)):
            unknown = set(mapping) - set(names)
            if unknown:
                raise ConfigError(f"{label} given for unknown nodes {sorted(unknown)}; node names are {names}")
        for name, target in self.targets_tps.items():
            _check_range(f"target for node {name}", target, 0.0, MAX_TARGET_TPS, "tokens/s")
        for name, weight in self.priorities.items():
            _check_range(f"priority of node {name}", weight, 1e-6, 1e6, "", low_open=True)
        for name, power_w in self.max_node_power_w.items():
            _check_range(f"maximum power of node {name}", power_w, MIN_BUDGET_W, MAX_CLUSTER_BUDGET_W, "W")
        _check_range("unknown_node_max_w", self.unknown_node_max_w, MIN_BUDGET_W, MAX_CLUSTER_BUDGET_W, "W")
        _check_range("node_deadline_s", self.node_deadline_s, 1e-3, 86400.0, "s")
        self._clients = {c.name: c for c in self.clients}
        self.rounds = deque(maxlen=max(1, int(self.history_rounds)))
        self._memory = {name: _Memory() for name in names}

    @property
    def last_report(self) -> RoundReport | None:
        """The latest round's report (for a metrics exporter), or None before the first round."""
        return self.rounds[-1] if self.rounds else None

    # -- reads -----------------------------------------------------------------------------------

    def _read_one(self, client: NodeClient) -> _Read:
        start_s = time.monotonic()
        result = _Read()
        try:
            result.status = client.status()
        except Exception as error:  # any fault of one node makes it "down", never the coordinator
            result.error = _one_line(error)
        if result.status is not None and client.name not in self.frontier_sources:
            try:
                result.frontier = client.frontier()
            except Exception as error:  # a bad /frontier: the node is up, the linear estimate stands in
                result.error = f"GET /frontier: {_one_line(error)}"
        result.read_s = time.monotonic() - start_s
        return result

    def _parallel(self, calls: Mapping[str, Callable[[], object]]) -> dict[str, tuple[object, str | None]]:
        """Run one call per node at once; (result, None) or (None, why it failed) per node.

        A call not done within `node_deadline_s` counts as failed and is abandoned, not awaited
        (a guard for clients that do not bound their own calls; `HttpNodeClient` does).
        """
        if not calls:
            return {}
        pool = ThreadPoolExecutor(max_workers=max(1, min(self.max_parallel, len(calls))),
                                  thread_name_prefix="pals-coordinator")
        try:
            futures = {name: pool.submit(call) for name, call in calls.items()}
            wait(futures.values(), timeout=self.node_deadline_s)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        results: dict[str, tuple[object, str | None]] = {}
        for name, future in futures.items():
            if not future.done() or future.cancelled():
                results[name] = (None, f"no answer within {self.node_deadline_s:g} s")
            elif future.exception() is not None:
                results[name] = (None, _one_line(future.exception()))
            else:
                results[name] = (future.result(), None)
        return results

    def _read_all(self) -> dict[str, _Read]:
        """Read every node in parallel; a node not done within `node_deadline_s` is down."""
        results = self._parallel({c.name: partial(self._read_one, c) for c in self.clients})
        return {name: read if error is None else _Read(error=error, read_s=self.node_deadline_s)
                for name, (read, error) in results.items()}

    # -- one round -------------------------------------------------------------------------------

    def _frontier(self, name: str, read: _Read) -> Frontier:
        source = self.frontier_sources.get(name)
        try:
            if source is not None:
                return source(read.status)
            if read.frontier is not None:
                return read.frontier
        except Exception as error:  # a failing predictor must not stop the round
            LOG.warning("%s: frontier source failed (%s); using the linear estimate", name, _one_line(error))
        return linear_frontier(read.status)

    def _demand_tps(self, name: str, status: NodeStatus) -> float:
        """Offered load estimate: unbounded while work queues up, else the smoothed served rate."""
        measured = status.throughput_tps
        if measured is None or measured < 0:
            return math.inf
        memory = self._memory[name]
        previous = measured if memory.load_tps is None else memory.load_tps
        memory.load_tps = previous + self.load_smoothing * (measured - previous)
        if not status.demand_limited:
            return math.inf
        return max(memory.load_tps, measured) * (1.0 + self.demand_margin)

    def _assumed_max_w(self, name: str) -> float:
        if name in self.max_node_power_w:
            return float(self.max_node_power_w[name])
        known = self._memory[name].max_draw_w
        return known if known is not None else self.unknown_node_max_w

    def step(self) -> RoundReport:
        """One round: read every node, count what is in force, split, write (down first), report."""
        start_s = time.monotonic()
        reads = self._read_all()
        actions: list[str] = []
        counted: dict[str, float] = {}
        demands: list[NodeDemand] = []
        demand_tps: dict[str, float] = {}
        drifts: dict[str, str | None] = {}
        for client in self.clients:
            name, read = client.name, reads[client.name]
            memory = self._memory[name]
            if read.status is None:
                last = memory.last_safe_w
                counted[name] = last if last is not None else self._assumed_max_w(name)
                why = "its last safe budget" if last is not None else "its maximum draw (never heard from)"
                actions.append(f"{name}: down ({read.error}); counting {counted[name]:.0f} W, {why}")
                continue
            if read.error is not None:
                actions.append(f"{name}: {read.error}; using the linear frontier estimate")
            demand_tps[name] = self._demand_tps(name, read.status)
            demand = self._node_demand(name, read, demand_tps[name])
            demands.append(demand)
            if name not in self.max_node_power_w:
                memory.max_draw_w = max_draw_w(read.status, demand.frontier)
            reported = read.status.node_budget_w
            counted[name] = reported if reported is not None else self._assumed_max_w(name)
            drifts[name] = self._drift(name, reported)
        up = [d.name for d in demands]
        reserved_w = sum(counted[n] for n in counted if n not in up)
        allocation = self._split(demands, self.cluster_budget_w - reserved_w, actions)
        outcomes, in_force = self._write_budgets(allocation.budgets_w, counted, drifts, actions)
        targets = self._write_targets(reads, outcomes, actions)
        nodes = self._node_rounds(reads, counted, in_force, allocation, outcomes, targets, drifts)
        for name, node in nodes.items():
            self._remember(name, node)
        times = [r.status.time_s for r in reads.values() if r.status is not None and r.status.time_s is not None]
        report = RoundReport(
            round_index=self.rounds[-1].round_index + 1 if self.rounds else 0,
            time_s=max(times) if times else None,
            duration_s=time.monotonic() - start_s,
            cluster_budget_w=self.cluster_budget_w,
            reserved_down_w=reserved_w,
            in_force_start_w=sum(counted.values()),
            in_force_end_w=sum(in_force.values()),
            nodes=nodes,
            actions=tuple(actions),
            allocation=allocation,
            statuses={n: r.status for n, r in reads.items() if r.status is not None},
            demand_tps=demand_tps,
        )
        for line in actions:
            LOG.info("round %d: %s", report.round_index, line)
        self.rounds.append(report)
        return report

    def _node_demand(self, name: str, read: _Read, demand_tps: float) -> NodeDemand:
        frontier = self._frontier(name, read)
        for attempt in (frontier, linear_frontier(read.status)):
            try:
                return NodeDemand(
                    name=name,
                    floor_w=attempt.node_power_w[0],
                    ceiling_w=attempt.node_power_w[-1],
                    target_tps=float(self.targets_tps.get(name, 0.0)),
                    frontier=attempt,
                    demand_tps=demand_tps,
                    priority=float(self.priorities.get(name, 1.0)),
                )
            except Exception as error:  # e.g. a frontier source returning garbage: fall back once
                LOG.warning("%s: unusable frontier (%s); using the linear estimate", name, error)
        raise AssertionError("the linear frontier is always usable")  # pragma: no cover

    def _drift(self, name: str, reported_w: float | None) -> str | None:
        """How the budget a node reports differs from what the coordinator last knew it to hold."""
        if reported_w is None:
            return "missing"
        expected_w = self._memory[name].expected_w
        if expected_w is not None and abs(reported_w - expected_w) > max(0.5, 1e-4 * expected_w):
            return "changed"
        return None

    def _split(self, demands: list[NodeDemand], available_w: float, actions: list[str]) -> Allocation:
        """Allocate `available_w` over the nodes that answered; never more than it, never below
        `MIN_BUDGET_W` a node (when the reserve leaves less, every node is held at that minimum)."""
        if not demands:
            return Allocation({}, 0.0, False, max(0.0, available_w))
        if available_w < MIN_BUDGET_W * len(demands):
            actions.append(
                f"the budget left after the down nodes' reserve ({available_w:.0f} W) cannot fund the nodes "
                f"that answered; holding them at the minimum ({MIN_BUDGET_W:g} W each)"
            )
            return Allocation({d.name: MIN_BUDGET_W for d in demands}, 0.0, False, 0.0)
        result = allocate(demands, available_w, step_w=self.step_w)
        budgets = {n: max(MIN_BUDGET_W, b) for n, b in result.budgets_w.items()}
        total_w = sum(budgets.values())
        if total_w > available_w:  # rounding in the passes, or the minimum lifted a tiny share
            scale = available_w / total_w
            budgets = {n: b * scale for n, b in budgets.items()}
        return Allocation(budgets, result.qos_fraction, result.feasible, result.unallocated_w, result.need_w)

    def _write_budgets(self, plan: Mapping[str, float], counted: Mapping[str, float],
                       drifts: Mapping[str, str | None], actions: list[str]) -> tuple[dict[str, _Outcome], dict[str, float]]:
        """Write the plan against what is in force: decreases first, each raise cut to what fits.

        Returns the outcome per node written (or held back) and the budget counted per node after
        the writes (a failed write counts at the larger of before and after).
        """
        must_write = {n for n in plan if drifts.get(n) == "missing"}  # no budget: uncapped until written
        changes = {n: b for n, b in plan.items() if n in must_write or abs(b - counted[n]) >= self.min_change_w}
        total_after_w = sum(counted.values()) + sum(b - counted[n] for n, b in changes.items())
        if total_after_w > self.cluster_budget_w + _EPS_W:
            changes = dict(plan)  # skipping a small move must not leave the total above the budget
        for name in must_write:  # cap an uncapped node now, without a raise; it may be raised next round
            changes[name] = min(changes[name], counted[name])
        in_force = dict(counted)
        outcomes: dict[str, _Outcome] = {}
        # Phase 1, all at once: decreases (each only lowers the total, in whatever order they land).
        decreases = {n: b for n, b in changes.items() if b <= counted[n]}
        self._put_budgets(decreases, counted, in_force, outcomes, drifts, actions)
        # Phase 2: each raise is reserved in turn against what is now counted (a failed decrease
        # still counts at its old budget), then all are sent at once: any subset landing fits.
        raises = {}
        for name in (c.name for c in self.clients if c.name in changes and c.name not in decreases):
            others_w = sum(in_force.values()) - in_force[name]
            value_w = min(changes[name], self.cluster_budget_w - others_w)
            if value_w <= in_force[name] + _EPS_W:
                actions.append(f"{name}: raise to {changes[name]:.0f} W held back: no room until the other "
                               "nodes confirm their budgets")
                outcomes[name] = _Outcome(clipped=True)
                continue
            if value_w < changes[name] - _EPS_W:
                actions.append(f"{name}: raise cut from {changes[name]:.0f} W to {value_w:.0f} W so the "
                               "budgets in force stay within the cluster budget")
            raises[name] = value_w
            in_force[name] = value_w
        self._put_budgets(raises, counted, in_force, outcomes, drifts, actions)
        for name, value_w in raises.items():
            outcomes[name].clipped = value_w < changes[name] - _EPS_W
        return outcomes, in_force

    def _put_budgets(self, budgets_w: Mapping[str, float], counted: Mapping[str, float], in_force: dict[str, float],
                     outcomes: dict[str, _Outcome], drifts: Mapping[str, str | None], actions: list[str]) -> None:
        """PUT budgets in parallel; a failed write counts at the larger of before and after."""
        results = self._parallel({n: partial(self._clients[n].set_budget, b) for n, b in budgets_w.items()})
        for name, budget_w in budgets_w.items():
            error = results[name][1]
            outcomes[name] = _Outcome(written_w=budget_w, error=error)
            if error is not None:  # it may or may not have landed
                in_force[name] = max(counted[name], budget_w)
                actions.append(f"{name}: PUT /budget {budget_w:.0f} W failed ({error}); counting "
                               f"{in_force[name]:.0f} W until it answers")
                continue
            in_force[name] = budget_w
            self._log_write(name, counted[name], budget_w, drifts, actions)

    @staticmethod
    def _log_write(name: str, before_w: float, budget_w: float, drifts: Mapping[str, str | None],
                   actions: list[str]) -> None:
        why = {"missing": " (it reported no node budget: restarted or removed; rewritten)",
               "changed": " (it reported a budget the coordinator did not write; rewritten)"}.get(drifts.get(name), "")
        before = "none" if drifts.get(name) == "missing" else f"{before_w:.0f} W"
        actions.append(f"{name}: budget {before} -> {budget_w:.0f} W{why}")

    def _write_targets(self, reads: Mapping[str, _Read], outcomes: Mapping[str, _Outcome],
                       actions: list[str]) -> dict[str, tuple[float, str | None]]:
        """Rewrite each target the node does not report (restarted, or changed by hand)."""
        wanted = {}
        for name, client in self._clients.items():
            read, target = reads[name], self.targets_tps.get(name)
            outcome = outcomes.get(name)
            if not target or read.status is None or (outcome is not None and outcome.error is not None):
                continue
            reported = read.status.target_tps
            if reported is None or abs(reported - target) > 1e-3 * max(1.0, target):
                wanted[name] = (target, reported)
        results = self._parallel({n: partial(self._clients[n].set_target, t) for n, (t, _) in wanted.items()})
        written = {}
        for name, (target, reported) in wanted.items():
            error = results[name][1]
            written[name] = (target, error)
            if error is None:
                actions.append(f"{name}: target {_fmt(reported, 'tok/s')} -> {target:.0f} tok/s")
            else:
                actions.append(f"{name}: PUT /target {target:.0f} tok/s failed ({error})")
        return written

    def _node_rounds(self, reads, counted, in_force, allocation, outcomes, targets, drifts) -> dict[str, NodeRound]:
        nodes = {}
        for client in self.clients:
            name, read = client.name, reads[client.name]
            outcome = outcomes.get(name, _Outcome())
            target_written, target_error = targets.get(name, (None, None))
            reported = None if read.status is None else read.status.node_budget_w
            drift = drifts.get(name)
            nodes[name] = NodeRound(
                name=name,
                up=read.status is not None,
                error=read.error if read.status is None else (outcome.error or target_error),
                budget_reported_w=reported,
                budget_counted_start_w=counted[name],
                budget_planned_w=allocation.budgets_w.get(name),
                budget_written_w=outcome.written_w,
                budget_in_force_w=in_force[name],
                drift=drift,
                reconciled=drift is not None and outcome.written_w is not None and outcome.error is None,
                clipped=outcome.clipped,
                target_written_tps=target_written,
                read_s=read.read_s,
            )
        return nodes

    def _remember(self, name: str, node: NodeRound) -> None:
        memory = self._memory[name]
        if not node.up:
            return  # keep the last safe budget until it answers again
        memory.last_safe_w = node.budget_in_force_w
        if node.budget_written_w is not None:
            memory.expected_w = node.budget_written_w if node.error is None else None
        else:
            memory.expected_w = node.budget_reported_w

    def run(self, clock: Clock, interval_s: float, duration_s: float | None = None,
            on_round: Callable[[RoundReport], None] | None = None) -> Sequence[RoundReport]:
        """Run rounds every `interval_s` on `clock` until `duration_s` (forever if None).

        A round that overruns its interval is not caught up: missed ticks are skipped.

        Args:
            clock: a WallClock for real nodes.
            interval_s: seconds between rounds.
            duration_s: stop after this long (None: until interrupted).
            on_round: called with each `RoundReport` (e.g. to print it).
        """
        _check_range("interval_s", interval_s, 1e-3, 86400.0, "s")
        start_s = clock.now_s()
        next_s = start_s
        while duration_s is None or clock.now_s() - start_s < duration_s:
            report = self.step()
            if on_round is not None:
                on_round(report)
            next_s += interval_s
            now_s = clock.now_s()
            if now_s > next_s:
                next_s += math.ceil((now_s - next_s) / interval_s) * interval_s
            clock.wait_until(next_s)
        return self.rounds


def _check_range(label: str, value: float, low: float, high: float, unit: str, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (low < value if low_open else low <= value) and value <= high
    if not ok:
        raise ConfigError(f"{label} must be a number from {low:g} to {high:g} {unit}, got {value!r}".replace("  ", " "))


def _one_line(error: BaseException) -> str:
    text = str(error).replace("\n", " ").strip() or type(error).__name__
    return text[:300]


def _fmt(value: float | None, unit: str) -> str:
    return "none" if value is None else f"{value:.0f} {unit}"
