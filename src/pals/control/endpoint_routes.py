"""The endpoint's routes: what each does with the loop, and strict validation of what it is sent.

Every refusal is a `BadRequest` (a 4xx and one line), never a 500: bodies are parsed with limits
(integers of at most `MAX_INT_DIGITS` digits, no NaN/Infinity, no duplicate keys, nesting beyond
Python's recursion limit refused), and numbers are checked against plausible ranges that the
error names. Responses are built here and serialised by the server outside any loop lock.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from pals.control.budget import BUDGET_KINDS, PowerBudget, ThroughputTarget
from pals.control.slo import MAX_TPOT_MS, MAX_TTFT_S, SLO_QUANTILES, Slo
from pals.control.endpoint_guard import TokenBucket, retry_after_header
from pals.core.power import NodePowerModel
from pals.errors import ConfigError

MAX_INT_DIGITS = 20
"""Longest integer literal accepted in a body (Python would spend time converting 5,000 digits)."""

MIN_BUDGET_W = 1.0
"""Smallest budget accepted. Units: W."""

BUDGET_HEADROOM = 100.0
"""A budget may be at most this many times the node's maximum possible draw: more than that is
a typo or an attack, never a constraint (and would be taken as unconstrained anyway)."""

MIN_TARGET_TPS = 0.01
"""Smallest throughput target accepted. Units: tokens/s."""

MAX_TARGET_TPS = 1e7
"""Largest throughput target accepted (beyond any node's capacity). Units: tokens/s."""

JSON_ROUTES = ("/budget", "/target", "/slo")
"""Routes that take a JSON body (PUT or POST)."""

ROUTE_LIST = "/status, /frontier, /budget, /target, /slo, /decisions, /metrics"


class BadRequest(Exception):
    """A request refused with a 4xx status and a one-line message."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def parse_json_body(body: bytes, example: str) -> dict[str, Any]:
    """Decode a request body as one strict JSON object (raises `BadRequest` 400)."""
    if not body:
        raise BadRequest(400, f"empty body; send JSON like {example}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "body is not UTF-8 text; send JSON") from None
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant,
                          object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as error:
        raise BadRequest(400, f"body is not valid JSON ({error.msg} at character {error.pos}); send JSON like {example}") from None
    except RecursionError:
        raise BadRequest(400, "body is nested too deeply; send a flat JSON object") from None
    except ValueError as error:  # any other conversion limit of the json module
        raise BadRequest(400, f"body is not acceptable JSON ({error}); send JSON like {example}") from None
    if not isinstance(data, dict):
        raise BadRequest(400, f"body must be a JSON object like {example}")
    return data


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadRequest(400, f"integer with {len(text.lstrip('-'))} digits is out of range (at most {MAX_INT_DIGITS}); send a plain number")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e999
        raise BadRequest(400, f"number {text[:40]} overflows; send a finite number")
    return value


def _reject_constant(name: str) -> Any:
    raise BadRequest(400, f"{name} is not a number; send a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise BadRequest(400, f"field \"{duplicate[:40]}\" appears more than once")
    return dict(pairs)


def check_fields(data: dict[str, Any], required: str, optional: tuple[str, ...] = ()) -> None:
    if required not in data:
        raise BadRequest(400, f"missing field \"{required}\"")
    unknown = set(data) - {required, *optional}
    if unknown:
        raise BadRequest(400, f"unknown field(s): {', '.join(sorted(k[:40] for k in unknown))}; allowed: {', '.join((required, *optional))}")


def number_in_range(value: Any, field: str, low: float, high: float, unit: str, why_high: str) -> float:
    """`value` as a float if it is a JSON number within [low, high], else `BadRequest` 400 naming the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(400, f"{field} must be a number of {unit} (or null to remove it), got {json.dumps(value)[:40]}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise BadRequest(400, f"{field} must be a positive number between {low:g} and {high:,.0f} {unit} ({why_high}), got {number:g}")
    return number


def content_type_is_json(value: str | None) -> bool:
    """`application/json`, optionally with a UTF-8 (or ASCII) charset parameter."""
    if not value:
        return False
    media, *params = (part.strip().lower() for part in value.split(";"))
    if media != "application/json":
        return False
    for param in params:
        name, _, arg = param.partition("=")
        if name.strip() == "charset" and arg.strip().strip('"') not in ("utf-8", "utf8", "us-ascii"):
            return False
    return True


class Routes:
    """The endpoint's routes over one `ControlLoop`.

    Args:
        loop: the controller (`status()`, `frontier()`, `set_budget()`, `set_target()`, `log`,
            `metrics`, `constraints`, `power_model`).
        max_decisions: the most records one GET /decisions returns.
        buckets: per-route rate limits (route -> `TokenBucket`); routes absent are not limited.
    """

    def __init__(self, loop, max_decisions: int, buckets: dict[str, TokenBucket]) -> None:
        self.loop = loop
        self.max_decisions = max_decisions
        self.buckets = buckets
        self._table: dict[str, tuple[tuple[str, ...], Callable[[Any, bytes | None], Any]]] = {
            "/status": (("GET",), lambda url, body: self.loop.status()),
            "/frontier": (("GET",), lambda url, body: self.loop.frontier()),
            "/metrics": (("GET",), lambda url, body: self.loop.metrics.exposition()),
            "/decisions": (("GET",), lambda url, body: self._decisions(url.query)),
            "/budget": (("PUT", "POST"), lambda url, body: self._budget(body)),
            "/target": (("PUT", "POST"), lambda url, body: self._target(body)),
            "/slo": (("PUT", "POST"), lambda url, body: self._slo(body)),
        }

    @staticmethod
    def route_of(path: str) -> str:
        return urlsplit(path).path.rstrip("/") or "/"

    def handle(self, method: str, path: str, body: bytes | None, content_type: str | None) -> tuple[int, Any]:
        """Route one request; returns (200, JSON-ready payload or bytes). Raises `BadRequest`."""
        url = urlsplit(path)
        route = url.path.rstrip("/") or "/"
        if route not in self._table:
            raise BadRequest(404, f"no route {url.path[:100]}; try {ROUTE_LIST}")
        methods, action = self._table[route]
        if method not in methods:
            raise BadRequest(405, f"method {method} not allowed on {route}; use {' or '.join(methods)}",
                             (("Allow", ", ".join(methods)),))
        bucket = self.buckets.get(route)
        if bucket is not None:
            wait_s = bucket.take()
            if wait_s > 0:
                raise BadRequest(429, f"too many {route} requests; retry in {wait_s:.1f} s", (retry_after_header(wait_s),))
        # An absent body needs no type (it is refused as empty); any body must be declared JSON.
        if route in JSON_ROUTES and body and not content_type_is_json(content_type):
            raise BadRequest(415, f"Content-Type must be application/json, got {(content_type or 'none')[:60]!r}")
        return 200, action(url, body)

    def _decisions(self, query: str) -> list[dict[str, Any]]:
        values = parse_qs(query).get("n", ["20"])
        text = values[0].strip()
        if not re.fullmatch(r"[0-9]{1,9}", text):
            raise BadRequest(400, "n must be an integer, e.g. /decisions?n=50")
        n = int(text)
        if not 1 <= n <= self.max_decisions:
            raise BadRequest(400, f"n must be between 1 and {self.max_decisions} (read decisions.jsonl for more), got {n}")
        return self.loop.log.recent(n)

    def max_draw_w(self, kind: str) -> float:
        """The node's maximum possible draw for a budget of `kind`: every GPU at its top cap. Units: W."""
        c = self.loop.constraints
        gpu_w = c.num_gpus * c.power_cap_max_w
        if kind == "gpu":
            return gpu_w
        model = getattr(self.loop, "power_model", None) or NodePowerModel()
        return model.node_w(gpu_w)

    def _budget(self, body: bytes | None) -> dict[str, Any]:
        data = parse_json_body(body or b"", '{"budget_w": 1500, "kind": "node"}')
        check_fields(data, "budget_w", ("kind",))
        kind = data.get("kind", "node")
        if kind not in BUDGET_KINDS:
            raise BadRequest(400, f"budget kind must be 'node' or 'gpu', got {json.dumps(kind)[:40]}")
        if data["budget_w"] is None:
            self.loop.set_budget(None)
            return {"budget": None}
        most_w = self.max_draw_w(kind)
        budget_w = number_in_range(data["budget_w"], "budget_w", MIN_BUDGET_W, BUDGET_HEADROOM * most_w, "W",
                                   f"at most {BUDGET_HEADROOM:g} x this node's maximum {kind} draw of {most_w:,.0f} W")
        try:
            budget = PowerBudget(budget_w, kind)
        except ConfigError as error:  # the dataclass's own checks, should they ever be stricter
            raise BadRequest(400, str(error)) from None
        self.loop.set_budget(budget)
        return {"budget": {"budget_w": budget.budget_w, "kind": budget.kind}}

    def _target(self, body: bytes | None) -> dict[str, Any]:
        data = parse_json_body(body or b"", '{"target_tps": 2000}')
        check_fields(data, "target_tps")
        if data["target_tps"] is None:
            self.loop.set_target(None)
            return {"target": None}
        target_tps = number_in_range(data["target_tps"], "target_tps", MIN_TARGET_TPS, MAX_TARGET_TPS, "tokens/s",
                                     "beyond any node's capacity")
        try:
            target = ThroughputTarget(target_tps)
        except ConfigError as error:
            raise BadRequest(400, str(error)) from None
        self.loop.set_target(target)
        return {"target": {"target_tps": target.target_tps}}

    def _slo(self, body: bytes | None) -> dict[str, Any]:
        """`{"tpot_ms": 50, "ttft_s": 2.0, "quantile": 0.99}`: each objective optional (null or absent:
        none), both null removes the SLO; quantile defaults to 0.99."""
        data = parse_json_body(body or b"", '{"tpot_ms": 50, "ttft_s": 2.0, "quantile": 0.99}')
        allowed = ("tpot_ms", "ttft_s", "quantile")
        unknown = set(data) - set(allowed)
        if unknown:
            raise BadRequest(400, f"unknown field(s): {', '.join(sorted(k[:40] for k in unknown))}; "
                                  f"allowed: {', '.join(allowed)}")
        if "tpot_ms" not in data and "ttft_s" not in data:
            raise BadRequest(400, 'missing field "tpot_ms" or "ttft_s" (null removes the SLO)')
        tpot_ms, ttft_s, quantile = (data.get(k) for k in allowed)
        if tpot_ms is not None:
            tpot_ms = number_in_range(tpot_ms, "tpot_ms", 1e-3, MAX_TPOT_MS, "ms", "a minute per token is no objective")
        if ttft_s is not None:
            ttft_s = number_in_range(ttft_s, "ttft_s", 1e-3, MAX_TTFT_S, "s", "an hour to the first token is no objective")
        if quantile is not None and (isinstance(quantile, bool) or quantile not in SLO_QUANTILES):
            raise BadRequest(400, f"quantile must be one of {', '.join(map(str, SLO_QUANTILES))}, "
                                  f"got {json.dumps(quantile)[:40]}")
        if tpot_ms is None and ttft_s is None:
            self.loop.set_slo(None)
            return {"slo": None}
        try:
            slo = Slo(tpot_ms, ttft_s, 0.99 if quantile is None else float(quantile))
        except ConfigError as error:
            raise BadRequest(400, str(error)) from None
        self.loop.set_slo(slo)
        return {"slo": slo.to_json()}
