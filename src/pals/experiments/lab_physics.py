"""The step physics an experiment's simulated nodes run: the GPU preset's, or a `pals calibrate` file.

`pals experiment NAME --physics FILE` runs the experiment inside `physics_scope(FILE)`
(`pals.experiments.run_experiment`). Every `Lab` built inside the scope takes the file's physics
(`Lab.physics` defaults to `scoped_physics()`), so every node, profile, ground truth and run of every
experiment uses it without each experiment passing it on; every report's setup line names it
(`physics_label()`, added by `Report`). Outside a scope (tests, direct calls) both are the preset's.

The scope is a context variable, set for the duration of one experiment and reset after it, not module
state: two experiments run one after the other never see each other's physics.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from pals.core.paper import PAPER_GPU

if TYPE_CHECKING:
    from pals.sim.physics import PhysicsParams

PRESET_LABEL = "the GPU preset's"
"""What a report's setup line says when no physics file is in force."""


@dataclass(frozen=True)
class ScopedPhysics:
    """A physics file in force for one experiment."""

    gpu: str
    """The GPU preset the file was fitted for (the experiments' GPU)."""
    params: PhysicsParams
    """That preset's physics with the file's values applied (`pals.sim.physics.load_physics`)."""
    source: str
    """The file's path, as given."""


_SCOPE: ContextVar[ScopedPhysics | None] = ContextVar("pals_experiment_physics", default=None)


@contextmanager
def physics_scope(path: str | Path | None, gpu: str = PAPER_GPU) -> Iterator[ScopedPhysics | None]:
    """Run the body with the physics of file `path` (fitted for `gpu`) in force; None: the preset's.

    Raises:
        ConfigError: a bad file, or one fitted for another GPU (one line, before the body runs).
    """
    scope = None
    if path is not None:
        from pals.sim.hardware import get_gpu
        from pals.sim.physics import load_physics

        spec = get_gpu(gpu)
        scope = ScopedPhysics(spec.name, load_physics(path, spec), str(path))
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def scoped_physics(gpu: str = PAPER_GPU) -> PhysicsParams | None:
    """The physics in force for `gpu`'s nodes: the scope's when it was fitted for `gpu`, else None (the preset's)."""
    scope = _SCOPE.get()
    if scope is None or scope.gpu.strip().lower() != gpu.strip().lower():
        return None
    return scope.params


def physics_label() -> str:
    """Which physics the experiment's nodes run, for its report's setup line."""
    scope = _SCOPE.get()
    return PRESET_LABEL if scope is None else f"fitted for {scope.gpu}, from {scope.source}"
