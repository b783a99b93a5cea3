"""Talking to one node's control endpoint: read its status, set its budget and target.

The coordinator only ever sees a `NodeClient`. `HttpNodeClient` speaks the
node endpoint's HTTP interface (GET /status, PUT /budget, PUT /target, and
GET /frontier where the node serves it); in the experiments the nodes are
simulated, but they are reached through exactly this client over localhost.
Every call ends within the client's `timeout_s`, retries included, however the
node misbehaves (`transport`), and raises `EngineUnreachable` when it got no
usable answer: the coordinator treats that node as down for the round.

`NodeStatus` is the coordinator's view of a node, parsed tolerantly from the
endpoint's /status JSON: a missing optional field becomes None rather than an
error, so a newer or older endpoint still works.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from pals.cluster import transport
from pals.cluster.allocation import Frontier
from pals.control.record import IntervalSample
from pals.errors import ConfigError, EngineUnreachable


@dataclass(frozen=True)
class NodeStatus:
    """What the coordinator reads from one node each round."""

    name: str
    time_s: float | None
    throughput_tps: float | None
    """Output tokens/s over the node's last control interval."""
    node_power_w: float | None
    """Wall power over the last interval (measured or the node's estimate). Units: W."""
    gpu_power_w: float | None
    requests_waiting: int | None
    num_gpus: int | None
    power_cap_min_w: float | None
    power_cap_max_w: float | None
    batch_cap_max: int | None
    budget_w: float | None
    """Budget in force as the node reports it (None: the node runs without one). Units: W."""
    target_tps: float | None
    power_cap_w: float | None
    batch_cap: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The /status JSON as received."""
    sample: IntervalSample | None = None
    """The node's last interval sample, typed, when /status carries a complete `last_sample`
    (a PALS node endpoint: `ControlLoop.status`)."""
    budget_kind: str | None = None
    """What `budget_w` limits: "node" (wall power) or "gpu" (sum of GPU power)."""

    @property
    def node_budget_w(self) -> float | None:
        """The node-power budget in force, or None when there is none (or it is not a positive
        node-power budget, e.g. a GPU budget someone set by hand): the coordinator rewrites it."""
        if self.budget_kind != "node" or self.budget_w is None or self.budget_w <= 0:
            return None
        return self.budget_w

    @property
    def demand_limited(self) -> bool:
        """True when the node had nothing waiting: it served all the load it was offered."""
        return self.requests_waiting is not None and self.requests_waiting == 0


class NodeClient(Protocol):
    """One node as the coordinator sees it."""

    name: str

    def status(self) -> NodeStatus: ...

    def set_budget(self, budget_w: float) -> None: ...

    def set_target(self, target_tps: float) -> None: ...

    def frontier(self) -> Frontier | None:
        """The node's predicted (node power, throughput) frontier, or None if it serves none."""


def _first(data: dict[str, Any], *paths: str) -> Any:
    """First value found among dotted `paths` in nested dicts (None if none is there)."""
    for path in paths:
        value: Any = data
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                value = None
                break
            value = value[key]
        if value is not None:
            return value
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None  # JSON true is not 1 W
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(round(number))


def _last_sample(data: dict[str, Any]) -> IntervalSample | None:
    """The typed `last_sample` of a PALS /status, or None when it is absent or incomplete."""
    raw = data.get("last_sample")
    if not isinstance(raw, dict):
        return None
    try:
        return IntervalSample.from_json(raw)
    except ConfigError:
        return None


def _sample_value(data: dict[str, Any], sample: IntervalSample | None, name: str) -> Any:
    """A field of the last sample: from the typed sample, else from older or other endpoints' layouts."""
    value = None if sample is None else getattr(sample, name)
    return value if value is not None else _first(data, f"last_sample.{name}", f"observation.{name}", name)


def parse_status(name: str, data: dict[str, Any]) -> NodeStatus:
    """Build a `NodeStatus` from a /status JSON object (field names per the node endpoint)."""
    if not isinstance(data, dict):
        raise EngineUnreachable(f"node {name}: /status did not return a JSON object; is this a PALS node endpoint?")
    sample = _last_sample(data)
    budget_w = _num(_first(data, "budget.budget_w", "budget_w"))
    kind = _first(data, "budget.kind", "budget_kind")
    if kind is None and budget_w is not None:
        kind = "node"  # an endpoint that reports a bare budget_w means node power
    return NodeStatus(
        name=name,
        time_s=_num(_first(data, "time_s", "last_sample.time_s", "observation.time_s")),
        throughput_tps=_num(_sample_value(data, sample, "throughput_tps")),
        node_power_w=_num(_sample_value(data, sample, "node_power_w")),
        gpu_power_w=_num(_sample_value(data, sample, "gpu_power_w")),
        requests_waiting=_int(_sample_value(data, sample, "requests_waiting")),
        num_gpus=_int(_first(data, "constraints.num_gpus", "num_gpus")),
        power_cap_min_w=_num(_first(data, "constraints.power_cap_min_w", "power_cap_min_w")),
        power_cap_max_w=_num(_first(data, "constraints.power_cap_max_w", "power_cap_max_w")),
        batch_cap_max=_int(_first(data, "constraints.batch_cap_max", "batch_cap_max")),
        budget_w=budget_w,
        target_tps=_num(_first(data, "target.target_tps", "target_tps")),
        power_cap_w=_num(_first(data, "configuration.power_cap_w", "config.power_cap_w", "power_cap_w")),
        batch_cap=_int(_first(data, "configuration.batch_cap", "config.batch_cap", "batch_cap")),
        raw=data,
        sample=sample,
        budget_kind=kind if isinstance(kind, str) else None,
    )



class HttpNodeClient:
    """A node's control endpoint over HTTP, every request bounded by one total deadline.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:9100`` (a path prefix is kept).
        name: label used in logs and reports (defaults to host:port).
        timeout_s: total time one call (status, budget, target, frontier) may take, retries
            included: a slow node, even one that answers a byte at a time, costs at most this.
            Units: s.
        retries: further attempts after a failed one (refused, reset, timed out, garbled, 5xx),
            while `timeout_s` lasts. Writes are idempotent PUTs, so a retry is safe.
        token: bearer token sent as ``Authorization: Bearer <token>`` (a node started with a
            token refuses budget and target writes without it).
    """

    def __init__(
        self,
        url: str,
        name: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 1,
        token: str | None = None,
    ) -> None:
        host, port, prefix = parse_node_url(url)
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and 0 < timeout_s <= MAX_TIMEOUT_S):
            raise ConfigError(f"timeout_s must be between 0 and {MAX_TIMEOUT_S:g} s, got {timeout_s!r}")
        if not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
            raise ConfigError(f"retries must be an integer from 0 to {MAX_RETRIES}, got {retries!r}")
        self._host, self._port, self._prefix = host, port, prefix
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown_host}:{port}{prefix}"
        self.name = name or f"{shown_host}:{port}"
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self._headers = {} if token is None else {"Authorization": f"Bearer {check_token(token)}"}
        self._has_frontier: bool | None = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status code, parsed JSON or text). Raises EngineUnreachable when no usable answer came."""
        payload = None if body is None else json.dumps(body, allow_nan=False).encode()
        headers = dict(self._headers)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        end_s = time.monotonic() + self.timeout_s
        problem = "no attempt"
        for attempt in range(self.retries + 1):
            left_s = end_s - time.monotonic()
            if left_s <= 0:
                break
            if attempt:
                time.sleep(min(RETRY_PAUSE_S, left_s / 2))  # a refused port often comes back in a moment
                left_s = end_s - time.monotonic()
            try:
                response = transport.request(self._host, self._port, method, self._prefix + path, body=payload,
                                        headers=headers, deadline_s=left_s)
            except transport.HttpError as error:
                problem = str(error)
                continue
            if response.status >= 500:
                problem = f"HTTP {response.status}: {_excerpt(response.body)}"
                continue
            return response.status, _decode(response.body)
        raise EngineUnreachable(
            f"node {self.name} at {self.url} gave no usable answer to {method} {path} within "
            f"{self.timeout_s:g} s ({problem}); check that its control endpoint is running and the URL is right"
        )

    def close(self) -> None:
        """Nothing to release: each request has its own connection (kept for the NodeClient contract)."""

    def status(self) -> NodeStatus:
        code, data = self._request("GET", "/status")
        if code != 200:
            raise EngineUnreachable(f"node {self.name}: GET /status answered HTTP {code}: {_short(data)}")
        return parse_status(self.name, data)

    def set_budget(self, budget_w: float) -> None:
        # Rounded down to the milliwatt: the budget in force is never above the one planned.
        code, data = self._request("PUT", "/budget", {"budget_w": math.floor(float(budget_w) * 1000) / 1000,
                                                      "kind": "node"})
        if code >= 300:
            raise EngineUnreachable(
                f"node {self.name}: PUT /budget {budget_w:.0f} W answered HTTP {code}: {_short(data)}{_auth_hint(code)}"
            )

    def set_target(self, target_tps: float) -> None:
        code, data = self._request("PUT", "/target", {"target_tps": round(float(target_tps), 3)})
        if code >= 300:
            raise EngineUnreachable(
                f"node {self.name}: PUT /target {target_tps:.0f} tok/s answered HTTP {code}: "
                f"{_short(data)}{_auth_hint(code)}"
            )

    def frontier(self) -> Frontier | None:
        """GET /frontier if the node serves it (remembered after the first 404)."""
        if self._has_frontier is False:
            return None
        code, data = self._request("GET", "/frontier")
        if code == 404:
            self._has_frontier = False
            return None
        if code != 200 or not isinstance(data, dict):
            raise EngineUnreachable(f"node {self.name}: GET /frontier answered HTTP {code}: {_short(data)}")
        self._has_frontier = True
        points = data.get("points") or []
        try:
            pairs = [(float(p["node_power_w"]), float(p["throughput_tps"])) for p in points]
        except (KeyError, TypeError, ValueError):
            raise EngineUnreachable(
                f"node {self.name}: GET /frontier points lack node_power_w/throughput_tps: {_short(points[:1])}"
            ) from None
        pairs = [(p, t) for p, t in pairs if math.isfinite(p) and math.isfinite(t) and p > 0 and t >= 0]
        if not pairs:
            return None  # e.g. a Baseline node (no predictor): the coordinator falls back
        return Frontier.from_points(pairs)


MAX_TIMEOUT_S = 600.0
"""Longest per-call deadline accepted: longer would let one node stall a round for minutes."""
MAX_RETRIES = 5
RETRY_PAUSE_S = 0.05


def parse_node_url(url: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of a node endpoint URL; one clear ConfigError when malformed."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("a node URL is empty; give e.g. http://127.0.0.1:9100")
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme != "http":
        raise ConfigError(f"node URL {url!r}: only http:// is supported; give e.g. http://127.0.0.1:9100")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"node URL {url!r}: the port must be a number from 1 to 65535; give e.g. http://127.0.0.1:9100"
        ) from None
    if not parts.hostname:
        raise ConfigError(f"node URL {url!r} has no host; give e.g. http://127.0.0.1:9100")
    if port == 0:
        raise ConfigError(f"node URL {url!r}: port 0 is not a port a node listens on; give its --endpoint-port")
    if parts.query or parts.fragment:
        raise ConfigError(f"node URL {url!r}: drop the ?query or #fragment; give e.g. http://127.0.0.1:9100")
    return parts.hostname, port or 80, parts.path.rstrip("/")


def check_token(token: str) -> str:
    """The bearer token, checked: non-empty, visible ASCII only (it goes into an HTTP header)."""
    if not isinstance(token, str) or not token:
        raise ConfigError("the endpoint token is empty; put the token the nodes were started with in the file")
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise ConfigError(
            "the endpoint token has spaces, line breaks or non-ASCII characters in it; "
            "give the token exactly as the nodes were started with it"
        )
    return token


def _decode(body: bytes) -> Any:
    text = body.decode("utf-8", errors="replace")
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return text


def _excerpt(body: bytes) -> str:
    return body[:120].decode("utf-8", errors="replace")


def _short(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, default=str)[:200]
    return text[:200]


def _auth_hint(code: int) -> str:
    if code in (401, 403):
        return " (the node wants a bearer token: give --endpoint-token-file or PALS_ENDPOINT_TOKEN)"
    return ""
