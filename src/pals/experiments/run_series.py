"""A run's decision log as time series, for `pals report` (the Grafana views without Grafana).

Reads `decisions.jsonl` in a run folder (`pals run --out`, `pals serve --decision-log`), with its
rotated history when there is one (`decisions.jsonl.N.gz` / `.N`, oldest first), each line through
`IntervalRecord.from_json`. A log that a restarted controller appended to holds several runs (the
interval index starts again at 0): they are laid end to end on one time axis and the restarts
are kept, so the report can mark them.

Latency (TTFT/TPOT p50/p99) is read from the optional sample keys `ttft_p50_s`, `ttft_p99_s`,
`tpot_p50_s`, `tpot_p99_s` (seconds) when a log has them (docs/metrics.md, "Sources").
"""

from __future__ import annotations

import gzip
from array import array
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pals.control.decision_log import DecisionLog
from pals.control.record import IntervalRecord
from pals.errors import ConfigError

LOG_NAME = "decisions.jsonl"
LATENCY_KEYS = ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s")
"""Optional `sample` keys of the decision log the report plots when present. Units: s."""


@dataclass
class RunSeries:
    """One value per measured control interval (the first line of each run, which has no
    measurement, is left out). Times are seconds from the start of the log."""

    source: Path
    """The live log file read (its rotated history, if any, came first)."""
    policy: str
    """Policy of the last run in the log."""
    t_s: np.ndarray
    """End of each interval on the report's time axis. Units: s."""
    interval_s: np.ndarray
    """Length of each interval. Units: s."""
    node_power_w: np.ndarray
    """Mean node wall power over the interval. Units: W."""
    gpu_power_w: np.ndarray
    """Mean total GPU power over the interval. Units: W."""
    node_budget_w: np.ndarray
    """Node-power budget in force (NaN when none, or when the budget limits GPU power). Units: W."""
    gpu_budget_w: np.ndarray
    """GPU-power budget in force (NaN when none, or when the budget limits node power). Units: W."""
    throughput_tps: np.ndarray
    """Generated tokens per second over the interval. Units: tokens/s."""
    tokens: np.ndarray
    """Generated tokens of the interval (the engine counter's delta when logged). Units: tokens."""
    window_throughput_tps: np.ndarray
    """Throughput over the trailing QoS window (what the target is judged on). Units: tokens/s."""
    target_tps: np.ndarray
    """Throughput target in force (NaN when none). Units: tokens/s."""
    power_cap_w: np.ndarray
    """Mean power cap in force per GPU at the end of the interval. Units: W."""
    batch_cap: np.ndarray
    """Batch cap in force at the end of the interval. Units: sequences."""
    qos_violation: np.ndarray
    """True where the interval violated the throughput target."""
    config_changed: np.ndarray
    """True where a new configuration was applied."""
    latency_s: dict[str, np.ndarray] = field(default_factory=dict)
    """Per `LATENCY_KEYS` key present in the log, its values (NaN where an interval lacks it). Units: s."""
    restarts_s: list[float] = field(default_factory=list)
    """Times at which a restarted controller's run begins. Units: s."""

    def __len__(self) -> int:
        return len(self.t_s)

    @property
    def duration_s(self) -> float:
        return float(np.nansum(self.interval_s))

    def totals(self) -> dict[str, float]:
        """Run-wide figures: tokens, node energy (J), tokens/J, mean power (W), QoS violation share,
        configuration changes."""
        # Intervals whose throughput or power the log lacks (null) count in neither sum.
        known = np.isfinite(self.throughput_tps) & np.isfinite(self.node_power_w) & np.isfinite(self.interval_s)
        tokens = float(np.sum(self.tokens[known]))
        energy_j = float(np.sum((self.node_power_w * self.interval_s)[known]))
        duration = float(np.sum(self.interval_s[known]))
        return {
            "tokens": tokens,
            "node_energy_j": energy_j,
            "tokens_per_joule": tokens / energy_j if energy_j > 0 else math.nan,
            "mean_node_power_w": energy_j / duration if duration > 0 else math.nan,
            "qos_violation_share": float(self.qos_violation.mean()) if len(self) else math.nan,
            "config_changes": int(self.config_changed.sum()),
        }


def find_log(run_dir: str | Path) -> Path:
    """The decision log of `run_dir` (a folder holding `decisions.jsonl`, or the file itself)."""
    path = Path(run_dir)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give the --out folder of `pals run` "
                          f"(or a {LOG_NAME} file, e.g. `pals serve --decision-log`)")
    if path.is_file():
        return path
    log = path / LOG_NAME
    if not log.is_file():
        raise ConfigError(f"{path} has no {LOG_NAME}; give the --out folder of `pals run` "
                          f"(or the {LOG_NAME} file itself)")
    return log


def _lines(path: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, ends with a newline) of each non-blank line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line, line.endswith("\n")
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise ConfigError(f"cannot read {path} ({error}); is it a PALS decision log?") from None


def iter_records(log: Path) -> Iterator[tuple[IntervalRecord, dict[str, Any]]]:
    """Every record of `log` and its history, oldest first, with the JSON it came from (streamed:
    a week of 500 ms intervals is over a million lines).

    A last line without its newline that does not parse (a write cut by a crash) is skipped with a
    note on stderr; any other bad line is an error naming the file and line.
    """
    for path in DecisionLog.files(log):  # rotated history oldest first, then the live file
        for number, text, complete in _lines(path):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as error:
                if not complete:
                    print(f"pals report: skipped {path}:{number}, a line cut short (a crash mid-write)", file=sys.stderr)
                    continue
                raise ConfigError(f"{path}:{number}: not a JSON line ({error.msg}); is this a PALS decision log?") from None
            try:
                record = IntervalRecord.from_json(data)
            except ConfigError as error:
                raise ConfigError(f"{path}:{number}: {error}") from None
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                raise ConfigError(f"{path}:{number}: not a PALS decision record ({error})") from None
            yield record, data


def _number(value: Any) -> float:
    """A logged number as a float; the log writes NaN as null."""
    return math.nan if value is None else float(value)


_ROWS = ("t_s", "interval_s", "tokens", "node_power_w", "gpu_power_w", "node_budget_w", "gpu_budget_w", "throughput_tps",
         "window_throughput_tps", "target_tps", "power_cap_w", "batch_cap", "qos_violation", "config_changed")


def _append(rows: dict[str, array], latency: dict[str, array], record: IntervalRecord, data: dict[str, Any],
            offset_s: float) -> None:
    """One measured interval's values onto the row arrays (NaN where the log has null)."""
    sample, budget, measured, target = record.sample, record.budget, record.measured, record.target
    budget_w = _number(budget.budget_w) if budget is not None else math.nan
    values = {
        "t_s": offset_s + _number(record.t_s),
        "interval_s": _number(record.interval_s),
        "node_power_w": _number(sample.node_power_w),
        "gpu_power_w": _number(sample.gpu_power_w),
        "node_budget_w": budget_w if budget is not None and budget.kind == "node" else math.nan,
        "gpu_budget_w": budget_w if budget is not None and budget.kind == "gpu" else math.nan,
        "throughput_tps": _number(sample.throughput_tps),
        # The counter's own delta when logged (what the summary sums), else rate x interval.
        "tokens": (_number(sample.generated_tokens) if sample.generated_tokens is not None
                   else _number(sample.throughput_tps) * _number(record.interval_s)),
        "window_throughput_tps": _number(measured.window_throughput_tps) if measured else math.nan,
        "target_tps": _number(target.target_tps) if target is not None else math.nan,
        "power_cap_w": _number(sample.power_cap_w),
        "batch_cap": _number(sample.batch_cap),
        "qos_violation": float(bool(record.qos_violation)),
        "config_changed": float(bool(record.config_changed)),
    }
    raw_sample = data.get("sample") or {}
    lat = {key: _number(raw_sample.get(key)) for key in LATENCY_KEYS}
    # Appended only once every value converted, so the arrays stay the same length.
    for key, value in values.items():
        rows[key].append(value)
    for key, value in lat.items():
        latency[key].append(value)


def load_run(run_dir: str | Path) -> RunSeries:
    """The time series of the run in `run_dir` (see the module docstring)."""
    log = find_log(run_dir)
    # Compact float arrays, not lists of objects: a week-long log has over a million intervals.
    rows: dict[str, array] = {k: array("d") for k in _ROWS}
    latency: dict[str, array] = {k: array("d") for k in LATENCY_KEYS}
    restarts: list[float] = []
    offset_s = 0.0
    last_t_s = None
    policy = None
    for record, data in iter_records(log):
        policy = record.policy
        try:
            if last_t_s is not None and (record.interval == 0 or record.t_s < last_t_s):
                # A restarted controller's run: continue the time axis where the last one ended.
                offset_s = rows["t_s"][-1] if rows["t_s"] else offset_s
                restarts.append(offset_s)
            last_t_s = record.t_s
            if record.sample is not None:
                _append(rows, latency, record, data, offset_s)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{log}: interval {record.interval}: a value is not a number ({error}); "
                              "is this a PALS decision log?") from None
    if policy is None:
        raise ConfigError(f"{log} is empty: the run wrote no control interval")
    if not rows["t_s"]:
        raise ConfigError(f"{log} has no measured interval yet (only the first line of a run); let the run go longer")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}
    for flag in ("qos_violation", "config_changed"):
        arrays[flag] = arrays[flag].astype(bool)
    present = {k: values for k, values in ((k, np.asarray(v, dtype=np.float64)) for k, v in latency.items())
               if np.isfinite(values).any()}
    return RunSeries(source=log, policy=policy, latency_s=present,
                     restarts_s=[t for t in restarts if t > 0], **arrays)
