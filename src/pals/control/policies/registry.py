"""Policies by name: one entry per policy, and `make_policy` to build one.

Adding a policy: write its class in its own file of this package, then add one `PolicyEntry` to
`_REGISTRY` below. `POLICY_NAMES` (the CLI's choices, the experiments' lists) follows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from pals.control.policies.adaptive_batch import AdaptiveBatch
from pals.control.policies.adaptive_cap import AdaptiveCap
from pals.control.policies.baseline import Baseline
from pals.control.policies.interface import PerfModel, Policy
from pals.control.policies.oracle import Oracle
from pals.control.policies.pals import Pals
from pals.core.paper import PAPER_BATCH_CAPS, PAPER_POWER_CAPS_W
from pals.errors import ConfigError


@dataclass(frozen=True)
class PolicyGrid:
    """The knob space a policy is built for."""

    power_caps_w: tuple[float, ...]
    """Candidate caps per GPU (the predictor's profiled grid unless given). Units: W."""
    batch_caps: tuple[int, ...]
    """Candidate batch caps (the predictor's profiled grid unless given)."""
    power_cap_max_w: float
    """The fixed cap of AdaptiveBatch (the GPU's highest). Units: W."""
    batch_cap_max: int
    """The fixed batch of AdaptiveCap and Baseline (the engine's highest)."""


@dataclass(frozen=True)
class PolicyEntry:
    """How to build one policy."""

    build: Callable[[Any, PolicyGrid], Policy]
    """(model, grid) -> the policy; model is None when `model` is 'none'."""
    model: Literal["none", "predictor", "truth"]
    """What it scores candidates with: nothing, the fitted predictor, or the simulator's ground truth."""


_REGISTRY: dict[str, PolicyEntry] = {
    "baseline": PolicyEntry(lambda _, g: Baseline(batch_cap=g.batch_cap_max), "none"),
    "adaptive-batch": PolicyEntry(lambda m, g: AdaptiveBatch(m, g.power_cap_max_w, g.batch_caps), "predictor"),
    "adaptive-cap": PolicyEntry(lambda m, g: AdaptiveCap(m, g.power_caps_w, g.batch_cap_max), "predictor"),
    "pals": PolicyEntry(lambda m, g: Pals(m, g.power_caps_w, g.batch_caps), "predictor"),
    "oracle": PolicyEntry(lambda m, g: Oracle(m, g.power_caps_w, g.batch_caps), "truth"),
}

POLICY_NAMES: tuple[str, ...] = tuple(_REGISTRY)

_NEEDS = {
    "predictor": "a predictor (--predictor or --profile)",
    "truth": "the simulator's ground truth (simulated node only)",
}


def _grid(model: Any, attr: str, default: tuple) -> tuple:
    values = getattr(model, attr, None)
    if values is None:
        return default
    return tuple(np.asarray(values).tolist())


def make_policy(
    name: str,
    predictor: PerfModel | None = None,
    truth: PerfModel | None = None,
    power_caps_w: tuple[float, ...] | None = None,
    batch_caps: tuple[int, ...] | None = None,
    power_cap_max_w: float = PAPER_POWER_CAPS_W[-1],
    batch_cap_max: int = PAPER_BATCH_CAPS[-1],
) -> Policy:
    """Build a policy by name (one of `POLICY_NAMES`).

    Args:
        predictor: the fitted power-performance predictor (all but 'baseline' and 'oracle' need it).
        truth: the simulator's ground truth (only 'oracle' uses it).
        power_caps_w, batch_caps: candidate grids; default to the predictor's profiled grid
            (`caps_`, `batches_`), else the paper's.
        power_cap_max_w, batch_cap_max: the fixed knob of AdaptiveBatch (cap) and AdaptiveCap and
            Baseline (batch).
    """
    key = name.lower().replace("_", "-")
    if key not in _REGISTRY:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
    entry = _REGISTRY[key]
    if entry.model == "none":
        return entry.build(None, PolicyGrid((), (), power_cap_max_w, batch_cap_max))
    source = truth if entry.model == "truth" else predictor
    if source is None:
        raise ConfigError(f"policy {key!r} needs {_NEEDS[entry.model]}")
    grid_source = predictor if predictor is not None else source
    caps = power_caps_w or _grid(grid_source, "caps_", PAPER_POWER_CAPS_W)
    batches = batch_caps or _grid(grid_source, "batches_", PAPER_BATCH_CAPS)
    return entry.build(source, PolicyGrid(tuple(caps), tuple(batches), power_cap_max_w, batch_cap_max))
