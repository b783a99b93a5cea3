"""Load generator: replays a workload against an OpenAI-compatible completions API.

Requests are sent to `<url>/v1/completions` with token-id prompts
(`"prompt": [ids...]`), so no tokenizer is needed on either side, and with
`ignore_eos`/`min_tokens` so each request generates exactly the tokens the
workload asks for. Arrivals come from any `pals.sim.workload.Workload`
(Poisson, trace replay), the same workloads the simulated node uses; a
closed loop (`concurrency=N`) keeps N requests in flight instead.

The generator counts on the client side: requests sent, completed, failed and
completion tokens returned (from each response's `usage`). Comparing those
counts with the server's /metrics is how the telemetry is checked.

Standard library only (threads + http.client): one thread per request in
flight, which is plenty for a single node's batch sizes.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass

from pals.errors import ConfigError, EngineUnreachable


@dataclass(frozen=True)
class RequestResult:
    """One request as the client saw it."""

    index: int
    sent_s: float
    """When it was sent, on `time.monotonic()`. Units: s."""
    done_s: float
    prompt_tokens: int
    max_tokens: int
    completion_tokens: int
    """Tokens the server returned (its `usage.completion_tokens`); 0 on error."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class LoadStats:
    """Client-side counts so far."""

    sent: int
    completed: int
    errors: int
    in_flight: int
    completion_tokens_total: int
    prompt_tokens_total: int
    first_sent_s: float | None
    last_done_s: float | None

    @property
    def client_tps(self) -> float | None:
        """Completion tokens per second from the first send to the last completion."""
        if self.first_sent_s is None or self.last_done_s is None or self.last_done_s <= self.first_sent_s:
            return None
        return self.completion_tokens_total / (self.last_done_s - self.first_sent_s)


def _split_url(base_url: str) -> tuple[str, str, int, str]:
    parsed = urllib.parse.urlsplit(base_url.rstrip("/"))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"server URL {base_url!r} must look like http://HOST:PORT")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, parsed.hostname, port, parsed.path


def _request_json(base_url: str, method: str, path: str, body: dict | None, timeout_s: float) -> dict:
    scheme, host, port, prefix = _split_url(base_url)
    conn_cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(host, port, timeout=timeout_s)
    try:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, prefix + path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {payload[:300].decode(errors='replace')}")
        return json.loads(payload)
    finally:
        conn.close()


def served_model(base_url: str, timeout_s: float = 5.0) -> str:
    """The id of the (first) model an OpenAI-compatible server serves.

    Raises:
        EngineUnreachable: the server does not answer /v1/models.
    """
    return served_model_info(base_url, timeout_s)[0]


def served_model_info(base_url: str, timeout_s: float = 5.0) -> tuple[str, int | None]:
    """(model id, max_model_len or None) of the first model the server lists (vLLM reports the length).

    Raises:
        EngineUnreachable: the server does not answer /v1/models.
    """
    try:
        model = _request_json(base_url, "GET", "/v1/models", None, timeout_s)["data"][0]
        max_len = model.get("max_model_len")
        return str(model["id"]), None if max_len is None else int(max_len)
    except (OSError, RuntimeError, KeyError, IndexError, ValueError, TypeError) as exc:
        raise EngineUnreachable(
            f"cannot list models at {base_url}/v1/models ({exc}); check the URL and that vLLM is running"
        ) from None


class LoadGenerator:
    """Sends a workload's requests to a completions API, open or closed loop.

    Args:
        base_url: the server, e.g. http://127.0.0.1:8000.
        workload: a `pals.sim.workload.Workload` (its `requests()` give arrival
            times and lengths); None with `concurrency` for a closed loop with
            fixed lengths.
        concurrency: closed loop: keep this many requests in flight (arrival
            times are ignored; lengths still come from `workload` if given).
        model: model id; default: asked from /v1/models at `start()`.
        max_prompt_tokens, max_output_tokens: clip lengths to what the served
            model accepts (trace prompts can exceed a small model's context).
        prompt_tokens, output_tokens: lengths for a closed loop without a workload.
        vocab_size: token ids are drawn from [1, vocab_size).
        max_requests: stop sending after this many requests (None: until stop()).
        seed: seeds the token ids; the workload carries its own seed.
        timeout_s: per-request HTTP timeout.
    """

    def __init__(
        self,
        base_url: str,
        workload=None,
        *,
        concurrency: int | None = None,
        model: str | None = None,
        max_prompt_tokens: int | None = None,
        max_output_tokens: int | None = None,
        prompt_tokens: int = 64,
        output_tokens: int = 32,
        vocab_size: int = 1000,
        max_requests: int | None = None,
        seed: int = 0,
        timeout_s: float = 600.0,
    ) -> None:
        _split_url(base_url)
        if workload is None and concurrency is None:
            raise ConfigError("LoadGenerator needs a workload (open loop) or a concurrency (closed loop)")
        if concurrency is not None and concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        if vocab_size < 2:
            raise ConfigError(f"vocab_size must be at least 2, got {vocab_size}")
        self.base_url = base_url.rstrip("/")
        self.workload = workload
        self.concurrency = concurrency
        self.model = model
        self.max_prompt_tokens = max_prompt_tokens
        self.max_output_tokens = max_output_tokens
        self.prompt_tokens = int(prompt_tokens)
        self.output_tokens = int(output_tokens)
        self.vocab_size = int(vocab_size)
        self.max_requests = max_requests
        self.seed = seed
        self.timeout_s = float(timeout_s)
        self.results: list[RequestResult] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._sent = 0
        self._first_sent_s: float | None = None
        self._rng = random.Random(seed)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> "LoadGenerator":
        if self.model is None:
            self.model = served_model(self.base_url)
        if self.concurrency is not None:
            lengths = self.workload.requests() if self.workload is not None else None
            lengths_lock = threading.Lock()
            for w in range(self.concurrency):
                t = threading.Thread(target=self._closed_loop_worker, args=(lengths, lengths_lock), name=f"pals-loadgen-{w}", daemon=True)
                self._threads.append(t)
        else:
            self._threads.append(threading.Thread(target=self._open_loop, name="pals-loadgen", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop sending new requests (requests in flight still finish)."""
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the sender and every request in flight; True if all finished."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s

        def join_all(threads) -> bool:
            for t in threads:
                t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if t.is_alive():
                    return False
            return True

        # Senders first: the open-loop sender starts request threads until it returns.
        return join_all(list(self._threads)) and join_all(self._workers_snapshot())

    def _workers_snapshot(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._workers)

    # -- counts ----------------------------------------------------------------------

    def stats(self) -> LoadStats:
        with self._lock:
            done = list(self.results)
            sent = self._sent
            first = self._first_sent_s
        ok = [r for r in done if r.ok]
        return LoadStats(
            sent=sent,
            completed=len(ok),
            errors=len(done) - len(ok),
            in_flight=sent - len(done),
            completion_tokens_total=sum(r.completion_tokens for r in ok),
            prompt_tokens_total=sum(r.prompt_tokens for r in ok),
            first_sent_s=first,
            last_done_s=max((r.done_s for r in done), default=None),
        )

    # -- sending -----------------------------------------------------------------------

    def _clip(self, prompt: int, output: int) -> tuple[int, int]:
        if self.max_prompt_tokens is not None:
            prompt = min(prompt, self.max_prompt_tokens)
        if self.max_output_tokens is not None:
            output = min(output, self.max_output_tokens)
        return max(1, int(prompt)), max(1, int(output))

    def _next_index(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or (self.max_requests is not None and self._sent >= self.max_requests):
                return None
            index = self._sent
            self._sent += 1
            if self._first_sent_s is None:
                self._first_sent_s = time.monotonic()
            return index

    def _open_loop(self) -> None:
        t0_s = time.monotonic()
        for req in self.workload.requests():
            delay_s = t0_s + req.arrival_s - time.monotonic()
            if delay_s > 0 and self._stop.wait(delay_s):
                return
            index = self._next_index()
            if index is None:
                return
            prompt, output = self._clip(req.prompt_tokens, req.output_tokens)
            t = threading.Thread(target=self._send, args=(index, prompt, output), daemon=True)
            with self._lock:
                self._workers.append(t)
            t.start()

    def _closed_loop_worker(self, lengths, lengths_lock) -> None:
        while True:
            index = self._next_index()
            if index is None:
                return
            if lengths is not None:
                with lengths_lock:
                    req = next(lengths, None)
                if req is None:
                    return
                prompt, output = self._clip(req.prompt_tokens, req.output_tokens)
            else:
                prompt, output = self._clip(self.prompt_tokens, self.output_tokens)
            self._send(index, prompt, output)

    def _send(self, index: int, prompt_tokens: int, max_tokens: int) -> None:
        with self._lock:
            ids = [self._rng.randrange(1, self.vocab_size) for _ in range(prompt_tokens)]
        body = {
            "model": self.model,
            "prompt": ids,
            "max_tokens": max_tokens,
            "min_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0.0,
            "stream": False,
        }
        sent_s = time.monotonic()
        error = None
        completion = 0
        try:
            reply = _request_json(self.base_url, "POST", "/v1/completions", body, self.timeout_s)
            completion = int(reply["usage"]["completion_tokens"])
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the load
            error = f"{type(exc).__name__}: {exc}"
        result = RequestResult(index, sent_s, time.monotonic(), prompt_tokens, max_tokens, completion, error)
        with self._lock:
            self.results.append(result)
