"""The profile file: a table of measured configurations plus metadata.

One format, read and written only through this module. A profile is a CSV file
whose first line carries the schema version and the metadata as one JSON
object, then a header, then one row per measured configuration:

    # pals-profile v1 {"model": "mixtral-8x7b", "gpu": "a100-sxm4-80gb", ...}
    model,gpu,num_gpus,tp,ep,power_cap_w,batch_cap,...
    mixtral-8x7b,a100-sxm4-80gb,4,4,1,150.0,1,...

Empty numeric cells mean "not known" (NaN): `arrival_rate_rps` empty means a
saturating load (requests always waiting), `node_power_w` empty means only GPU
power was measured. Every row ends with a newline; a last line without one is
a truncated file. Reads validate everything and raise `ProfileError` with one
line that names the file and the fix; writes are atomic (temporary file and
rename), so a killed profiler never leaves half a file.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from pals.core.io import atomic_write_text
from pals.core.untrusted import is_real_number, number_in, parse_json, read_text_file, whole_in
from pals.core.workload import WorkloadDescriptor
from pals.errors import ConfigError, ProfileError

SCHEMA_VERSION = 1
MAGIC = "# pals-profile"
"""First token of a profile file; followed by ` v<schema> <json metadata>`."""

STRING_COLUMNS = ("model", "gpu")
REQUIRED_NUMERIC_COLUMNS = (
    "num_gpus",
    "tp",
    "ep",
    "power_cap_w",
    "batch_cap",
    "throughput_tps",
    "gpu_power_w",
    "gpu_power_total_w",
    "tokens_per_joule",
    "tokens_per_joule_gpu",
    "window_s",
)
"""Numeric columns that must hold a finite number on every row."""
OPTIONAL_NUMERIC_COLUMNS = (
    "mean_prompt_tokens",
    "mean_output_tokens",
    "arrival_rate_rps",
    "prompt_throughput_tps",
    "node_power_w",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
)
"""Numeric columns that may be empty (NaN): not measured, or saturating load."""

COLUMNS = (
    "model",
    "gpu",
    "num_gpus",
    "tp",
    "ep",
    "power_cap_w",
    "batch_cap",
    "mean_prompt_tokens",
    "mean_output_tokens",
    "arrival_rate_rps",
    "throughput_tps",
    "prompt_throughput_tps",
    "gpu_power_w",
    "gpu_power_total_w",
    "node_power_w",
    "tokens_per_joule",
    "tokens_per_joule_gpu",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "window_s",
)
"""Column order of every profile this module writes (readers accept extra columns)."""

NUMERIC_COLUMNS = REQUIRED_NUMERIC_COLUMNS + OPTIONAL_NUMERIC_COLUMNS
REQUIRED_METADATA = ("model", "gpu", "num_gpus", "tp", "ep")

WHOLE_COLUMNS = ("num_gpus", "tp", "ep", "batch_cap")
"""Columns (and metadata keys, for the first three) that hold whole numbers."""
MAX_GPUS = 4096
"""Most GPUs (and TP, EP degree) a profiled node may have."""
COLUMN_LIMITS: dict[str, tuple[float, float, str]] = {
    "num_gpus": (1, MAX_GPUS, "GPUs"),
    "tp": (1, MAX_GPUS, ""),
    "ep": (1, MAX_GPUS, ""),
    "power_cap_w": (1.0, 10_000.0, "W per GPU"),
    "batch_cap": (1, 1_048_576, "requests"),
    "throughput_tps": (0.0, 1e9, "tokens/s"),
    "gpu_power_w": (0.0, 100_000.0, "W"),
    "gpu_power_total_w": (0.0, 1e7, "W"),
    "tokens_per_joule": (0.0, 1e6, "tokens/J"),
    "tokens_per_joule_gpu": (0.0, 1e6, "tokens/J"),
    "window_s": (1e-3, 1e7, "s"),
    "mean_prompt_tokens": (0.0, 1e8, "tokens"),
    "mean_output_tokens": (0.0, 1e8, "tokens"),
    "arrival_rate_rps": (0.0, 1e6, "requests/s"),
    "prompt_throughput_tps": (0.0, 1e9, "tokens/s"),
    "node_power_w": (0.0, 1e7, "W"),
    "ttft_p50_s": (0.0, 1e6, "s"),
    "ttft_p99_s": (0.0, 1e6, "s"),
    "tpot_p50_s": (0.0, 1e6, "s"),
    "tpot_p99_s": (0.0, 1e6, "s"),
}
"""Plausible range (low, high, unit) of every numeric column: a value outside is a corrupt or
hand-edited file (a negative cap, batch cap 0, inf tokens), refused on read with the range."""
MAX_PROFILE_BYTES = 256 * 1024 * 1024
"""Largest profile read (a 10,000-point profile is ~3 MB). Units: bytes."""


@dataclass
class Profile:
    """A validated profile: metadata plus rows (strings for model/gpu, floats elsewhere, NaN = empty).

    Attributes:
        metadata: The JSON object of the first line (model, gpu, num_gpus, tp, ep, node, workload, ...).
        rows: One dict per measured configuration, keyed by column name.
        path: Where it was read from (None when built in memory).
    """

    metadata: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def model(self) -> str:
        return str(self.metadata["model"])

    @property
    def gpu(self) -> str:
        return str(self.metadata["gpu"])

    @property
    def num_gpus(self) -> int:
        return int(self.metadata["num_gpus"])

    @property
    def tp(self) -> int:
        return int(self.metadata["tp"])

    @property
    def ep(self) -> int:
        return int(self.metadata["ep"])

    @property
    def deployment(self) -> dict[str, Any]:
        """The static deployment the profile was measured on."""
        return {"model": self.model, "gpu": self.gpu, "num_gpus": self.num_gpus, "tp": self.tp, "ep": self.ep}

    @property
    def workload(self) -> WorkloadDescriptor | None:
        """The profiled workload from the metadata (None when the metadata does not say)."""
        data = self.metadata.get("workload")
        if not data or data.get("mean_prompt_tokens") is None or data.get("mean_output_tokens") is None:
            return None
        return WorkloadDescriptor.from_dict(data)

    def column(self, name: str) -> np.ndarray:
        """One column as an array (float64 for numeric columns, object for strings)."""
        if name in STRING_COLUMNS:
            return np.array([row[name] for row in self.rows], dtype=object)
        return np.array([row.get(name, math.nan) for row in self.rows], dtype=np.float64)

    @property
    def has_node_power(self) -> bool:
        """True when every row carries a measured node (wall) power."""
        return len(self.rows) > 0 and bool(np.all(np.isfinite(self.column("node_power_w"))))

    def points(self) -> set[tuple[float, int]]:
        """The (power cap W, batch cap) pairs measured."""
        return {(float(row["power_cap_w"]), int(row["batch_cap"])) for row in self.rows}

    def content_hash(self) -> str:
        """SHA-256 of the header and rows (not the metadata line, which holds a timestamp)."""
        return hashlib.sha256(_table_text(self.rows).encode("utf-8")).hexdigest()


def new_metadata(
    *,
    model: str,
    gpu: str,
    num_gpus: int,
    tp: int,
    ep: int,
    node: str,
    workload: WorkloadDescriptor | None,
    **extra: Any,
) -> dict[str, Any]:
    """Metadata for a new profile (schema, deployment, workload descriptor, creation time, pals version)."""
    from pals import __version__

    metadata: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "model": str(model),
        "gpu": str(gpu),
        "num_gpus": int(num_gpus),
        "tp": int(tp),
        "ep": int(ep),
        "node": str(node),
        "workload": None if workload is None else workload.to_dict(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "pals_version": __version__,
    }
    metadata.update(extra)
    return metadata


def _format_cell(name: str, value: Any) -> str:
    if name in STRING_COLUMNS:
        return str(value)
    if value is None:
        return ""
    number = float(value)
    if math.isnan(number):
        return ""
    if name in ("num_gpus", "tp", "ep", "batch_cap"):
        return str(int(round(number)))
    return repr(number)  # repr round-trips a float exactly


def _table_text(rows: Iterable[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_format_cell(name, row.get(name)) for name in COLUMNS])
    return buffer.getvalue()


def profile_text(metadata: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> str:
    """The full file text of a profile (metadata line, header, rows)."""
    meta = dict(metadata)
    meta["schema"] = SCHEMA_VERSION
    line = f"{MAGIC} v{SCHEMA_VERSION} {json.dumps(meta, sort_keys=True, allow_nan=False)}\n"
    return line + _table_text(rows)


def write_profile(path: str | os.PathLike, metadata: Mapping[str, Any], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write a profile atomically (temporary file + rename): readers never see half a file.

    Raises:
        ProfileError: a row is missing a required value (nothing is written then).
    """
    rows = list(rows)
    missing_meta = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing_meta:
        raise ProfileError(f"profile metadata lacks {', '.join(missing_meta)}; build it with new_metadata(...)")
    for index, row in enumerate(rows):
        for name in REQUIRED_NUMERIC_COLUMNS:
            value = row.get(name)
            if value is None or not math.isfinite(float(value)):
                raise ProfileError(f"row {index} has no finite {name} ({value!r}); refusing to write {path}")
    atomic_write_text(path, profile_text(metadata, rows))
    return Path(path)


def read_profile(path: str | os.PathLike, expect_model: str | None = None) -> Profile:
    """Read and validate a profile.

    Args:
        path: The profile file.
        expect_model: When given, the profile must be of this model.

    Raises:
        ProfileError: missing, empty, truncated or corrupt file; wrong schema version;
            missing columns; non-numeric or missing values; another model than expected.
    """
    file = Path(path)
    fix_new = "re-create it with `pals profile ... --out " + str(file) + "`"
    if not file.exists():
        raise ProfileError(f"profile {file} does not exist; create it with `pals profile ... --out {file}`")
    if file.is_dir():
        raise ProfileError(f"profile {file} is a directory, not a file; pass the profile CSV")
    try:
        text = read_text_file(file, "profile", max_bytes=MAX_PROFILE_BYTES, error=ProfileError, allow_nul=True)
    except ProfileError as error:
        raise ProfileError(f"{error} (corrupt or not a profile?); {fix_new}") from None
    if not text.strip():
        raise ProfileError(f"profile {file} is empty; {fix_new}")
    if not text.startswith(MAGIC + " "):
        raise ProfileError(
            f"profile {file} is not a PALS profile (its first line is not '{MAGIC} v{SCHEMA_VERSION} ...'); {fix_new}"
        )
    if not text.endswith("\n"):
        raise ProfileError(f"profile {file} is truncated (its last line is incomplete); {fix_new}")
    first_line, _, body = text.partition("\n")
    parts = first_line.split(" ", 3)
    if len(parts) < 4 or not parts[2].startswith("v"):
        raise ProfileError(f"profile {file} has a corrupt first line (expected '{MAGIC} v<N> {{json}}'); {fix_new}")
    version = parts[2][1:]
    if version != str(SCHEMA_VERSION):
        raise ProfileError(
            f"profile {file} uses schema v{version}, this pals reads v{SCHEMA_VERSION}; {fix_new} with this pals"
        )
    try:
        metadata = parse_json(parts[3], f"profile {file} metadata", error=ProfileError)
    except ProfileError as error:
        raise ProfileError(f"{error}: corrupt metadata JSON on its first line; {fix_new}") from None
    if not isinstance(metadata, dict):
        raise ProfileError(f"profile {file} metadata is not a JSON object; {fix_new}")
    missing_meta = [key for key in REQUIRED_METADATA if key not in metadata]
    if missing_meta:
        raise ProfileError(f"profile {file} metadata lacks {', '.join(missing_meta)}; {fix_new}")
    _check_metadata(file, metadata, fix_new)

    reader = csv.reader(io.StringIO(body))
    try:
        header = next(reader)
    except StopIteration:
        raise ProfileError(f"profile {file} has no header line (truncated); {fix_new}") from None
    except csv.Error:
        raise ProfileError(f"profile {file} has a corrupt header line; {fix_new}") from None
    missing = [name for name in COLUMNS if name not in header]
    if missing:
        raise ProfileError(f"profile {file} lacks column(s) {', '.join(missing)}; {fix_new}")
    rows: list[dict[str, Any]] = []
    line_no = 2
    try:
        for cells in reader:
            line_no += 1
            if not cells:
                continue
            if len(cells) != len(header):
                raise ProfileError(
                    f"profile {file} line {line_no} has {len(cells)} fields, expected {len(header)} "
                    f"(truncated or corrupt); {fix_new}"
                )
            rows.append(_parse_row(file, line_no, dict(zip(header, cells)), fix_new))
    except csv.Error:
        raise ProfileError(f"profile {file} line {line_no} is corrupt CSV; {fix_new}") from None
    if not rows:
        raise ProfileError(f"profile {file} has no measured rows (an interrupted profile?); {fix_new}")

    for row in rows:
        if row["model"] != str(metadata["model"]):
            raise ProfileError(
                f"profile {file} mixes models ({row['model']!r} in a {metadata['model']!r} profile); {fix_new}"
            )
    if expect_model is not None and str(metadata["model"]) != str(expect_model):
        raise ProfileError(
            f"profile {file} is of model {metadata['model']!r}, not {expect_model!r}; "
            f"profile {expect_model!r} with `pals profile --model {expect_model} --out ...`"
        )
    return Profile(metadata=metadata, rows=rows, path=file)


def _parse_row(file: Path, line_no: int, cells: dict[str, str], fix: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, raw in cells.items():
        if name in STRING_COLUMNS:
            if not raw:
                raise ProfileError(f"profile {file} line {line_no}: column {name} is empty; {fix}")
            row[name] = raw
            continue
        if name not in NUMERIC_COLUMNS:
            row[name] = raw  # extra columns are kept as text
            continue
        if raw.strip() == "":
            if name in REQUIRED_NUMERIC_COLUMNS:
                raise ProfileError(f"profile {file} line {line_no}: column {name} is empty; {fix}")
            row[name] = math.nan
            continue
        try:
            value = float(raw)
        except ValueError:
            raise ProfileError(
                f"profile {file} line {line_no}: column {name} holds {raw!r}, not a number; {fix}"
            ) from None
        if not math.isfinite(value) and name in REQUIRED_NUMERIC_COLUMNS:
            raise ProfileError(f"profile {file} line {line_no}: column {name} is {raw!r}, not finite; {fix}")
        if not math.isnan(value):  # NaN: an optional column spelled "nan" instead of left empty
            _check_value(value, name, f"profile {file} line {line_no}: ", fix)
        row[name] = value
    return row


def _check_value(value: Any, name: str, where: str, fix: str) -> None:
    """`value` within `COLUMN_LIMITS[name]` (a whole number where the column holds one)."""
    low, high, unit = COLUMN_LIMITS[name]
    try:
        if name in WHOLE_COLUMNS:
            whole_in(value, name, int(low), int(high), unit, where=where, error=ProfileError, integral_floats=True)
        else:
            number_in(value, name, low, high, unit, where=where, error=ProfileError)
    except ProfileError as error:
        raise ProfileError(f"{error}; {fix}") from None


def _check_metadata(file: Path, metadata: dict[str, Any], fix: str) -> None:
    """The deployment and workload of the first line: names are text, sizes whole numbers in range."""
    for key in ("model", "gpu"):
        if not isinstance(metadata[key], str) or not metadata[key].strip():
            raise ProfileError(f"profile {file} metadata {key} must be a non-empty name, got {metadata[key]!r}; {fix}")
    for key in ("num_gpus", "tp", "ep"):
        _check_value(metadata[key], key, f"profile {file} metadata ", fix)
    workload = metadata.get("workload")
    if workload is None:
        return
    if not isinstance(workload, dict):
        raise ProfileError(f"profile {file} metadata workload must be an object or null; {fix}")
    for key in ("mean_prompt_tokens", "mean_output_tokens", "arrival_rate_rps"):
        if workload.get(key) is not None and not is_real_number(workload[key]):
            raise ProfileError(f"profile {file} metadata workload {key} must be a number or null, got {workload[key]!r}; {fix}")
    if workload.get("mean_prompt_tokens") is not None and workload.get("mean_output_tokens") is not None:
        try:
            WorkloadDescriptor.from_dict(workload)
        except ConfigError as error:
            raise ProfileError(f"profile {file} metadata {error}; {fix}") from None
