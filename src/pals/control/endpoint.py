"""HTTP endpoint of a running controller: status, metrics and the budget/target controls.

Routes (JSON in and out unless stated):

- `GET /status`: configuration in force, last interval's sample, budget, target, policy, warnings,
  and `time_s` (the node clock at the last sample).
- `GET /frontier`: `{"points": [{"power_cap_w", "batch_cap", "throughput_tps", "gpu_power_w",
  "node_power_w"}, ...]}`, the policy's predicted table for the live workload; an empty list with
  a `reason` for policies without a predictor. Rate limited.
- `PUT /budget` `{"budget_w": 1500, "kind": "node"|"gpu"}` (kind defaults to "node");
  `{"budget_w": null}` removes the budget. The budget must lie between 1 W and 100 x the node's
  maximum possible draw of that kind (every GPU at its top cap).
- `PUT /target` `{"target_tps": 2000}`; `{"target_tps": null}` removes the target.
- `PUT /slo` `{"tpot_ms": 50, "ttft_s": 2.0, "quantile": 0.99}` (each objective optional, quantile
  0.5/0.9/0.99, default 0.99); both objectives null removes the latency SLO.
- `GET /decisions?n=50`: the last n decision-log lines (default 20, at most 1,000), each as
  `decisions.jsonl` writes it (`docs/decisions-schema.md`). Rate limited.
- `GET /metrics`: Prometheus text format (the loop's own registry).

Security (issue 13; each rule answers one attack):

- Bound to 127.0.0.1 by default. Any other host needs a bearer token (`pals.control.auth`), or
  the endpoint refuses to start; off loopback every route but `/metrics` then needs the token
  (Prometheus scrapers rarely carry credentials, and metrics change nothing).
- With a token configured, every mutating route needs `Authorization: Bearer <token>` (401);
  reads on loopback stay open unless `protect_reads`.
- Bodies must be `Content-Type: application/json` (415): a cross-site form or `text/plain` POST,
  the only kinds a browser sends without a CORS preflight, is refused.
- `Host` must be a name of this endpoint (421), and a browser's `Origin`, when sent, too (403):
  DNS-rebinding and CSRF pages are refused.
- A fixed worker pool (503 beyond it), a deadline per request and per response, rate limits on
  the expensive routes (429 + Retry-After), bounded bodies (413), and strict JSON with plausible
  ranges (400, one line) — never a 500 for a bad request.

A cluster coordinator talks to each node through these routes.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from pals.control.auth import check_exposure, is_loopback_host, validate_token
from pals.control.endpoint_guard import RequestGuard, TokenBucket, bound_names
from pals.control.endpoint_routes import BadRequest, Routes
from pals.control.endpoint_server import BoundedHTTPServer, make_server
from pals.errors import ConfigError

log = logging.getLogger("pals.endpoint")

RATE_LIMITED_ROUTES = ("/decisions", "/frontier")
"""Routes whose answer costs serialisation time the control loop shares (one bucket each)."""


@dataclass(frozen=True)
class EndpointLimits:
    """How much of the controller's time and threads the endpoint may give to clients."""

    max_connections: int = 8
    """Connections served at once (worker threads); one more is answered 503."""
    read_timeout_s: float = 10.0
    """Deadline for receiving one whole request (line, headers, body), however the client paces
    its bytes. Units: s."""
    write_timeout_s: float = 10.0
    """Deadline for sending one response to a client that does not read. Units: s."""
    expensive_rate_per_s: float = 2.0
    """Sustained requests per second allowed on each of `RATE_LIMITED_ROUTES`. Units: 1/s."""
    expensive_burst: int = 10
    """Requests allowed at once on each of `RATE_LIMITED_ROUTES` before the rate applies."""
    max_decisions: int = 1000
    """The most records one `GET /decisions` returns."""
    max_body_bytes: int = 16 * 1024
    """Largest request body read (413 beyond). Units: bytes."""

    def __post_init__(self) -> None:
        if not (isinstance(self.max_connections, int) and 1 <= self.max_connections <= 1024):
            raise ConfigError(f"endpoint max_connections must be an integer in 1-1024, got {self.max_connections!r}")
        for name in ("read_timeout_s", "write_timeout_s", "expensive_rate_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1e6):
                raise ConfigError(f"endpoint {name} must be a positive finite number, got {value!r}")
        for name in ("expensive_burst", "max_decisions", "max_body_bytes"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"endpoint {name} must be a positive integer, got {value!r}")


class Endpoint:
    """Serve a `ControlLoop` over HTTP.

    Args:
        loop: the controller (anything with `status()`, `frontier()`, `set_budget()`,
            `set_target()`, `log`, `metrics`, `constraints`).
        host: interface to bind; 127.0.0.1 keeps it local. Anything but loopback needs `token`.
        port: TCP port; 0 picks a free one (read `.port` after `start()`).
        token: the bearer token (`pals.control.auth.resolve_token`); None serves without one,
            which only loopback allows.
        allowed_hosts: extra names clients may put in Host/Origin (e.g. the node's DNS name when
            the coordinator addresses it by name).
        protect_reads: require the token for GET routes too (except /metrics); always on when
            `host` is not loopback.
        limits: worker pool, deadlines, rate limits and size caps (`EndpointLimits`).

    Raises:
        ConfigError: a non-loopback host without a token, or an unusable token (at construction,
            before anything is bound).
    """

    def __init__(
        self,
        loop,
        host: str = "127.0.0.1",
        port: int = 9400,
        token: str | None = None,
        allowed_hosts: tuple[str, ...] | list[str] = (),
        protect_reads: bool = False,
        limits: EndpointLimits | None = None,
    ) -> None:
        check_exposure(host, token)
        if token is not None:
            validate_token(token, "the endpoint's token argument")
        if not (isinstance(port, int) and 0 <= port <= 65535):
            raise ConfigError(f"endpoint port must be an integer in 0-65535, got {port!r}; pick another --endpoint-port")
        self.loop = loop
        self.host = host
        self.requested_port = port
        self.token = token
        self.allowed_hosts = tuple(allowed_hosts)
        self.protect_reads = protect_reads or not is_loopback_host(host)
        self.limits = limits or EndpointLimits()
        self.guard: RequestGuard | None = None
        self.routes = Routes(
            loop, self.limits.max_decisions,
            {route: TokenBucket(self.limits.expensive_rate_per_s, self.limits.expensive_burst) for route in RATE_LIMITED_ROUTES},
        )
        self._server: BoundedHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def active_connections(self) -> int:
        """Connections being served now (0 when stopped)."""
        return self._server.active_connections if self._server is not None else 0

    def start(self) -> "Endpoint":
        limits = self.limits
        try:
            self._server = make_server((self.host, self.requested_port), self.answer, limits.max_connections,
                                       limits.read_timeout_s, limits.write_timeout_s, limits.max_body_bytes)
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {self.host}:{self.requested_port} ({error.strerror or error}); "
                "pick another --endpoint-port or --endpoint-host"
            ) from None
        self.guard = RequestGuard(bound_names(self.host, self._server.server_address[0], self.allowed_hosts),
                                  self.token, self.protect_reads)
        # A short poll keeps stop() quick (it waits one poll); 10 idle wake-ups a second cost nothing.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="pals-endpoint", daemon=True)
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

    def answer(self, method: str, path: str, headers: Mapping[str, str], http_version: str,
               body: bytes | None) -> tuple[int, Any, tuple[tuple[str, str], ...]]:
        """Decide one request: (status, JSON-ready payload or (bytes, content type), extra headers).

        Guards first (Host, Origin, token), then the route (method, rate, content type, body).
        """
        refusal = self.guard.check(method, Routes.route_of(path), headers, http_version) if self.guard else None
        if refusal is not None:
            log.debug("endpoint refused %s %s: %d %s", method, path[:100], refusal.status, refusal.message)
            return refusal.status, {"error": refusal.message}, refusal.headers
        try:
            status, payload = self.routes.handle(method, path, body, headers.get("Content-Type"))
        except BadRequest as error:
            return error.status, {"error": str(error)}, error.headers
        except Exception as error:  # never let a handler kill the controller; say what broke
            log.exception("endpoint: %s %s failed", method, path[:100])
            return 500, {"error": f"internal error: {type(error).__name__}: {error}"}, ()
        if isinstance(payload, bytes):
            from prometheus_client import CONTENT_TYPE_LATEST

            return status, (payload, CONTENT_TYPE_LATEST), ()
        return status, payload, ()
