"""Checks every endpoint request passes before it reaches a route: Host, Origin, token, rate.

Why each exists:
- Host: a DNS-rebinding page makes the operator's browser send requests to 127.0.0.1 under the
  attacker's domain name; the Host header then carries that name, so only the names the endpoint
  is bound to are accepted (421 otherwise).
- Origin: a page on another site can POST to 127.0.0.1 from the operator's browser (CSRF); browsers
  send its origin in `Origin`, so a present Origin that is not one of our names is refused (403).
  Non-browser clients (curl, the coordinator, Prometheus) send no Origin and are unaffected.
- Token: see `pals.control.auth`.
- Rate: `/decisions` and `/frontier` cost serialisation time under the GIL the control loop
  shares; a token bucket per route bounds what a flood can take from it (429 + Retry-After).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import urlsplit

from pals.control.auth import is_loopback_host, token_matches

OPEN_WITH_PROTECTED_READS = frozenset({"/metrics"})
"""Routes readable without a token even when reads are protected: Prometheus scrapers are
usually configured without credentials, and the metrics expose no control."""


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused, as an HTTP answer."""

    status: int
    """HTTP status code."""
    message: str
    """One line for the JSON `error` field; names the fix."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra response headers (WWW-Authenticate, Retry-After)."""


def split_host(value: str) -> str:
    """The host name of a Host header or authority (`[::1]:80` -> `::1`), lower case, no trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        name = value[1:].partition("]")[0]
    elif value.count(":") > 1:
        name = value  # a bare IPv6 address (a bind address): its colons are not a port
    else:
        name, sep, port = value.rpartition(":")
        if not sep or not port.isdigit():
            name = value  # no port (or a bare IPv6 address, which has colons but no brackets)
    return name.rstrip(".")


def bound_names(bind_host: str, bound_ip: str, extra: tuple[str, ...] = ()) -> frozenset[str] | None:
    """The names clients may use for this endpoint in Host and Origin; None accepts any.

    The name it was bound by and the address it is bound to; `localhost` on loopback; plus the
    configured `extra` names. A wildcard bind (every interface) has no list of its own: any name
    is accepted unless `extra` names are configured, and the token (mandatory off loopback)
    guards it.
    """
    names = {split_host(n) for n in extra if n.strip()}
    wildcard = bind_host.strip() in ("", "0.0.0.0", "::", "[::]")
    if wildcard and not names:
        return None
    if not wildcard:
        names.update({split_host(bind_host), split_host(bound_ip)})
        if is_loopback_host(bind_host):
            names.add("localhost")
    return frozenset(names)


@dataclass(frozen=True)
class RequestGuard:
    """Host, Origin and token rules of one endpoint."""

    names: frozenset[str] | None
    """Accepted host names (`bound_names`); None accepts any."""
    token: str | None
    """The bearer token; None when the endpoint runs without one (loopback only)."""
    protect_reads: bool
    """Require the token for GET routes too (except `OPEN_WITH_PROTECTED_READS`)."""

    def check(self, method: str, route: str, headers: Mapping[str, str], http_version: str) -> Refusal | None:
        """The first rule the request breaks, or None when it may proceed to its route."""
        return self._check_host(headers, http_version) or self._check_origin(headers) or self._check_token(method, route, headers)

    def _check_host(self, headers: Mapping[str, str], http_version: str) -> Refusal | None:
        host = headers.get("Host")
        if host is None:
            if http_version == "HTTP/1.0":
                return None  # HTTP/1.0 may omit Host; browsers never do, so rebinding cannot use this
            return Refusal(400, "missing Host header (required by HTTP/1.1)")
        if self.names is not None and split_host(host) not in self.names:
            return Refusal(
                421, f"Host {host.strip()[:100]!r} is not a name of this endpoint; use one of "
                f"{', '.join(sorted(self.names))} (or add the name to the endpoint's allowed hosts)"
            )
        return None

    def _check_origin(self, headers: Mapping[str, str]) -> Refusal | None:
        origin = headers.get("Origin")
        if origin is None:
            return None
        try:
            parts = urlsplit(origin.strip())
            name, scheme = (parts.hostname or "").rstrip("."), parts.scheme
        except ValueError:  # e.g. an invalid IPv6 literal
            name, scheme = "", ""
        # A wildcard bind has no name list: the origin must then at least be the host addressed.
        allowed = self.names if self.names is not None else {split_host(headers.get("Host", ""))}
        if name and name in allowed and scheme in ("http", "https"):
            return None
        return Refusal(403, f"cross-origin request from {origin.strip()[:100]!r} refused; the control endpoint takes no browser requests from other sites")

    def _check_token(self, method: str, route: str, headers: Mapping[str, str]) -> Refusal | None:
        if self.token is None:
            return None
        reading = method in ("GET", "HEAD")
        if reading and (not self.protect_reads or route in OPEN_WITH_PROTECTED_READS):
            return None
        if token_matches(headers.get("Authorization"), self.token):
            return None
        why = "reads need it when the endpoint is bound beyond loopback" if reading else "changes need it"
        return Refusal(
            401, f"missing or wrong bearer token ({why}); send the header 'Authorization: Bearer <token>' "
            "with the token from the node's --endpoint-token-file",
            (("WWW-Authenticate", 'Bearer realm="pals"'),),
        )


class TokenBucket:
    """A rate limit: `burst` requests at once, refilled at `rate_per_s` (thread-safe)."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last_s = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until one is available."""
        with self._lock:
            now_s = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now_s - self._last_s) * self.rate_per_s)
            self._last_s = now_s
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate_per_s


def retry_after_header(wait_s: float) -> tuple[str, str]:
    """`Retry-After` in whole seconds (at least 1), as HTTP requires."""
    return ("Retry-After", str(max(1, math.ceil(wait_s))))
