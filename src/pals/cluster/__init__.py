"""Cluster level: split one power budget across PALS nodes ("the cluster decides where and how much").

- `allocation`: the pure split rule (QoS needs first, then slack by marginal tokens/J; never over
  the cluster budget).
- `client`: a node's control endpoint as the coordinator sees it (`HttpNodeClient`, `NodeStatus`).
- `coordinator`: the periodic loop (`Coordinator.step/run`), used by `pals coordinate` and the
  multi-node experiments.
"""

from pals.cluster.allocation import Allocation, Frontier, NodeDemand, allocate
from pals.cluster.client import HttpNodeClient, NodeClient, NodeStatus, parse_status
from pals.cluster.coordinator import Coordinator, CoordinatorRound, linear_frontier

__all__ = [
    "Allocation",
    "Coordinator",
    "CoordinatorRound",
    "Frontier",
    "HttpNodeClient",
    "NodeClient",
    "NodeDemand",
    "NodeStatus",
    "allocate",
    "linear_frontier",
    "parse_status",
]
