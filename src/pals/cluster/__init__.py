"""Cluster level: split one power budget across PALS nodes ("the cluster decides where and how much").

- `allocation`: the pure split rule (QoS needs first, then slack by marginal tokens/J; never over
  the cluster budget).
- `transport`: one HTTP request with a total deadline (a node answering a byte at a time cannot
  hang the coordinator).
- `client`: a node's control endpoint as the coordinator sees it (`HttpNodeClient`, `NodeStatus`).
- `report`: what one round did, typed (`RoundReport`, `NodeRound`), for logs and metrics.
- `metrics`: the coordinator's Prometheus metrics (`CoordinatorMetrics`, fed each round's report) and
  their HTTP server (`MetricsServer`, `pals coordinate --metrics-port`).
- `coordinator`: the periodic loop (`Coordinator.step/run`), used by `pals coordinate` and the
  multi-node experiments; it enforces the cluster budget against what each node reports.
"""

from pals.cluster.allocation import Allocation, Frontier, NodeDemand, allocate
from pals.cluster.client import HttpNodeClient, NodeClient, NodeStatus, parse_status
from pals.cluster.coordinator import Coordinator, linear_frontier, max_draw_w
from pals.cluster.report import NodeRound, RoundReport

__all__ = [
    "Allocation",
    "Coordinator",
    "Frontier",
    "HttpNodeClient",
    "NodeClient",
    "NodeDemand",
    "NodeRound",
    "NodeStatus",
    "RoundReport",
    "allocate",
    "linear_frontier",
    "max_draw_w",
    "parse_status",
]
