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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pals.core.untrusted import fmt_limit, is_real_number, number_in, parse_json, read_text_file, show
from pals.errors import ConfigError

BUDGET_KINDS = ("node", "gpu")
MIN_BUDGET_W = 1.0
"""Smallest power budget accepted. Units: W. Below it no GPU can run; 1e-300 W is a typo."""
MAX_BUDGET_W = 10_000_000.0
"""Largest power budget accepted (10 MW, a whole data hall). Units: W. Beyond it a budget is a
typo, and arithmetic on it (1e308 W split over GPUs) overflows."""
MIN_TARGET_TPS = 0.01
"""Smallest throughput target accepted. Units: generated tokens/s."""
MAX_TARGET_TPS = 10_000_000.0
"""Largest throughput target accepted. Units: generated tokens/s (a whole cluster makes ~1e5)."""
MAX_SCHEDULE_TIME_S = 1e9
"""Latest step time accepted in a budget schedule (about 31 years). Units: s."""
MAX_SCHEDULE_STEPS = 100_000
"""Most steps a budget schedule may have."""
MAX_SCHEDULE_BYTES = 16 * 1024 * 1024
"""Largest budget schedule file read. Units: bytes."""


def _check_kind(kind: Any, what: str) -> None:
    if kind not in BUDGET_KINDS:
        raise ConfigError(f"{what} kind must be 'node' or 'gpu', got {show(kind)}")


@dataclass(frozen=True)
class PowerBudget:
    """A power budget the chosen configuration must fit under.

    Validated on construction, so every path that makes one (flags, the endpoint, a schedule, the
    coordinator, a decision log read back) refuses the same values with the same line.
    """

    budget_w: float
    """The limit, from `MIN_BUDGET_W` (1 W) to `MAX_BUDGET_W` (10 MW). Units: W."""
    kind: str = "node"
    """'node': wall power of the node (measured, or estimated from GPU power);
    'gpu': the sum of the node's GPU power."""

    def __post_init__(self) -> None:
        number_in(self.budget_w, "budget_w", MIN_BUDGET_W, MAX_BUDGET_W, "W")
        _check_kind(self.kind, "budget")


@dataclass(frozen=True)
class ThroughputTarget:
    """Output tokens per second the node should deliver (when offered at least that much).

    Validated on construction (see `PowerBudget`).
    """

    target_tps: float
    """From `MIN_TARGET_TPS` (0.01) to `MAX_TARGET_TPS` (1e7). Units: generated tokens/s, whole node."""

    def __post_init__(self) -> None:
        number_in(self.target_tps, "target_tps", MIN_TARGET_TPS, MAX_TARGET_TPS, "tokens/s")


@dataclass(frozen=True)
class BudgetStep:
    """One step of a `BudgetSchedule`."""

    time_s: float
    """Seconds from the start of the run at which this budget takes effect (0 to `MAX_SCHEDULE_TIME_S`)."""
    budget_w: float
    """The budget from then on, in the range `PowerBudget` accepts. Units: W."""

    def __post_init__(self) -> None:
        number_in(self.time_s, "time_s", 0.0, MAX_SCHEDULE_TIME_S, "s")
        number_in(self.budget_w, "budget_w", MIN_BUDGET_W, MAX_BUDGET_W, "W")


@dataclass(frozen=True)
class BudgetSchedule:
    """A step function: the budget in force at run time t is the last step with time_s <= t."""

    steps: tuple[BudgetStep, ...]
    """The steps, strictly increasing in time_s (1 to `MAX_SCHEDULE_STEPS` of them)."""
    kind: str = "node"
    """What every step limits: 'node' or 'gpu' (as `PowerBudget.kind`)."""

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError("budget schedule is empty: give at least one time_s,budget_w row")
        if len(self.steps) > MAX_SCHEDULE_STEPS:
            raise ConfigError(f"budget schedule has {len(self.steps)} steps, more than {fmt_limit(MAX_SCHEDULE_STEPS)}")
        _check_kind(self.kind, "budget schedule")
        previous = -math.inf
        for index, step in enumerate(self.steps):
            if not isinstance(step, BudgetStep):
                raise ConfigError(f"budget schedule row {index + 1}: expected a BudgetStep, got {show(step)}")
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

        JSON values must be numbers (`true` is not 1 W); CSV cells are parsed as decimal numbers.
        Every value is held to the ranges of `BudgetStep`.

        Raises:
            ConfigError: one line naming the file, the row, the field and its range.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"budget schedule {path} does not exist; give a CSV or JSON file of time_s,budget_w")
        text = read_text_file(path, "budget schedule", max_bytes=MAX_SCHEDULE_BYTES)
        where = f"budget schedule {path}"
        if path.suffix.lower() == ".json":
            kind, rows = _json_rows(parse_json(text, where), kind, where)
        else:
            rows = _csv_rows(text, where)
        if len(rows) > MAX_SCHEDULE_STEPS:
            raise ConfigError(f"{where} has {len(rows)} rows, more than {fmt_limit(MAX_SCHEDULE_STEPS)}")
        steps = []
        for index, (time_s, budget_w) in enumerate(rows):
            try:
                steps.append(BudgetStep(time_s, budget_w))
            except ConfigError as error:
                raise ConfigError(f"{where} row {index + 1}: {error}") from None
        try:
            return cls(tuple(steps), kind)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None


def _json_rows(data: Any, kind: Any, where: str) -> tuple[Any, list[tuple[Any, Any]]]:
    """(kind, [(time_s, budget_w), ...]) from either JSON shape; values left as parsed (checked by BudgetStep)."""
    if isinstance(data, dict):
        kind = data.get("kind", kind)
        data = data.get("steps")
    if not isinstance(data, list):
        raise ConfigError(f"{where}: expected a list of {{time_s, budget_w}} objects (or {{\"kind\", \"steps\"}})")
    rows = []
    for index, row in enumerate(data):
        if not isinstance(row, dict) or "time_s" not in row or "budget_w" not in row:
            raise ConfigError(f"{where} row {index + 1}: expected an object with time_s and budget_w, got {show(row)}")
        rows.append((row["time_s"], row["budget_w"]))
    return kind, rows


def _csv_rows(text: str, where: str) -> list[tuple[float, float]]:
    """[(time_s, budget_w), ...] from CSV text with a time_s,budget_w header ('#' lines are comments)."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    try:
        reader = csv.DictReader(lines)
        if reader.fieldnames is None or not {"time_s", "budget_w"} <= {f.strip() for f in reader.fieldnames}:
            raise ConfigError(f"{where}: the CSV header must be time_s,budget_w")
        rows = []
        for index, record in enumerate(reader):
            cells = []
            for name in ("time_s", "budget_w"):
                raw = _col(record, name)
                try:
                    cells.append(float(raw))
                except (TypeError, ValueError):
                    raise ConfigError(
                        f"{where} row {index + 1}: cannot read {name} {show(raw)} as a number"
                    ) from None
            rows.append((cells[0], cells[1]))
    except csv.Error as error:
        raise ConfigError(f"{where}: corrupt CSV ({error})") from None
    return rows


def _col(row: dict, name: str) -> str | None:
    for key, value in row.items():
        if key is not None and key.strip() == name:
            return value
    return None
