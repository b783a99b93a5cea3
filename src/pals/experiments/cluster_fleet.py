"""Many simulated PALS nodes, each behind its real HTTP endpoint on loopback, for `cluster-scale`.

- `FleetNode`: one simulated node (its GPUs and engine: a `SimNode` that keeps serving) and its
  PALS agent (a control loop and its `Endpoint` on a fixed port). The agent can be stopped and
  started again, as a crashed or upgraded `pals serve` would be: while it is down the node keeps
  the caps it had (the engine does not stop), and the new agent boots with its *boot budget*
  (`--budget-w` in production), not with what the coordinator had given the old one.
- `Fleet`: the nodes on one virtual time line: `advance_to(t)` moves every node's clock and steps
  every running agent's loop once (one control interval), and records the cluster's true power
  from the simulator's energy counters.
- `BudgetWitness`: the sum of the node budgets in force *as the nodes hold them* (what GET /status
  reports), checked against the cluster budget at every change on any node (each budget write,
  each agent boot) and at the end of every coordinator round. It does not trust the coordinator's
  own accounting: it sees every write land, so a write order that lets the total rise above the
  budget for a moment is caught even when the round ends within it.

A node without a node budget (never the case here: agents boot with one) counts at its maximum
draw; a node whose agent is down counts at the last budget its agent held (its caps stay).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pals.control.budget import PowerBudget
from pals.control.endpoint import Endpoint, EndpointLimits
from pals.core.power import NodePowerModel
from pals.experiments.common import Lab

FLEET_LIMITS = EndpointLimits(max_connections=2)
"""The coordinator opens one connection at a time per node; two workers leave one for a scrape and
keep 64 endpoints at 256 threads, not 640."""
_EPS_W = 1e-6


@dataclass(frozen=True)
class NodePlan:
    """One node of the fleet."""

    name: str
    model: str
    tp: int
    target_tps: float
    """The throughput target the coordinator gives the node. Units: tokens/s."""
    load_tps: float
    """Mean offered output rate of its Poisson load. Units: tokens/s."""
    seed: int


@dataclass(frozen=True)
class Excess:
    """One moment at which the budgets the nodes held summed above the limit."""

    when: str
    """"write" (a budget landed on a node), "boot" (an agent started) or "round end"."""
    round_index: int
    total_w: float
    limit_w: float


class BudgetWitness:
    """The sum of the budgets the nodes hold, checked at every change (see the module docstring).

    Args:
        limit_w: the cluster budget in force at the start. Units: W.
    """

    def __init__(self, limit_w: float) -> None:
        self.lock = threading.RLock()
        self.limit_w = limit_w
        self.held_w: dict[str, float] = {}
        self.round_index = -1
        self.checks = 0
        self.excesses: list[Excess] = []
        self.max_total_w = 0.0
        self.round_max_w = 0.0
        """Largest total seen since the current round began. Units: W."""
        self.min_headroom_w = float("inf")

    def begin_round(self, round_index: int, cluster_budget_w: float) -> None:
        """A round starts with `cluster_budget_w`: while it applies a change, its writes are held to
        the larger of the old and new budgets (a lower budget cannot be in force on every node at
        the instant the operator sets it); from its end on, to the new one."""
        with self.lock:
            self.round_index = round_index
            self.limit_w = max(self.limit_w, cluster_budget_w)
            self.round_max_w = self.total_w()

    def end_round(self, cluster_budget_w: float, held_w: dict[str, float]) -> float:
        """Check the nodes' own reports at the end of a round against `cluster_budget_w`; return their sum."""
        with self.lock:
            self.limit_w = cluster_budget_w
            total_w = float(sum(held_w.values()))
            self._check("round end", total_w)
            return total_w

    def changed(self, name: str, held_w: float, when: str = "write") -> None:
        """A node now holds `held_w` (call with `lock` held around the change itself)."""
        with self.lock:
            self.held_w[name] = held_w
            self._check(when, self.total_w())

    def total_w(self) -> float:
        return float(sum(self.held_w.values()))

    def _check(self, when: str, total_w: float) -> None:
        self.checks += 1
        self.max_total_w = max(self.max_total_w, total_w)
        self.round_max_w = max(self.round_max_w, total_w)
        self.min_headroom_w = min(self.min_headroom_w, self.limit_w - total_w)
        if total_w > self.limit_w + _EPS_W:
            self.excesses.append(Excess(when, self.round_index, total_w, self.limit_w))


class _WitnessedLoop:
    """A control loop as its endpoint sees it, with every budget change reported to the witness.

    The change and the witness's check happen under the witness's lock, so concurrent writes to
    different nodes are checked in the order they land.
    """

    def __init__(self, loop, name: str, witness: BudgetWitness, max_draw_w: float) -> None:
        self._loop = loop
        self._name = name
        self._witness = witness
        self._max_draw_w = max_draw_w

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._loop, attr)

    def set_budget(self, budget: PowerBudget | None) -> None:
        with self._witness.lock:
            self._loop.set_budget(budget)
            self._witness.changed(self._name, held_budget_w(budget, self._max_draw_w))


def held_budget_w(budget: PowerBudget | None, max_draw_w: float) -> float:
    """What a node holds of the cluster: its node budget, else (none, or only a GPU budget) its maximum draw."""
    if budget is None or budget.kind != "node":
        return max_draw_w
    return float(budget.budget_w)


class FleetNode:
    """One simulated node and its restartable PALS agent (see the module docstring).

    Args:
        plan: the node's model, target and load.
        lab: the experiment's `Lab` (nodes, policies, loops).
        witness: told of every budget the agent takes.
        boot_budget_w: the budget every agent of this node starts with (default: the node's floor,
            its power at its lowest GPU caps on the paper's node-power line). Units: W.
        host: the loopback address the endpoint listens on.
    """

    def __init__(self, plan: NodePlan, lab: Lab, witness: BudgetWitness, boot_budget_w: float | None = None,
                 host: str = "127.0.0.1") -> None:
        self.plan = plan
        self.lab = lab
        self.witness = witness
        self.host = host
        self.node = lab.node(plan.model, plan.tp, lab.workload(plan.load_tps, lab.seed + plan.seed),
                             seed_offset=plan.seed)
        c = self.node.constraints()
        self.max_draw_w = NodePowerModel().node_w(c.num_gpus * c.power_cap_max_w)
        self.floor_w = NodePowerModel().node_w(c.num_gpus * c.power_cap_min_w)
        self.boot_budget_w = self.floor_w if boot_budget_w is None else boot_budget_w
        self.loop = None
        self.endpoint: Endpoint | None = None
        self.port = 0
        self.lives: list[list[Any]] = []
        """The decision records of each agent that ran (typed `IntervalRecord`s), oldest first."""
        self.boots = 0

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def up(self) -> bool:
        return self.loop is not None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start_agent(self) -> None:
        """A fresh agent: new policy and loop at the boot budget, endpoint on the node's port."""
        policy = self.lab.make_policy("pals", self.plan.model, self.plan.tp)
        loop = self.lab.loop(self.node, policy)
        boot = PowerBudget(self.boot_budget_w, "node")
        with self.witness.lock:  # the agent holds its boot budget from the moment it exists
            loop.set_budget(boot)
            self.witness.changed(self.name, held_budget_w(boot, self.max_draw_w), when="boot")
        endpoint = Endpoint(_WitnessedLoop(loop, self.name, self.witness, self.max_draw_w), self.host, self.port,
                            limits=FLEET_LIMITS).start()
        self.loop, self.endpoint, self.port = loop, endpoint, endpoint.port
        self.boots += 1

    def stop_agent(self) -> None:
        """The agent dies: its endpoint stops answering; the node keeps its caps (and its budget counts)."""
        if self.endpoint is not None:
            self.endpoint.stop()
            self.endpoint = None
        if self.loop is not None:
            self.lives.append(self.loop.log.records())
            self.loop.close()
            self.loop = None

    def reported_w(self) -> float:
        """The budget the node holds, as its agent reports it (GET /status), or as it was left when down."""
        if self.loop is None:
            return self.witness.held_w[self.name]
        return held_budget_w(self.loop.budget, self.max_draw_w)

    def records(self) -> list[Any]:
        """Every decision record of every agent this node had, oldest first."""
        current = [] if self.loop is None else self.loop.log.records()
        return [record for life in self.lives for record in life] + current


@dataclass
class Fleet:
    """The nodes on one virtual time line, and the cluster's true power per control interval."""

    nodes: list[FleetNode]
    times_s: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    """True cluster power over each interval (simulator energy counters). Units: W."""
    _last: tuple[float, float] | None = None

    def node_energy_j(self) -> float:
        return float(sum(n.node.node_energy_j_total() for n in self.nodes))

    def advance_to(self, t_s: float) -> None:
        """Move every node's clock to `t_s`, step every running agent once, record the true power."""
        for fleet_node in self.nodes:
            fleet_node.node.clock.wait_until(t_s)
            if fleet_node.loop is not None:
                fleet_node.loop.step()
        energy_j = self.node_energy_j()
        if self._last is not None and t_s > self._last[0]:
            self.times_s.append(t_s)
            self.power_w.append((energy_j - self._last[1]) / (t_s - self._last[0]))
        self._last = (t_s, energy_j)

    def mean_power_w(self, start_s: float, end_s: float) -> float:
        """Mean true cluster power over intervals ending in (start_s, end_s]. Units: W."""
        times, power = np.asarray(self.times_s), np.asarray(self.power_w)
        mask = (times > start_s) & (times <= end_s)
        return float(power[mask].mean()) if mask.any() else float("nan")

    def stop(self) -> None:
        for fleet_node in self.nodes:
            fleet_node.stop_agent()
