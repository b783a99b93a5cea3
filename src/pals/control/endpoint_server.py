"""An HTTP server that a hostile or careless client cannot exhaust: bounded workers and deadlines.

- A fixed pool of worker threads serves at most `max_connections` connections at once; one more
  is answered 503 (Retry-After) by a single rejector thread, never queued behind the others.
- Each connection has one deadline for its whole request (line, headers and body): a client that
  stalls, or sends one byte at a time to defeat a per-read timeout, is cut when it passes, which
  frees its worker. The response gets its own write deadline (a client that does not read).
- One request per connection (HTTP/1.0 semantics): no idle keep-alive connection holds a worker.

The handler (`RequestHandler`) does I/O only; what to answer is decided by the endpoint's
`answer(method, path, headers, version, body)` callable.
"""

from __future__ import annotations

import io
import logging
import queue
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, Callable

from pals.core.io import dumps_json

log = logging.getLogger("pals.endpoint")

_BUSY_BODY = b'{"error": "endpoint busy: too many connections; retry shortly"}'
_BUSY_RESPONSE = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


SINGLE_HEADERS = ("Host", "Content-Length", "Content-Type", "Authorization", "Origin", "Transfer-Encoding")
"""Headers a request may carry at most once."""


class DeadlineReader(io.RawIOBase):
    """A socket's input that fails with `TimeoutError` once `deadline_s` (monotonic) has passed.

    Each receive waits at most the time left, so the deadline bounds the whole request however
    the client spaces its bytes.
    """

    def __init__(self, sock: socket.socket, deadline_s: float) -> None:
        super().__init__()
        self._sock = sock
        self.deadline_s = deadline_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left_s = self.deadline_s - time.monotonic()
        if left_s <= 0:
            raise TimeoutError("request not received before the connection's deadline")
        self._sock.settimeout(left_s)
        return self._sock.recv_into(buffer)


class _Rejector:
    """Answers 503 to connections over the limit, on its own thread, with a lingering close.

    Lingering (shut our side, read what the client still sends, then close) keeps the kernel from
    answering the client's unread request bytes with a reset that could destroy the 503 in flight.
    Connections beyond its own small queue are closed at once.
    """

    LINGER_S = 1.0

    def __init__(self) -> None:
        self._queue: queue.Queue[socket.socket | None] = queue.Queue(maxsize=64)
        self._thread = threading.Thread(target=self._run, name="pals-endpoint-reject", daemon=True)
        self._thread.start()

    def reject(self, sock: socket.socket) -> None:
        try:
            self._queue.put_nowait(sock)
        except queue.Full:
            _close(sock)

    def stop(self) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def _run(self) -> None:
        while (sock := self._queue.get()) is not None:
            try:
                sock.settimeout(self.LINGER_S)
                sock.sendall(_BUSY_RESPONSE)
                sock.shutdown(socket.SHUT_WR)
                end_s = time.monotonic() + self.LINGER_S
                while time.monotonic() < end_s and sock.recv(4096):
                    pass
            except OSError:
                pass
            finally:
                _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


class BoundedHTTPServer(HTTPServer):
    """`HTTPServer` with a fixed worker pool, a 503 beyond it, and per-connection deadlines.

    Args:
        address: (host, port) to bind.
        handler: the request handler class (reads `server.read_timeout_s` and `write_timeout_s`).
        max_connections: connections served at once (= worker threads).
        read_timeout_s: deadline for receiving a whole request. Units: s.
        write_timeout_s: deadline for sending one response. Units: s.
    """

    request_queue_size = 64  # the listen backlog: a burst waits in the kernel, not in threads
    allow_reuse_address = True

    def __init__(self, address, handler, max_connections: int, read_timeout_s: float, write_timeout_s: float) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.max_connections = max_connections
        self.read_timeout_s = read_timeout_s
        self.write_timeout_s = write_timeout_s
        self._slots = threading.BoundedSemaphore(max_connections)
        self._work: queue.SimpleQueue[tuple[socket.socket, Any] | None] = queue.SimpleQueue()
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        super().__init__(address, handler)
        self._rejector = _Rejector()
        # Daemon threads: a stalled client must never keep the interpreter from exiting.
        self._workers = [threading.Thread(target=self._worker, name=f"pals-endpoint-{i}", daemon=True)
                         for i in range(max_connections)]
        for worker in self._workers:
            worker.start()

    @property
    def active_connections(self) -> int:
        """Connections being served now (at most `max_connections`)."""
        with self._active_lock:
            return len(self._active)

    def process_request(self, request, client_address) -> None:
        # Runs on the accept thread: never block here.
        if not self._slots.acquire(blocking=False):
            self._rejector.reject(request)
            return
        with self._active_lock:
            self._active.add(request)
        self._work.put((request, client_address))

    def _worker(self) -> None:
        while (item := self._work.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:  # a client that resets or misbehaves must not end the worker
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
                with self._active_lock:
                    self._active.discard(request)
                self._slots.release()

    def handle_error(self, request, client_address) -> None:
        log.debug("endpoint connection from %s ended with an error", client_address, exc_info=True)

    def server_close(self) -> None:
        super().server_close()
        self._rejector.stop()
        with self._active_lock:
            active = list(self._active)
        for sock in active:  # wake workers blocked on a stalled client
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _ in self._workers:
            self._work.put(None)


class RequestHandler(BaseHTTPRequestHandler):
    """HTTP I/O for one connection; the decision is `server.answer(...)`'s.

    `answer(method, path, headers, http_version, body) -> (status, payload, extra_headers)`:
    payload is JSON-ready data (serialised here, outside any lock the answer took) or bytes
    with their content type as `(bytes, content_type)`.
    """

    server_version = "pals"
    protocol_version = "HTTP/1.0"
    max_body_bytes = 16 * 1024

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the stdlib's plain reader: release its hold on the socket
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, time.monotonic() + self.server.read_timeout_s))

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the decision log is the record
        log.debug("endpoint %s: " + format, self.client_address[0], *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the stdlib itself raises (bad request line, headers too long) as JSON too."""
        text = message or self.responses.get(code, ("error",))[0]
        self.close_connection = True
        self._reply(code, dumps_json({"error": text}).encode(), "application/json", ())

    def _reply(self, status: int, body: bytes, content_type: str, headers) -> None:
        if self.request_version == "HTTP/0.9":
            # The stdlib's default for unparsable or version-less request lines, which would make it
            # send a bare body; every client we serve reads a status line and headers.
            self.request_version = "HTTP/1.0"
        self.connection.settimeout(self.server.write_timeout_s)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _read_body(self) -> bytes | None | tuple[int, str]:
        """The body (None when none was sent), or (status, message) when it cannot be accepted."""
        if self.headers.get("Transfer-Encoding"):
            return 411, "chunked bodies are not accepted; send Content-Length"
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return None
        if not length_text.strip().isdigit() or len(length_text.strip()) > 12:
            return 400, "Content-Length is not a number"
        length = int(length_text)
        if length > self.max_body_bytes:
            return 413, f"body larger than {self.max_body_bytes} bytes"
        # Read it even if the request will be refused: closing with unread bytes would reset the
        # connection and could destroy our answer before the client reads it.
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        repeated = next((name for name in SINGLE_HEADERS if len(self.headers.get_all(name, ())) > 1), None)
        # Two of these would let two parsers (ours, a proxy's) disagree about the request.
        body = (400, f"more than one {repeated} header") if repeated else self._read_body()
        if isinstance(body, tuple):
            status, message = body
            self.close_connection = True
            self._reply(status, dumps_json({"error": message}).encode(), "application/json", ())
            return
        status, payload, headers = self.server.answer(self.command, self.path, self.headers, self.request_version, body)
        if isinstance(payload, tuple):
            data, content_type = payload
        else:
            data, content_type = dumps_json(payload).encode(), "application/json"
        self._reply(status, data, content_type, headers)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _dispatch


def make_server(address, answer: Callable, max_connections: int, read_timeout_s: float, write_timeout_s: float,
                max_body_bytes: int) -> BoundedHTTPServer:
    """A bound (not yet serving) server whose requests are answered by `answer`."""
    handler = type("PalsEndpointHandler", (RequestHandler,), {"max_body_bytes": max_body_bytes})
    server = BoundedHTTPServer(address, handler, max_connections, read_timeout_s, write_timeout_s)
    server.answer = answer
    return server
