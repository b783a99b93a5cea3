"""Reading what a user (or anyone who can write a file) hands PALS: bounded text, bounded JSON,
numbers within named limits.

Every loader of a user file (profiles, predictor headers, Hugging Face configs, traces, budget
schedules) goes through these, so each kind of garbage gets the same one-line `PalsError` that
names the file or field and the limit, never a `UnicodeDecodeError`, `RecursionError`,
`OverflowError` or a silent coercion (`True` taken as 1 W):

- `read_text_file`: reads at most `max_bytes` (so `/dev/zero` or a 10 GB file cannot exhaust
  memory) and refuses anything that is not UTF-8 text or holds NUL bytes.
- `parse_json`: refuses nesting deeper than `max_depth` *before* parsing (the standard parser
  recurses and would raise `RecursionError` on 100,000 nested brackets), integers longer than
  Python's digit limit, and the non-standard constants NaN / Infinity unless asked for.
- `number_in` / `whole_in`: a real number (bool is not one) that is finite and inside a closed
  range; the message states the range and the unit.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any

from pals.errors import ConfigError, PalsError

MAX_TEXT_FILE_BYTES = 64 * 1024 * 1024
"""Largest text input read by default (the shipped Azure traces are ~1 MB). Units: bytes."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of JSON objects/arrays accepted (real configs nest 3-4 levels)."""


def show(value: Any, limit: int = 40) -> str:
    """`repr(value)` cut to `limit` characters, so a 5,000-digit number cannot flood an error line."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit cannot even be printed
        return "<an integer too long to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fmt_limit(x: float) -> str:
    """A limit as people read it: 10,000,000 rather than 1e+07; 0.01 as is."""
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    return f"{x:g}"


def read_text_file(
    path: str | os.PathLike,
    what: str,
    *,
    max_bytes: int = MAX_TEXT_FILE_BYTES,
    error: type[PalsError] = ConfigError,
    allow_nul: bool = False,
) -> str:
    """The UTF-8 text of a small input file.

    Args:
        path: The file.
        what: What it should be, for the message ("budget schedule", "trace").
        max_bytes: Refuse larger files (read stops there; nothing larger is held in memory).
        error: The `PalsError` subclass to raise.
        allow_nul: Let NUL characters through (for a reader whose own checks name them better).

    Raises:
        error: missing, a directory, unreadable, larger than `max_bytes`, not UTF-8, or holding NUL
            bytes (binary garbage); one line naming the file.
    """
    file = Path(path)
    if file.is_dir():
        raise error(f"{what} {file} is a directory, not a file")
    try:
        with open(file, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{what} {file} does not exist; check the path") from None
    except OSError as exc:
        raise error(f"{what} {file} cannot be read ({exc.strerror or exc}); check the path and permissions") from None
    if len(data) > max_bytes:
        raise error(f"{what} {file} is larger than {fmt_limit(max_bytes)} bytes; is it the right file?")
    return decode_text(data, f"{what} {file}", error=error, allow_nul=allow_nul)


def decode_text(data: bytes, what: str, *, error: type[PalsError] = ConfigError, allow_nul: bool = False) -> str:
    """`data` as UTF-8 text, refusing binary content (invalid UTF-8 or, unless `allow_nul`, NUL bytes)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text (binary or corrupt at byte {exc.start})") from None
    if not allow_nul and "\x00" in text:
        raise error(f"{what} is not text (it holds NUL bytes: binary or corrupt)")
    return text


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """True when `text` nests `[`/`{` deeper than `max_depth` outside strings (a linear scan)."""
    if text.count("[") + text.count("{") <= max_depth:
        return False  # cannot nest deeper than it has brackets: the common case costs two counts
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_json(
    text: str | bytes,
    what: str,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    allow_nan: bool = False,
    error: type[PalsError] = ConfigError,
) -> Any:
    """Parse untrusted JSON.

    Args:
        text: The JSON text (bytes are decoded as UTF-8 first).
        what: The message prefix, usually the file ("budget schedule s.json").
        max_depth: Deepest nesting accepted.
        allow_nan: Accept the non-standard NaN / Infinity / -Infinity constants.
        error: The `PalsError` subclass to raise.

    Raises:
        error: binary input, invalid JSON, nesting beyond `max_depth`, an integer beyond Python's
            digit limit, or (unless `allow_nan`) NaN/Infinity; one line.
    """
    if isinstance(text, (bytes, bytearray)):
        text = decode_text(bytes(text), what, error=error)
    if json_depth_exceeds(text, max_depth):
        raise error(f"{what}: JSON nested deeper than {max_depth} levels; this is not a PALS input")
    kwargs = {} if allow_nan else {"parse_constant": _refuse_constant}
    try:
        return json.loads(text, **kwargs)
    except json.JSONDecodeError as exc:
        raise error(f"{what}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:  # only reachable if max_depth is set above the interpreter's limit
        raise error(f"{what}: JSON nested too deeply; this is not a PALS input") from None
    except ValueError as exc:  # Python's integer digit limit, or a refused NaN/Infinity
        raise error(f"{what}: not valid JSON ({str(exc).splitlines()[0]})") from None


def is_real_number(value: Any) -> bool:
    """int or float (numpy's too), but not bool (JSON `true` must not become 1 W)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def number_in(
    value: Any,
    name: str,
    low: float,
    high: float,
    unit: str = "",
    *,
    where: str = "",
    error: type[PalsError] = ConfigError,
) -> float:
    """`value` as a float, if it is a finite real number in [low, high].

    Args:
        value: What the input held (a bool, a string or None is refused, not converted).
        name: The field, named in the message.
        low, high: The closed range of plausible values.
        unit: Unit for the message ("W", "tokens/s").
        where: Message prefix (the file and row), e.g. "budget schedule s.csv row 3: ".
        error: The `PalsError` subclass to raise.
    """
    unit_text = f" {unit}" if unit else ""
    if not is_real_number(value):
        raise error(f"{where}{name} must be a number{unit_text}, got {show(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf if value > 0 else -math.inf
    if not (math.isfinite(number) and low <= number <= high):
        raise error(
            f"{where}{name} must be a finite {'positive ' if low > 0 else ''}number "
            f"from {fmt_limit(low)} to {fmt_limit(high)}{unit_text}, "
            f"got {show(value)}"
        )
    return number


def whole_in(
    value: Any,
    name: str,
    low: int,
    high: int,
    unit: str = "",
    *,
    where: str = "",
    error: type[PalsError] = ConfigError,
    integral_floats: bool = False,
) -> int:
    """`value` as an int, if it is an integer in [low, high].

    Args:
        integral_floats: Also accept a float with no fractional part (CSV cells are read as floats).
        Others as `number_in`.
    """
    unit_text = f" {unit}" if unit else ""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if integral_floats and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        ok = True
    if not ok or not low <= value <= high:
        raise error(
            f"{where}{name} must be a whole number from {fmt_limit(low)} to {fmt_limit(high)}{unit_text}, "
            f"got {show(value)}"
        )
    return int(value)
