"""Nodes: the platform as the controller sees it (real GPUs + vLLM, or the simulated GPU test double).

The contract itself (`Node`, `Sample`, `Actuation`, `Constraints`) lives in `pals.core.node`.
"""
