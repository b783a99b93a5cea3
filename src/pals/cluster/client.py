"""Talking to one node's control endpoint: read its status, set its budget and target.

The coordinator only ever sees a `NodeClient`. `HttpNodeClient` speaks the
node endpoint's HTTP interface (GET /status, PUT /budget, PUT /target, and
GET /frontier where the node serves it); in the experiments the nodes are
simulated, but they are reached through exactly this client over localhost.

`NodeStatus` is the coordinator's view of a node, parsed tolerantly from the
endpoint's /status JSON: a missing optional field becomes None rather than an
error, so a newer or older endpoint still works.
"""

from __future__ import annotations

import http.client
import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

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
    target_tps: float | None
    power_cap_w: float | None
    batch_cap: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The /status JSON as received."""
    sample: IntervalSample | None = None
    """The node's last interval sample, typed, when /status carries a complete `last_sample`
    (a PALS node endpoint: `ControlLoop.status`)."""

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
    try:
        out = float(value)
    except (TypeError, ValueError):
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
        budget_w=_num(_first(data, "budget.budget_w", "budget_w")),
        target_tps=_num(_first(data, "target.target_tps", "target_tps")),
        power_cap_w=_num(_first(data, "configuration.power_cap_w", "config.power_cap_w", "power_cap_w")),
        batch_cap=_int(_first(data, "configuration.batch_cap", "config.batch_cap", "batch_cap")),
        raw=data,
        sample=sample,
    )


class HttpNodeClient:
    """A node's control endpoint over HTTP (one persistent connection, reopened on error).

    Args:
        url: base URL, e.g. ``http://127.0.0.1:9100``.
        name: label used in logs and reports (defaults to host:port).
        timeout_s: per-request timeout. Units: s.
    """

    def __init__(self, url: str, name: str | None = None, timeout_s: float = 5.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"node URL {url!r} is not http://HOST:PORT; give e.g. http://127.0.0.1:9100")
        self.url = f"http://{parts.hostname}:{parts.port or 80}"
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self.name = name or f"{parts.hostname}:{self._port}"
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self._has_frontier: bool | None = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
            try:
                self._conn.request(method, self._prefix + path, body=payload, headers=headers)
                response = self._conn.getresponse()
                text = response.read().decode("utf-8", errors="replace")
                if response.getheader("Connection", "").lower() == "close" or response.version < 11:
                    self.close()
                break
            except (OSError, http.client.HTTPException) as error:
                self.close()
                if attempt == 1:
                    raise EngineUnreachable(
                        f"node {self.name} at {self.url} does not answer {method} {path} ({error}); "
                        "check that its control endpoint is running and the URL is right"
                    ) from None
        try:
            data = json.loads(text) if text.strip() else None
        except json.JSONDecodeError:
            data = text
        return response.status, data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def status(self) -> NodeStatus:
        code, data = self._request("GET", "/status")
        if code != 200:
            raise EngineUnreachable(f"node {self.name}: GET /status answered HTTP {code}: {data}")
        return parse_status(self.name, data)

    def set_budget(self, budget_w: float) -> None:
        code, data = self._request("PUT", "/budget", {"budget_w": round(float(budget_w), 3), "kind": "node"})
        if code >= 300:
            raise EngineUnreachable(f"node {self.name}: PUT /budget {budget_w:.0f} W answered HTTP {code}: {data}")

    def set_target(self, target_tps: float) -> None:
        code, data = self._request("PUT", "/target", {"target_tps": round(float(target_tps), 3)})
        if code >= 300:
            raise EngineUnreachable(f"node {self.name}: PUT /target {target_tps:.0f} tok/s answered HTTP {code}: {data}")

    def frontier(self) -> Frontier | None:
        """GET /frontier if the node serves it (remembered after the first 404)."""
        if self._has_frontier is False:
            return None
        code, data = self._request("GET", "/frontier")
        if code == 404:
            self._has_frontier = False
            return None
        if code != 200 or not isinstance(data, dict):
            raise EngineUnreachable(f"node {self.name}: GET /frontier answered HTTP {code}: {data}")
        self._has_frontier = True
        points = data.get("points") or []
        try:
            pairs = [(float(p["node_power_w"]), float(p["throughput_tps"])) for p in points]
        except (KeyError, TypeError, ValueError):
            raise EngineUnreachable(f"node {self.name}: GET /frontier points lack node_power_w/throughput_tps: {points[:1]}") from None
        if not pairs:
            return None  # e.g. a Baseline node (no predictor): the coordinator falls back
        return Frontier.from_points(pairs)
