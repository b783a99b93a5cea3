"""The predictor file: numbers as arrays, everything else as JSON; nothing in it can run code.

Layout (format version 3; version 2 had a quadratic trend in log2 batch and no knots):

    PALS-PREDICTOR\\n
    <one line of JSON: the header (metadata, feature names, library versions, profile hash, ...)>\\n
    <sha256 of the payload, hex>\\n
    <payload: an uncompressed .npz archive of plain numeric arrays>

The arrays are every tree of both forests, flattened (`<target>.feature`, `.threshold`, `.left`,
`.right`, `.value`, `.roots`, `.depth`), the trend surfaces (`<target>.trend_low`, `.trend_high`,
`.trend_knots`, `.trend_coef`) and the profiled grid (`caps_w`, `batches`). They are read with
`allow_pickle=False` after each member's header has been checked (plain float64/int64 only, no
compression, declared size within the member), so a crafted file can at worst be refused. Every
index is then bounds-checked, so a crafted tree cannot make prediction read outside its arrays.

Format version 1 held a pickle, which executes code on load: it is refused with the fix (refit).
The checksum only detects truncation and corruption; safety comes from the format.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pals.core.io import atomic_write_bytes
from pals.core.untrusted import parse_json
from pals.errors import ConfigError, ModelMismatchError
from pals.model.trees import Trend

MODEL_FILE_MAGIC = b"PALS-PREDICTOR\n"
MODEL_FORMAT_VERSION = 3
PICKLE_FORMAT_VERSION = 1
"""The former format, whose payload was a pickle."""
MAX_PREDICTOR_BYTES = 512 * 1024 * 1024
"""Largest predictor file read (100-tree forests of a 36-point profile take ~0.2 MB). Units: bytes."""
MAX_ARRAYS = 64
"""Most members a payload may hold (this format writes 24)."""

_FLOAT = "float64"
_INT = "int64"


def fix_for(file: Path) -> str:
    return f"refit it with `pals fit PROFILE --out {file}`"


def write_predictor_file(path: str | os.PathLike, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Write header + checksum + npz payload atomically (readers see the old file or the new one)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value, order="C") for name, value in arrays.items()})
    payload = buffer.getvalue()
    header_line = json.dumps(dict(header), sort_keys=True).encode("utf-8") + b"\n"
    digest = hashlib.sha256(payload).hexdigest().encode("ascii") + b"\n"
    atomic_write_bytes(path, MODEL_FILE_MAGIC + header_line + digest + payload)


def read_container(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """The header and the raw payload of a predictor file, format and checksum checked.

    Raises:
        ConfigError: the file does not exist.
        ModelMismatchError: not a predictor file, a directory, too large, corrupt, truncated, or of
            another format version (version 1, a pickle, gets its own message).
    """
    file = Path(path)
    fix = fix_for(file)
    if not file.exists():
        raise ConfigError(f"predictor file {file} does not exist; {fix}")
    if file.is_dir():
        raise ModelMismatchError(f"predictor file {file} is a directory; give the file `pals fit` wrote")
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_PREDICTOR_BYTES + 1)
    except OSError as exc:
        raise ModelMismatchError(f"predictor file {file} cannot be read ({exc.strerror or exc}); check its permissions") from None
    if len(data) > MAX_PREDICTOR_BYTES:
        raise ModelMismatchError(f"predictor file {file} is larger than {MAX_PREDICTOR_BYTES} bytes; {fix}")
    if not data.startswith(MODEL_FILE_MAGIC):
        raise ModelMismatchError(f"{file} is not a PALS predictor file (or is corrupt); {fix}")
    stream = io.BytesIO(data[len(MODEL_FILE_MAGIC) :])
    header_line = stream.readline()
    digest = stream.readline().strip()
    payload = stream.read()
    header = parse_json(header_line, f"predictor file {file} header", allow_nan=True, error=ModelMismatchError)
    if not isinstance(header, dict):
        raise ModelMismatchError(f"predictor file {file} has corrupt metadata; {fix}")
    version = header.get("format_version")
    if header.get("format") != "pals-predictor":
        raise ModelMismatchError(f"{file} is not a PALS predictor file (or is corrupt); {fix}")
    if version == PICKLE_FORMAT_VERSION and not isinstance(version, bool):
        raise ModelMismatchError(
            f"predictor file format v1 (pickle) is no longer loaded because it can execute code; "
            f"refit with `pals fit PROFILE --out {file}`"
        )
    if version != MODEL_FORMAT_VERSION or isinstance(version, bool):
        raise ModelMismatchError(
            f"predictor file {file} has format version {version!r}, this pals reads {MODEL_FORMAT_VERSION}; {fix}"
        )
    if hashlib.sha256(payload).hexdigest().encode("ascii") != digest:
        raise ModelMismatchError(f"predictor file {file} is truncated or corrupt (checksum mismatch); {fix}")
    return header, payload


def read_arrays(payload: bytes, file: Path) -> dict[str, np.ndarray]:
    """The payload's arrays, refusing anything but small uncompressed plain float64/int64 arrays.

    No member is read before its .npy header says it is a plain numeric array whose bytes fit in the
    member, so neither an object array (pickle) nor a zip bomb gets to run or allocate.
    """
    fix = fix_for(file)

    def refuse(problem: str) -> ModelMismatchError:
        return ModelMismatchError(f"predictor file {file} {problem}; {fix}")

    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            members = archive.infolist()
            if len(members) > MAX_ARRAYS:
                raise refuse(f"holds {len(members)} arrays, more than the {MAX_ARRAYS} this format writes")
            for info in members:
                if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
                    raise refuse(f"holds a member {info.filename!r} that is not a plain stored .npy array")
                with archive.open(info) as member:
                    major, _minor = np.lib.format.read_magic(member)
                    if major == 1:
                        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                    elif major in (2, 3):
                        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                    else:
                        raise refuse(f"holds an array of unknown .npy version {major}")
                    name = info.filename[: -len(".npy")]
                    if dtype.hasobject or dtype.kind not in "if" or dtype.itemsize != 8 or fortran:
                        raise refuse(f"holds array {name!r} of type {dtype}, not plain float64/int64 (refused unread)")
                    if math.prod(shape) * 8 > info.file_size:
                        raise refuse(f"holds array {name!r} whose declared shape {shape} exceeds its data")
                with archive.open(info) as member:  # read_array parses the header again, from the start
                    array = np.lib.format.read_array(member, allow_pickle=False)
                arrays[name] = array.astype(np.float64 if dtype.kind == "f" else np.int64, copy=False)
    except ModelMismatchError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, OverflowError, MemoryError) as exc:
        raise refuse(f"has a corrupt array payload ({type(exc).__name__})") from None
    return arrays


def check_array(
    arrays: Mapping[str, np.ndarray], name: str, kind: str, file: Path, *, ndim: int = 1, size: int | None = None
) -> np.ndarray:
    """One named array of the payload, of the expected kind ("float64"/"int64"), rank and size."""
    array = arrays.get(name)
    fix = fix_for(file)
    if array is None:
        raise ModelMismatchError(f"predictor file {file} lacks array {name!r}; {fix}")
    if str(array.dtype) != kind or array.ndim != ndim or (size is not None and array.size != size):
        raise ModelMismatchError(
            f"predictor file {file} array {name!r} has type {array.dtype} and shape {array.shape}, "
            f"expected {kind} of rank {ndim}{'' if size is None else f' and size {size}'}; {fix}"
        )
    return array


def check_forest(arrays: Mapping[str, np.ndarray], target: str, n_features: int, file: Path) -> dict[str, Any]:
    """The flattened trees of one forest, every index within bounds.

    Returns:
        feature, threshold, left, right, value, roots (arrays) and depth (int), as `_PackedForest` takes them.
    """
    fix = fix_for(file)
    p = f"{target}."
    feature = check_array(arrays, p + "feature", _INT, file)
    n = feature.size
    threshold = check_array(arrays, p + "threshold", _FLOAT, file, size=n)
    left = check_array(arrays, p + "left", _INT, file, size=n)
    right = check_array(arrays, p + "right", _INT, file, size=n)
    value = check_array(arrays, p + "value", _FLOAT, file, size=n)
    roots = check_array(arrays, p + "roots", _INT, file)
    depth_array = check_array(arrays, p + "depth", _INT, file, ndim=0)
    depth = int(depth_array)

    def bad(problem: str) -> ModelMismatchError:
        return ModelMismatchError(f"predictor file {file} forest {target!r} {problem}; {fix}")

    if n < 1 or not 1 <= roots.size <= n:
        raise bad(f"has {n} nodes and {roots.size} trees")
    if np.any((feature < 0) | (feature >= n_features)):
        raise bad(f"splits on a feature outside 0..{n_features - 1}")
    for name, index in (("left", left), ("right", right), ("roots", roots)):
        if np.any((index < 0) | (index >= n)):
            raise bad(f"has a {name} index outside its {n} nodes")
    if np.any(np.isnan(threshold)) or not np.all(np.isfinite(value)):
        raise bad("has a NaN threshold or a non-finite leaf value")
    if not 0 <= depth <= n:
        raise bad(f"claims depth {depth} for {n} nodes")
    return {"feature": feature, "threshold": threshold, "left": left, "right": right, "value": value,
            "roots": roots, "depth": depth}


def check_trend(arrays: Mapping[str, np.ndarray], target: str, n_features: int, file: Path) -> dict[str, np.ndarray]:
    """The trend surface of one target: clipping range, knots and coefficients, finite and of matching size."""
    p = f"{target}."
    low = check_array(arrays, p + "trend_low", _FLOAT, file, size=n_features)
    high = check_array(arrays, p + "trend_high", _FLOAT, file, size=n_features)
    knots = check_array(arrays, p + "trend_knots", _FLOAT, file)
    if not 1 <= knots.size <= Trend.MAX_KNOTS or not np.all(np.isfinite(knots)) or np.any(np.diff(knots) <= 0):
        raise ModelMismatchError(f"predictor file {file} trend of {target!r} has {knots.size} knots that are not "
                                 f"1-{Trend.MAX_KNOTS} finite increasing values; {fix_for(file)}")
    coef = check_array(arrays, p + "trend_coef", _FLOAT, file, size=Trend.n_terms(low, high, knots.size))
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(np.isfinite(coef))) or np.any(low > high):
        raise ModelMismatchError(f"predictor file {file} trend of {target!r} is not finite or inverted; {fix_for(file)}")
    return {"low": low, "high": high, "knots": knots, "coef": coef}
