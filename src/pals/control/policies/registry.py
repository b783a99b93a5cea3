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
from pals.control.policies.config import DEFAULT_OBJECTIVE, OBJECTIVES, ModelGuidedConfig
from pals.control.policies.interface import PerfModel, Policy
from pals.control.policies.oracle import ORACLE_MAX_QOS_VIOLATION_PCT, Oracle
from pals.control.policies.pals import Pals
from pals.control.policies.static import Static
from pals.control.types import Configuration
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
class PolicyOptions:
    """What an operator may say about a policy beyond its name (each field used by some policies only)."""

    objective: str = DEFAULT_OBJECTIVE
    """What the model-guided policies and the Oracle maximize: "node" (tokens per node joule, the
    headline) or "gpu" (tokens per GPU joule)."""
    fixed: Configuration | None = None
    """The configuration the static policy holds (required by it, refused by the others)."""
    oracle_max_qos_violation_pct: float = ORACLE_MAX_QOS_VIOLATION_PCT
    """The Oracle's QoS allowance: share of intervals a configuration may violate by the truth. Units: %."""

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}; "
                              "use node (tokens per node joule) or gpu")

    def model_guided(self) -> ModelGuidedConfig:
        """The model-guided policies' knobs with this objective."""
        return ModelGuidedConfig(objective=self.objective)


@dataclass(frozen=True)
class PolicyEntry:
    """How to build one policy."""

    build: Callable[[Any, PolicyGrid, PolicyOptions], Policy]
    """(model, grid, options) -> the policy; model is None when `model` is 'none'."""
    model: Literal["none", "predictor", "truth"]
    """What it scores candidates with: nothing, the fitted predictor, or the simulator's ground truth."""


def _static(options: PolicyOptions) -> Static:
    if options.fixed is None:
        raise ConfigError("policy static needs a configuration: give --power-cap-w W and --batch-cap B")
    return Static(options.fixed.power_cap_w, options.fixed.batch_cap)


_REGISTRY: dict[str, PolicyEntry] = {
    "baseline": PolicyEntry(lambda _, g, o: Baseline(batch_cap=g.batch_cap_max), "none"),
    "adaptive-batch": PolicyEntry(
        lambda m, g, o: AdaptiveBatch(m, g.power_cap_max_w, g.batch_caps, o.model_guided()), "predictor"),
    "adaptive-cap": PolicyEntry(
        lambda m, g, o: AdaptiveCap(m, g.power_caps_w, g.batch_cap_max, o.model_guided()), "predictor"),
    "pals": PolicyEntry(lambda m, g, o: Pals(m, g.power_caps_w, g.batch_caps, o.model_guided()), "predictor"),
    "oracle": PolicyEntry(lambda m, g, o: Oracle(m, g.power_caps_w, g.batch_caps, o.objective,
                                                 o.oracle_max_qos_violation_pct), "truth"),
    "static": PolicyEntry(lambda _, g, o: _static(o), "none"),
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
    options: PolicyOptions = PolicyOptions(),
) -> Policy:
    """Build a policy by name (one of `POLICY_NAMES`).

    Args:
        predictor: the fitted power-performance predictor (all but 'baseline' and 'oracle' need it).
        truth: the simulator's ground truth of the delivered load (only 'oracle' uses it;
            `pals.runtime.delivered.DeliveredTruth`).
        power_caps_w, batch_caps: candidate grids; default to the predictor's profiled grid
            (`caps_`, `batches_`), else the paper's.
        power_cap_max_w, batch_cap_max: the fixed knob of AdaptiveBatch (cap) and AdaptiveCap and
            Baseline (batch).
        options: objective, the static policy's configuration, the Oracle's QoS allowance.
    """
    key = name.lower().replace("_", "-")
    if key not in _REGISTRY:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
    entry = _REGISTRY[key]
    if options.fixed is not None and key != "static":
        raise ConfigError(f"a fixed configuration (--power-cap-w / --batch-cap) is for --policy static only, "
                          f"not {key}")
    if entry.model == "none":
        return entry.build(None, PolicyGrid((), (), power_cap_max_w, batch_cap_max), options)
    source = truth if entry.model == "truth" else predictor
    if source is None:
        raise ConfigError(f"policy {key!r} needs {_NEEDS[entry.model]}")
    grid_source = predictor if predictor is not None else source
    caps = power_caps_w or _grid(grid_source, "caps_", PAPER_POWER_CAPS_W)
    batches = batch_caps or _grid(grid_source, "batches_", PAPER_BATCH_CAPS)
    return entry.build(source, PolicyGrid(tuple(caps), tuple(batches), power_cap_max_w, batch_cap_max), options)
