"""Drive a vLLM server with the official `openai` Python client (run in a vLLM venv: it ships openai).

Usage: python openai_load.py URL --requests N --concurrency C --max-tokens T [--stop-file PATH]
       [--progress PATH] [--prompt-tokens P] [--seed S]

Each request is a `client.completions.create` with a token-id prompt (the tiny test models run
with --skip-tokenizer-init, so there is no text on either side), `max_tokens` T and
`ignore_eos` (vLLM's extra parameter), so every completion must return exactly T tokens. C
worker threads keep C requests in flight (a closed loop) until N have been sent, or, with
--stop-file, until that file exists (N is then only an upper bound). --progress is rewritten
about every 0.2 s with `completed errors` so a test can follow the run.

The client is configured as an operator's would be: the library's default retries (2, for
connection errors and 408/409/429/5xx answers; a keep-alive connection the server closed just as
a request went out is the usual one on a loaded host). Every HTTP attempt is counted, so retries
are reported, not hidden: a retried request that had already generated tokens would show as
vLLM's counter exceeding the client's.

Prints one line `PALS_RESULT {json}`: sent, completed, errors, completion_tokens (the sum of
each response's usage.completion_tokens), short (completions with fewer than T tokens),
attempts and retries (HTTP requests to /v1/completions beyond one per completion),
first_errors (with their causes), wall_s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--max-tokens", type=int, required=True)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--stop-file", default=None)
    p.add_argument("--progress", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout-s", type=float, default=600.0)
    a = p.parse_args()

    import httpx
    import openai

    lock = threading.Lock()
    state = {"sent": 0, "completed": 0, "errors": 0, "tokens": 0, "short": 0, "attempts": 0, "first_errors": []}

    def count_attempt(request) -> None:
        if request.url.path.endswith("/completions"):
            with lock:
                state["attempts"] += 1

    http_client = httpx.Client(timeout=a.timeout_s, event_hooks={"request": [count_attempt]})
    client = openai.OpenAI(base_url=a.url.rstrip("/") + "/v1", api_key="unused", http_client=http_client)
    model = client.models.list().data[0].id

    def take() -> int | None:
        with lock:
            if state["sent"] >= a.requests or (a.stop_file and os.path.exists(a.stop_file)):
                return None
            state["sent"] += 1
            return state["sent"]

    def worker(wid: int) -> None:
        rng = random.Random(a.seed * 1000 + wid)
        while (index := take()) is not None:
            prompt = [rng.randrange(1, 900) for _ in range(a.prompt_tokens)]
            try:
                out = client.completions.create(
                    model=model, prompt=prompt, max_tokens=a.max_tokens, temperature=0.0,
                    extra_body={"ignore_eos": True},
                )
                n = out.usage.completion_tokens
                with lock:
                    state["completed"] += 1
                    state["tokens"] += n
                    state["short"] += n < a.max_tokens
            except Exception as exc:  # noqa: BLE001 - counted and reported, never hidden
                cause = exc.__cause__ or exc.__context__
                why = f"request {index}: {type(exc).__name__}: {exc}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
                with lock:
                    state["errors"] += 1
                    if len(state["first_errors"]) < 3:
                        state["first_errors"].append(why[:400])

    def progress(stop: threading.Event) -> None:
        while not stop.wait(0.2):
            with lock:
                line = f"{state['completed']} {state['errors']}\n"
            tmp = a.progress + ".tmp"
            with open(tmp, "w") as f:
                f.write(line)
            os.replace(tmp, a.progress)

    t0 = time.monotonic()
    done = threading.Event()
    reporter = threading.Thread(target=progress, args=(done,), daemon=True) if a.progress else None
    if reporter:
        reporter.start()
    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(a.concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    result = {
        "model": model,
        "sent": state["sent"],
        "completed": state["completed"],
        "errors": state["errors"],
        "completion_tokens": state["tokens"],
        "short": state["short"],
        "attempts": state["attempts"],
        "retries": state["attempts"] - state["completed"] - state["errors"],
        "first_errors": state["first_errors"],
        "wall_s": round(time.monotonic() - t0, 3),
    }
    print("PALS_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
