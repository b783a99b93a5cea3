"""Power budget, budget schedule and throughput target: the constraints a node is given.

A `PowerBudget` limits either the node's wall power (`kind="node"`) or the sum of its GPUs'
power (`kind="gpu"`). A `BudgetSchedule` is a step function of time for demand-response runs,
read from CSV (`time_s,budget_w`) or JSON (`[{"time_s": .., "budget_w": ..}, ..]` or
`{"kind": "node", "steps": [...]}`). A `ThroughputTarget` is the output-token rate the node should
deliver when offered enough load.

How policies hold a budget (`pals.control.policies.BudgetGuard`, whose fields hold the numbers):
the per-GPU cap is bounded by the budget's per-GPU share, governed by the measured mean power over
the QoS window: an overshoot trims the bound at the next interval (a budget step-down, any interval
over while the window is young, a spike over `spike_frac`, or the window mean over the budget);
while the budget binds and the node is capacity-limited below the setpoint B x (1 - `setpoint_frac`),
an integral term lifts the bound above the share (GPUs draw under their caps), with anti-windup
(no lift in a lull or when the policy chose a lower cap) and a ceiling: the caps never sum past
B x (1 + `peak_tolerance_frac`), so no interval can exceed the budget by more.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pals.errors import ConfigError

BUDGET_KINDS = ("node", "gpu")


@dataclass(frozen=True)
class PowerBudget:
    """A power budget the chosen configuration must fit under."""

    budget_w: float
    """The limit. Units: W."""
    kind: str = "node"
    """'node': wall power of the node (measured, or estimated from GPU power);
    'gpu': the sum of the node's GPU power."""

    def __post_init__(self) -> None:
        if not isinstance(self.budget_w, (int, float)) or isinstance(self.budget_w, bool):
            raise ConfigError(f"budget_w must be a number of watts, got {self.budget_w!r}")
        if not math.isfinite(self.budget_w) or self.budget_w <= 0:
            raise ConfigError(f"budget_w must be a positive number of watts, got {self.budget_w!r}")
        if self.kind not in BUDGET_KINDS:
            raise ConfigError(f"budget kind must be 'node' or 'gpu', got {self.kind!r}")


@dataclass(frozen=True)
class ThroughputTarget:
    """Output tokens per second the node should deliver (when offered at least that much)."""

    target_tps: float
    """Units: generated tokens/s, whole node."""

    def __post_init__(self) -> None:
        if not isinstance(self.target_tps, (int, float)) or isinstance(self.target_tps, bool):
            raise ConfigError(f"target_tps must be a number of tokens/s, got {self.target_tps!r}")
        if not math.isfinite(self.target_tps) or self.target_tps <= 0:
            raise ConfigError(f"target_tps must be a positive number of tokens/s, got {self.target_tps!r}")


@dataclass(frozen=True)
class BudgetStep:
    time_s: float
    """Seconds from the start of the run at which this budget takes effect."""
    budget_w: float


@dataclass(frozen=True)
class BudgetSchedule:
    """A step function: the budget in force at run time t is the last step with time_s <= t."""

    steps: tuple[BudgetStep, ...]
    kind: str = "node"

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError("budget schedule is empty: give at least one time_s,budget_w row")
        if self.kind not in BUDGET_KINDS:
            raise ConfigError(f"budget schedule kind must be 'node' or 'gpu', got {self.kind!r}")
        previous = -math.inf
        for index, step in enumerate(self.steps):
            if not (math.isfinite(step.time_s) and math.isfinite(step.budget_w)):
                raise ConfigError(f"budget schedule row {index + 1}: time_s and budget_w must be finite numbers")
            if step.time_s < 0:
                raise ConfigError(f"budget schedule row {index + 1}: time_s {step.time_s:g} is negative; times are seconds from the start")
            if step.budget_w <= 0:
                raise ConfigError(f"budget schedule row {index + 1}: budget_w {step.budget_w:g} must be positive")
            if step.time_s <= previous:
                raise ConfigError(
                    f"budget schedule row {index + 1}: time_s {step.time_s:g} is not after the previous row's "
                    f"{previous:g}; sort the rows by time_s with no duplicates"
                )
            previous = step.time_s

    def budget_at(self, elapsed_s: float) -> PowerBudget | None:
        """The budget in force `elapsed_s` after the start (None before the first step)."""
        current = None
        for step in self.steps:
            if step.time_s <= elapsed_s:
                current = step
            else:
                break
        return None if current is None else PowerBudget(current.budget_w, self.kind)

    @classmethod
    def load(cls, path: str | Path, kind: str = "node") -> "BudgetSchedule":
        """Read a schedule from a .csv (`time_s,budget_w` header) or .json file.

        Raises:
            ConfigError: one line naming the file, the row and the fix.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"budget schedule {path} does not exist; give a CSV or JSON file of time_s,budget_w")
        text = path.read_text()
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
                if isinstance(data, dict):
                    kind = data.get("kind", kind)
                    data = data.get("steps")
                if not isinstance(data, list):
                    raise ConfigError(f"budget schedule {path}: expected a list of {{time_s, budget_w}} objects")
                rows = [(row["time_s"], row["budget_w"]) for row in data]
            else:
                reader = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
                if reader.fieldnames is None or not {"time_s", "budget_w"} <= {f.strip() for f in reader.fieldnames}:
                    raise ConfigError(f"budget schedule {path}: the CSV header must be time_s,budget_w")
                rows = [(_col(r, "time_s"), _col(r, "budget_w")) for r in reader]
            steps = tuple(BudgetStep(float(t), float(b)) for t, b in rows)
        except (ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
            raise ConfigError(f"budget schedule {path}: cannot read rows of numbers time_s,budget_w ({error})") from None
        try:
            return cls(steps, kind)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None


def _col(row: dict, name: str) -> str:
    for key, value in row.items():
        if key is not None and key.strip() == name:
            return value
    raise KeyError(name)
