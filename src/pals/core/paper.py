"""The PALS paper's runtime grid and node (Table 1, section 4): the defaults everywhere else.

Experiments, profiles built on the fly and the policies' candidate sets start from these values;
an operator's own profile brings its own grid.
"""

from __future__ import annotations

PAPER_POWER_CAPS_W: tuple[float, ...] = (150.0, 200.0, 250.0, 300.0, 350.0, 400.0)
"""Power caps per GPU swept and chosen among at run time (A100 range 100-400 W). Units: W."""
PAPER_BATCH_CAPS: tuple[int, ...] = (1, 4, 8, 16, 32, 64)
"""Batch caps (max running sequences per engine replica) swept and chosen among at run time."""

PAPER_GPU = "A100-SXM4-80GB"
"""GPU preset of the paper's nodes (4x A100, 400 W, NVLink); 80 GB so that Mixtral fits at TP 4.
Also the default of every simulated node and of the simulated GPU test double."""
PAPER_NUM_GPUS = 4
"""GPUs per node in the paper."""
CONTROL_INTERVAL_S = 0.5
"""The paper's control interval. Units: s."""
