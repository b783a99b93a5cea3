"""Nodes: the platform as the controller sees it (real GPUs + vLLM, or the simulator)."""

from pals.node.base import Actuation, Constraints, Node, Sample

__all__ = ["Actuation", "Constraints", "Node", "Sample"]
