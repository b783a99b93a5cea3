"""HTTP endpoint of a running controller (stdlib `http.server` in a daemon thread).

Routes (JSON in and out unless stated):

- `GET /status`: configuration in force, last interval's sample, budget, target, policy, warnings,
  and `time_s` (the node clock at the last sample).
- `GET /frontier`: `{"points": [{"power_cap_w", "batch_cap", "throughput_tps", "gpu_power_w",
  "node_power_w"}, ...]}`, the policy's predicted table for the live workload (capacity and busy
  power per configuration; `gpu_power_w` is the node's GPU total); an empty list with a `reason`
  for policies without a predictor.
- `PUT /budget` `{"budget_w": 1500, "kind": "node"|"gpu"}` (kind defaults to "node");
  `{"budget_w": null}` removes the budget.
- `PUT /target` `{"target_tps": 2000}`; `{"target_tps": null}` removes the target.
- `GET /decisions?n=50`: the last n decision-log lines (default 20, at most 10,000), each as
  `decisions.jsonl` writes it (`docs/decisions-schema.md`).
- `GET /metrics`: Prometheus text format (the loop's own registry).

Malformed requests get a 4xx with `{"error": "..."}`. Bound to 127.0.0.1 by default: the endpoint
changes power limits, so expose it deliberately (`host="0.0.0.0"`) and only on a trusted network.
A cluster coordinator talks to each node through these routes.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from pals.control.budget import PowerBudget, ThroughputTarget
from pals.core.io import dumps_json
from pals.errors import ConfigError

MAX_BODY_BYTES = 64 * 1024


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Endpoint:
    """Serve a `ControlLoop` over HTTP.

    Args:
        loop: the controller (anything with `status()`, `set_budget()`, `set_target()`, `log`,
            `metrics`).
        host: interface to bind; 127.0.0.1 keeps it local.
        port: TCP port; 0 picks a free one (read `.port` after `start()`).
    """

    def __init__(self, loop, host: str = "127.0.0.1", port: int = 9400) -> None:
        self.loop = loop
        self.host = host
        self.requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self.requested_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "Endpoint":
        try:
            self._server = ThreadingHTTPServer((self.host, self.requested_port), self._handler_class())
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {self.host}:{self.requested_port} ({error.strerror}); pick another --endpoint-port"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="pals-endpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "Endpoint":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------------------

    def _handler_class(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "pals"

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the decision log is the record
                pass

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, status: int, payload: Any) -> None:
                self._send(status, dumps_json(payload).encode())

            def _dispatch(self, method: str) -> None:
                try:
                    status, payload = endpoint.handle(method, self.path, self._body() if method in ("PUT", "POST") else None)
                except _BadRequest as error:
                    self._json(error.status, {"error": str(error)})
                    return
                except Exception as error:  # never let a handler kill the controller
                    self._json(500, {"error": f"internal error: {type(error).__name__}: {error}"})
                    return
                if isinstance(payload, bytes):
                    from prometheus_client import CONTENT_TYPE_LATEST

                    self._send(status, payload, CONTENT_TYPE_LATEST)
                else:
                    self._json(status, payload)

            def _body(self) -> bytes:
                length_text = self.headers.get("Content-Length")
                try:
                    length = int(length_text) if length_text is not None else 0
                except ValueError:
                    raise _BadRequest(400, "Content-Length is not a number") from None
                if length > MAX_BODY_BYTES:
                    raise _BadRequest(413, f"body larger than {MAX_BODY_BYTES} bytes")
                return self.rfile.read(length) if length > 0 else b""

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_PUT(self) -> None:
                self._dispatch("PUT")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

        return Handler

    def handle(self, method: str, path: str, body: bytes | None) -> tuple[int, Any]:
        """Route one request; returns (status, JSON-able payload or bytes). Raises `_BadRequest`."""
        url = urlparse(path)
        route = url.path.rstrip("/") or "/"
        if route == "/status":
            self._allow(method, "GET")
            return 200, self.loop.status()
        if route == "/frontier":
            self._allow(method, "GET")
            return 200, self.loop.frontier()
        if route == "/metrics":
            self._allow(method, "GET")
            return 200, self.loop.metrics.exposition()
        if route == "/decisions":
            self._allow(method, "GET")
            query = parse_qs(url.query)
            try:
                n = int(query.get("n", ["20"])[0])
            except ValueError:
                raise _BadRequest(400, "n must be an integer, e.g. /decisions?n=50") from None
            if not 1 <= n <= 10_000:
                raise _BadRequest(400, f"n must be between 1 and 10000, got {n}")
            return 200, self.loop.log.recent(n)
        if route == "/budget":
            self._allow(method, "PUT", "POST")
            data = self._payload(body, "budget_w", ("kind",))
            if data["budget_w"] is None:
                self.loop.set_budget(None)
                return 200, {"budget": None}
            kind = data.get("kind", "node")
            try:
                budget = PowerBudget(data["budget_w"], kind)
            except ConfigError as error:
                raise _BadRequest(422, str(error)) from None
            self.loop.set_budget(budget)
            return 200, {"budget": {"budget_w": budget.budget_w, "kind": budget.kind}}
        if route == "/target":
            self._allow(method, "PUT", "POST")
            data = self._payload(body, "target_tps")
            if data["target_tps"] is None:
                self.loop.set_target(None)
                return 200, {"target": None}
            try:
                target = ThroughputTarget(data["target_tps"])
            except ConfigError as error:
                raise _BadRequest(422, str(error)) from None
            self.loop.set_target(target)
            return 200, {"target": {"target_tps": target.target_tps}}
        raise _BadRequest(404, f"no route {url.path}; try /status, /frontier, /budget, /target, /decisions, /metrics")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise _BadRequest(405, f"method {method} not allowed here; use {' or '.join(allowed)}")

    @staticmethod
    def _payload(body: bytes | None, required: str, optional: tuple[str, ...] = ()) -> dict[str, Any]:
        if not body:
            raise _BadRequest(400, f"empty body; send JSON like {{\"{required}\": ...}}")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise _BadRequest(400, f"body is not valid JSON ({error.msg if hasattr(error, 'msg') else error})") from None
        if not isinstance(data, dict):
            raise _BadRequest(400, f"body must be a JSON object with \"{required}\"")
        if required not in data:
            raise _BadRequest(400, f"missing field \"{required}\"")
        unknown = set(data) - {required, *optional}
        if unknown:
            raise _BadRequest(400, f"unknown field(s): {', '.join(sorted(unknown))}")
        return data
