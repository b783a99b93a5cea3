"""Several simulated nodes on one virtual clock, each with its own control loop and HTTP endpoint.

The coordinator (if any) reaches the nodes only through `HttpNodeClient` over localhost, exactly
as it would over the network; the nodes' loops are stepped in lockstep on the shared virtual
time line, and the coordinator's rounds happen between two control intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pals.cluster.allocation import Frontier
from pals.cluster.client import HttpNodeClient
from pals.cluster.coordinator import Coordinator
from pals.experiments.common import CONTROL_INTERVAL_S, WARMUP_S


@dataclass
class ClusterNode:
    name: str
    node: Any
    loop: Any
    energy0_j: float = 0.0
    tokens0: float = 0.0


@dataclass
class ClusterRun:
    """What a cluster run produced."""

    summaries: dict[str, dict[str, Any]]
    records: dict[str, list[dict[str, Any]]] = field(repr=False)
    cluster_power_w: np.ndarray = field(repr=False)
    """Sum of the nodes' measured node power per interval. Units: W."""
    times_s: np.ndarray = field(repr=False)
    truth_tokens: dict[str, float] = field(default_factory=dict)
    truth_energy_j: dict[str, float] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def aggregate_tokens_per_joule(self) -> float:
        energy = sum(self.truth_energy_j.values())
        return sum(self.truth_tokens.values()) / energy if energy > 0 else 0.0


def run_cluster(
    nodes: list[ClusterNode],
    duration_s: float,
    cluster_budget_w: float | None = None,
    targets_tps: dict[str, float] | None = None,
    frontier_sources: dict[str, Callable[[Any], Frontier]] | None = None,
    coordinate: bool = False,
    coordinator_interval_s: float = 5.0,
    on_interval: Callable[[float], None] | None = None,
    policy_warmup: bool = False,
) -> ClusterRun:
    """Step every node's loop each 0.5 s of shared virtual time; run the coordinator every few seconds.

    Args:
        nodes: the nodes with their loops (budgets and targets already set for uncoordinated runs).
        duration_s: simulated seconds of control after the warm-up.
        cluster_budget_w: the coordinator's cluster budget (coordinated runs).
        targets_tps: per-node QoS target the coordinator writes.
        frontier_sources: per-node frontier callables for the coordinator.
        coordinate: run the coordinator over HTTP.
        coordinator_interval_s: seconds between coordinator rounds.
        on_interval: called with the time after each interval (e.g. a demand-response schedule).
        policy_warmup: the loops (and the coordinator) already control the nodes through the `WARMUP_S`
            warm-up, and the figures score what follows it (`Lab.run`'s option of the same name: every
            variant, fixed configurations included, is scored at its steady state). Otherwise the nodes warm
            up at their initial configuration and control starts with scoring.
    """
    from pals.control.endpoint import Endpoint

    start_s = 0.0 if policy_warmup else WARMUP_S

    scoring: list[bool] = []

    def start_scoring() -> None:
        scoring.append(True)
        for cn in nodes:
            cn.node.clock.wait_until(WARMUP_S)
            cn.energy0_j = cn.node.node_energy_j_total()
            cn.tokens0 = cn.node.generated_tokens_total()
            if policy_warmup:
                cn.loop.restart_summary()

    if not policy_warmup:
        start_scoring()
    endpoints, clients, coordinator = [], [], None
    try:
        if coordinate:
            for cn in nodes:
                endpoint = Endpoint(cn.loop, host="127.0.0.1", port=0).start()
                endpoints.append(endpoint)
                clients.append(HttpNodeClient(endpoint.url, name=cn.name))
            coordinator = Coordinator(
                clients,
                cluster_budget_w=float(cluster_budget_w),
                targets_tps=targets_tps or {},
                frontier_sources=frontier_sources or {},
            )
        t_s = start_s
        end_s = WARMUP_S + duration_s
        next_round_s = t_s
        round_times: list[float] = []
        while True:
            if coordinator is not None and t_s >= next_round_s - 1e-9:
                coordinator.step()
                round_times.append(t_s - WARMUP_S)
                next_round_s += coordinator_interval_s
            for cn in nodes:
                cn.loop.step()
            if policy_warmup and not scoring and t_s >= WARMUP_S - 1e-9:
                start_scoring()
            if t_s >= end_s - 1e-9:
                break
            t_s += CONTROL_INTERVAL_S
            if on_interval is not None:
                on_interval(t_s)
            for cn in nodes:
                cn.node.clock.wait_until(t_s)
    finally:
        for client in clients:
            client.close()
        for endpoint in endpoints:
            endpoint.stop()
    rounds = [] if coordinator is None else [
        {**r.as_dict(), "time_s": t} for r, t in zip(coordinator.rounds, round_times) if t >= 0.0
    ]
    return _collect(nodes, rounds, policy_warmup)


def _collect(nodes: list[ClusterNode], rounds: list[dict[str, Any]], policy_warmup: bool) -> ClusterRun:
    """The run's figures from the nodes' loops and exact counters (the scored part only); closes the loops."""
    # With the policy warm-up the loops started with the nodes' clocks: a record's t_s is node time.
    first = 0 if policy_warmup else 1  # without the warm-up, the first record is the loop's first sample only
    records = {cn.name: [r for r in cn.loop.log.recent() if not policy_warmup or r["t_s"] > WARMUP_S + 1e-9]
               for cn in nodes}
    summaries = {cn.name: cn.loop.summary() for cn in nodes}
    length = min(len(r) for r in records.values())
    power = np.zeros(length)
    times = np.zeros(length)
    for recs in records.values():
        for i, rec in enumerate(recs[:length]):
            if rec.get("sample") is not None:
                power[i] += rec["sample"]["node_power_w"]
            times[i] = rec["t_s"]
    for cn in nodes:
        cn.loop.close()
    return ClusterRun(
        summaries=summaries,
        records=records,
        cluster_power_w=power[first:],
        times_s=times[first:],
        truth_tokens={cn.name: cn.node.generated_tokens_total() - cn.tokens0 for cn in nodes},
        truth_energy_j={cn.name: cn.node.node_energy_j_total() - cn.energy0_j for cn in nodes},
        rounds=rounds,
    )
