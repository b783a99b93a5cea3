"""One HTTP/1.1 request with a total deadline (connect, send and read together).

Why not `http.client`: its timeout applies to each socket operation, so a node
endpoint that answers one byte every few seconds keeps a request alive forever
and hangs the coordinator. Here every `recv` gets only the time left until one
monotonic deadline, and the response is capped in size, so a request to a slow,
stalled or babbling node ends within `deadline_s`, whatever the node does.

Each request uses its own connection (`Connection: close`): the node endpoint
closes after each answer anyway, a fresh connection has no stale state to
recover from, and requests from several threads never share a socket.

Not bounded by the deadline: resolving a host *name* (the system resolver has its
own timeouts). Give nodes by address where a slow DNS is a concern; the
coordinator's `node_deadline_s` still bounds a round.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
"""Largest response read (a /frontier of a big grid is tens of kB). Larger is garbage."""


class HttpError(Exception):
    """The request got no usable HTTP answer (refused, reset, timed out, malformed, too large)."""


@dataclass(frozen=True)
class HttpResponse:
    """A complete HTTP response."""

    status: int
    """HTTP status code."""
    headers: dict[str, str]
    """Header names lower-cased; a repeated header keeps its last value."""
    body: bytes
    """The body, de-chunked."""


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    deadline_s: float,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> HttpResponse:
    """Send one request and read its whole answer, all within `deadline_s` seconds.

    Args:
        host: name or address (IPv6 without brackets).
        port: TCP port.
        method: e.g. "GET", "PUT".
        path: request target, starting with "/".
        body: request body (a Content-Length header is added).
        headers: extra headers (values must not contain CR or LF).
        deadline_s: total time for connect, send and receive. Units: s.
        max_response_bytes: a longer answer is refused.

    Raises:
        HttpError: no complete, well-formed answer within the deadline.
    """
    end_s = time.monotonic() + deadline_s
    host_header = f"[{host}]" if ":" in host else host
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}:{port}", "Connection: close",
             "Accept: application/json"]
    for name, value in (headers or {}).items():
        if any(c in value for c in "\r\n") or any(c in name for c in "\r\n:"):
            raise HttpError(f"header {name!r} has a line break or colon in it")
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    try:
        sock = socket.create_connection((host, port), timeout=_left(end_s))
    except OSError as error:
        raise HttpError(_describe(error)) from None
    try:
        sock.settimeout(_left(end_s))
        sock.sendall(wire)
        return _read_response(sock, end_s, max_response_bytes)
    except OSError as error:
        raise HttpError(_describe(error)) from None
    finally:
        sock.close()


def _left(end_s: float) -> float:
    left = end_s - time.monotonic()
    if left <= 0:
        raise HttpError("timed out")
    return left


def _describe(error: OSError) -> str:
    if isinstance(error, (socket.timeout, TimeoutError)):
        return "timed out"
    return error.strerror or str(error) or type(error).__name__


def _read_response(sock: socket.socket, end_s: float, max_bytes: int) -> HttpResponse:
    data = bytearray()
    header_end = -1
    expected_total: int | None = None
    while True:
        if header_end < 0:
            header_end = data.find(b"\r\n\r\n")
            if header_end >= 0:
                status, headers = _parse_head(bytes(data[:header_end]))
                length = headers.get("content-length")
                if length is not None and "chunked" not in headers.get("transfer-encoding", ""):
                    try:
                        expected_total = header_end + 4 + int(length)
                    except ValueError:
                        raise HttpError(f"Content-Length is not a number: {length[:40]!r}") from None
        if expected_total is not None and len(data) >= expected_total:
            break
        sock.settimeout(_left(end_s))  # a total deadline: each recv gets only the time left
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > max_bytes:
            raise HttpError(f"answer larger than {max_bytes} bytes")
    if header_end < 0:
        raise HttpError("connection closed before a complete HTTP header" if data else "empty answer")
    raw_body = bytes(data[header_end + 4 :])
    if expected_total is not None:
        if len(data) < expected_total:
            raise HttpError("connection closed before the whole body arrived")
        raw_body = raw_body[: expected_total - header_end - 4]
    elif "chunked" in headers.get("transfer-encoding", ""):
        raw_body = _dechunk(raw_body)
    return HttpResponse(status, headers, raw_body)


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    text = head.decode("latin-1")
    status_line, *header_lines = text.split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise HttpError(f"not an HTTP answer: {status_line[:60]!r}")
    headers = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _dechunk(raw: bytes) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        line_end = raw.find(b"\r\n", pos)
        if line_end < 0:
            raise HttpError("truncated chunked body")
        size_text = raw[pos:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            return bytes(out)
        start = line_end + 2
        if start + size > len(raw):
            raise HttpError("truncated chunked body")
        out += raw[start : start + size]
        pos = start + size + 2
