"""The control endpoint against hostile and careless clients (issue 13), over real HTTP on loopback.

Every test asserts an outcome (status, the loop's budget, whether a connection was cut), never a
duration's upper bound: waits are generous so a loaded 2-core machine cannot fail them.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time

import pytest

from pals.control import endpoint_server
from pals.control.auth import bearer_header, check_exposure, is_loopback_host, resolve_token, token_matches, validate_token
from pals.control.budget import PowerBudget
from pals.control.endpoint import Endpoint, EndpointLimits
from pals.control.endpoint_guard import split_host
from pals.control.loop import ControlLoop
from pals.control.policies import Baseline
from pals.errors import ConfigError
from pals.sim.node import SimNode, SimNodeSpec
from pals.sim.workload import LengthDistribution, PoissonWorkload

TOKEN = "test-token-0123456789abcdef"
PATIENCE_S = 60.0  # the most any wait below may take; on an idle machine each takes ~1 s or less


@pytest.fixture()
def loop(tmp_path):
    workload = PoissonWorkload(4.0, LengthDistribution.fixed(300), LengthDistribution.fixed(100), seed=1)
    # Simulated node: 4 x A100 capped at 400 W each (1,600 W of GPUs), standing in for real GPUs.
    node = SimNode(SimNodeSpec("Qwen1.5-MoE-A2.7B", "A100-SXM4-80GB"), workload, seed=1)
    control = ControlLoop(node, Baseline(), node.clock, decision_log=tmp_path / "d.jsonl")
    for _ in range(3):
        control.step()
        node.clock.wait_until(node.clock.now_s() + 0.5)
    yield control
    control.close()


@pytest.fixture()
def serve(loop):
    """serve(**endpoint kwargs) -> a started Endpoint on 127.0.0.1, stopped after the test."""
    started = []

    def start(**kwargs) -> Endpoint:
        kwargs.setdefault("port", 0)
        endpoint = Endpoint(loop, **kwargs).start()
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


def call(endpoint, method, path, body=None, headers=None, content_type="application/json", host=None):
    """One request; returns (status, headers, parsed JSON or raw bytes)."""
    conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=PATIENCE_S)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        if data is not None:
            if content_type is not None:
                conn.putheader("Content-Type", content_type)
            conn.putheader("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders(data)
        response = conn.getresponse()
        raw = response.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw
        return response.status, dict(response.getheaders()), payload
    finally:
        conn.close()


def auth():
    return bearer_header(TOKEN)


def wait_for(predicate, what: str) -> None:
    end_s = time.monotonic() + PATIENCE_S
    while time.monotonic() < end_s:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"not within {PATIENCE_S} s: {what}")


# -- the issue's repro: a cross-site text/plain POST ----------------------------------------------


def test_issue_repro_text_plain_post_gets_415_and_the_budget_is_unchanged(loop, serve):
    endpoint = serve()
    status, _, payload = call(endpoint, "POST", "/budget", b'{"budget_w":1234}', content_type="text/plain")
    assert status == 415 and "application/json" in payload["error"]
    assert loop.budget is None
    status, _, _ = call(endpoint, "POST", "/budget", {"budget_w": 1234})
    assert status == 200 and loop.budget == PowerBudget(1234.0)


def test_issue_repro_with_a_token_gets_401_without_it_and_415_with_it(loop, serve):
    endpoint = serve(token=TOKEN)
    status, headers, payload = call(endpoint, "POST", "/budget", b'{"budget_w":1234}', content_type="text/plain")
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert "Authorization: Bearer" in payload["error"]
    status, _, _ = call(endpoint, "POST", "/budget", b'{"budget_w":1234}', headers=auth(), content_type="text/plain")
    assert status == 415
    assert loop.budget is None


@pytest.mark.parametrize("content_type, code", [
    ("text/plain", 415), ("application/x-www-form-urlencoded", 415), ("multipart/form-data; boundary=x", 415),
    (None, 415), ("application/json; charset=utf-16", 415), ("application/jsonx", 415),
    ("application/json", 200), ("Application/JSON; charset=UTF-8", 200),
])
def test_bodies_must_be_declared_json(loop, serve, content_type, code):
    endpoint = serve()
    status, _, _ = call(endpoint, "PUT", "/target", {"target_tps": 321}, content_type=content_type)
    assert status == code
    assert (loop.target is not None) == (code == 200)


# -- bearer token ------------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer wrong-token-0123456789abc", f"Basic {TOKEN}", f"Bearer {TOKEN}x",
    f"Bearer {TOKEN[:-1]}", "Bearer t\u00e9st-token-0123456789abcdef",
])
def test_mutating_routes_need_the_right_token(loop, serve, authorization):
    endpoint = serve(token=TOKEN)
    headers = {} if authorization is None else {"Authorization": authorization}
    for path, body in (("/budget", {"budget_w": 900}), ("/target", {"target_tps": 100})):
        status, _, payload = call(endpoint, "PUT", path, body, headers=headers)
        assert status == 401 and "token" in payload["error"]
    assert loop.budget is None and loop.target is None


def test_the_right_token_sets_budget_and_target_and_loopback_reads_stay_open(loop, serve):
    endpoint = serve(token=TOKEN)
    assert call(endpoint, "PUT", "/budget", {"budget_w": 900, "kind": "gpu"}, headers={"Authorization": f"bearer  {TOKEN}"})[0] == 200
    assert call(endpoint, "PUT", "/target", {"target_tps": 100}, headers=auth())[0] == 200
    assert loop.budget == PowerBudget(900.0, "gpu") and loop.target.target_tps == 100.0
    for path in ("/status", "/decisions?n=2", "/frontier", "/metrics"):
        assert call(endpoint, "GET", path)[0] == 200, path


def test_protected_reads_need_the_token_except_metrics(serve):
    endpoint = serve(token=TOKEN, protect_reads=True)
    for path in ("/status", "/decisions?n=2", "/frontier"):
        assert call(endpoint, "GET", path)[0] == 401, path
        assert call(endpoint, "GET", path, headers=auth())[0] == 200, path
    status, headers, body = call(endpoint, "GET", "/metrics")
    assert status == 200 and b"pals_gpu_power_cap_watts" in body


def test_token_comparison_is_exact_and_never_raises():
    assert token_matches(f"Bearer {TOKEN}", TOKEN) and token_matches(f"BEARER {TOKEN}", TOKEN)
    assert not token_matches(f"Bearer {TOKEN[:-1]}", TOKEN)
    assert not token_matches("Bearer \u00e9\u00e9", TOKEN)  # non-ASCII: False, not TypeError
    assert not token_matches(None, TOKEN) and not token_matches(TOKEN, TOKEN)


# -- binding beyond loopback -----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "10.0.0.7", "192.168.1.20", "node1.example.com"])
def test_a_non_loopback_host_without_a_token_is_refused_before_binding(loop, host):
    with pytest.raises(ConfigError, match="--endpoint-token-file"):
        check_exposure(host, None)
    with pytest.raises(ConfigError, match="--endpoint-token-file"):
        Endpoint(loop, host=host, port=0)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST.", "::1", "[::1]"])
def test_loopback_hosts_need_no_token(host):
    assert is_loopback_host(host)
    check_exposure(host, None)


def test_a_non_loopback_endpoint_with_a_token_protects_reads(loop):
    endpoint = Endpoint(loop, host="0.0.0.0", port=0, token=TOKEN)  # constructed, never started
    assert endpoint.protect_reads


@pytest.mark.parametrize("bind, own_name, other_name", [("127.0.0.2", "127.0.0.2:{port}", "127.0.0.1:{port}"),
                                                       ("::1", "[::1]:{port}", "127.0.0.1:{port}")])
def test_an_endpoint_on_another_loopback_address_accepts_only_its_own_names(loop, bind, own_name, other_name):
    try:
        endpoint = Endpoint(loop, host=bind, port=0).start()
    except ConfigError as error:
        pytest.skip(f"{bind} cannot be bound here: {error}")
    try:
        assert call(endpoint, "GET", "/status", host=own_name.format(port=endpoint.port))[0] == 200
        assert call(endpoint, "GET", "/status", host="localhost")[0] == 200
        assert call(endpoint, "GET", "/status", host=other_name.format(port=endpoint.port))[0] == 421
    finally:
        endpoint.stop()


def test_host_names_are_compared_without_port_case_or_trailing_dot():
    assert [split_host(h) for h in ("[::1]:80", "::1", "LocalHost.:9400", "127.0.0.1", "a.b:x")] == [
        "::1", "::1", "localhost", "127.0.0.1", "a.b:x"]


# -- Host and Origin (DNS rebinding, CSRF) ------------------------------------------------------------


@pytest.mark.parametrize("host, code", [
    ("evil.example", 421), ("evil.example:{port}", 421), ("127.0.0.1.evil.example", 421), ("", 421),
    ("127.0.0.1", 200), ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("LocalHost.:8080", 200),
    ("node1.lan:9400", 200),
])
def test_host_must_be_a_name_of_the_endpoint(loop, serve, host, code):
    endpoint = serve(allowed_hosts=("node1.lan",))
    host = host.format(port=endpoint.port)
    assert call(endpoint, "GET", "/status", host=host)[0] == code
    status, _, payload = call(endpoint, "PUT", "/budget", {"budget_w": 1000}, host=host)
    assert status == code
    assert (loop.budget is None) == (code != 200)
    if code != 200:
        assert "Host" in payload["error"]


def raw_request(endpoint, data: bytes) -> bytes:
    with socket.create_connection((endpoint.host, endpoint.port), timeout=PATIENCE_S) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_http11_without_host_is_400_and_http10_without_host_is_served(serve):
    endpoint = serve()
    assert raw_request(endpoint, b"GET /status HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 400")
    assert raw_request(endpoint, b"GET /status HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")


@pytest.mark.parametrize("origin, code", [
    ("http://evil.example", 403), ("https://evil.example:{port}", 403), ("null", 403),
    ("http://127.0.0.1.evil.example", 403), ("file://", 403), ("ftp://127.0.0.1", 403),
    ("http://127.0.0.1:{port}", 200), ("http://localhost:3000", 200),
])
def test_a_browser_origin_must_be_a_name_of_the_endpoint(loop, serve, origin, code):
    endpoint = serve(token=TOKEN)
    origin = origin.format(port=endpoint.port)
    status, _, payload = call(endpoint, "PUT", "/budget", {"budget_w": 1000}, headers={"Origin": origin, **auth()})
    assert status == code
    assert (loop.budget is None) == (code != 200)
    assert call(endpoint, "GET", "/status", headers={"Origin": origin})[0] == code
    if code == 403:
        assert "cross-origin" in payload["error"]


def test_a_cors_preflight_gets_no_permission(serve):
    endpoint = serve()
    status, headers, payload = call(endpoint, "OPTIONS", "/budget", headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "PUT"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, headers, payload = call(endpoint, "OPTIONS", "/budget")
    assert status == 405 and "Access-Control-Allow-Origin" not in headers and "not allowed" in payload["error"]


# -- hostile payloads: 400 with one line, never 500, nothing applied ----------------------------------


HOSTILE_BUDGETS = [
    (b'{"budget_w": ' + b"9" * 5000 + b"}", "digits"),
    (b'{"budget_w": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),
    (b"[" * 5000 + b"]" * 5000, "nested"),
    (b'{"budget_w": NaN}', "NaN"),
    (b'{"budget_w": Infinity}', "Infinity"),
    (b'{"budget_w": -Infinity}', "Infinity"),
    (b'{"budget_w": 1e999}', "finite"),
    (b'{"budget_w": true}', "number"),
    (b'{"budget_w": false}', "number"),
    (b'{"budget_w": "1500"}', "number"),
    (b'{"budget_w": [1500]}', "number"),
    (b'{"budget_w": {"w": 1500}}', "number"),
    (b'{"budget_w": 1e308}', "202,500 W"),
    (b'{"budget_w": 1e-300}', "between 1"),
    (b'{"budget_w": 0}', "between 1"),
    (b'{"budget_w": -0.0}', "between 1"),
    (b'{"budget_w": -1500}', "between 1"),
    (b'{"budget_w": 202501}', "100 x this node's maximum node draw of 2,025 W"),
    (b'{"budget_w": 160001, "kind": "gpu"}', "maximum gpu draw of 1,600 W"),
    (b'{"budget_w": 1500, "kind": true}', "kind"),
    (b'{"budget_w": 1500, "kind": "rack"}', "kind"),
    (b'{"budget_w": 1500, "extra": 1}', "unknown field"),
    (b'{"budget_w": 1500, "budget_w": 5000}', "more than once"),
    (b'{"budget_w": 1500', "not valid JSON"),
    (b'\xff\xfe{\x00"\x00', "UTF-8"),
    (b'"budget_w"', "JSON object"),
    (b"null", "JSON object"),
    (b"{}", "missing field"),
]


@pytest.mark.parametrize("body, words", HOSTILE_BUDGETS, ids=[body[:30].decode("latin-1") for body, _ in HOSTILE_BUDGETS])
def test_hostile_budget_bodies_get_400_and_change_nothing(loop, serve, body, words):
    endpoint = serve()
    status, headers, payload = call(endpoint, "PUT", "/budget", body)
    assert status == 400, payload
    assert headers["Content-Type"] == "application/json"
    assert words in payload["error"] and "\n" not in payload["error"]
    assert loop.budget is None


@pytest.mark.parametrize("body, words", [
    (b'{"target_tps": NaN}', "NaN"), (b'{"target_tps": true}', "number"), (b'{"target_tps": 1e308}', "between"),
    (b'{"target_tps": 1e-300}', "between"), (b'{"target_tps": ' + b"1" * 30 + b"}", "digits"),
])
def test_hostile_target_bodies_get_400_and_change_nothing(loop, serve, body, words):
    endpoint = serve()
    status, _, payload = call(endpoint, "PUT", "/target", body)
    assert status == 400 and words in payload["error"]
    assert loop.target is None


def test_budget_limits_are_inclusive_and_null_removes(loop, serve):
    endpoint = serve()
    assert call(endpoint, "PUT", "/budget", {"budget_w": 160000, "kind": "gpu"})[0] == 200
    assert loop.budget == PowerBudget(160000.0, "gpu")
    assert call(endpoint, "PUT", "/budget", {"budget_w": 1})[0] == 200
    assert call(endpoint, "PUT", "/budget", {"budget_w": None})[0] == 200 and loop.budget is None


@pytest.mark.parametrize("headers, code", [
    ({"Content-Length": "1000000"}, 413), ({"Content-Length": "-5"}, 400), ({"Content-Length": "12abc"}, 400),
    ({"Transfer-Encoding": "chunked"}, 411), ({"Host": "evil.example"}, 400),
    ({"Authorization": f"Bearer {TOKEN}"}, 200),
])
def test_unacceptable_body_framing(loop, serve, headers, code):
    endpoint = serve()
    lines = [b"PUT /budget HTTP/1.1", f"Host: 127.0.0.1:{endpoint.port}".encode(), b"Content-Type: application/json"]
    lines += [f"{k}: {v}".encode() for k, v in headers.items()]
    if code == 200:  # the well-framed control case
        lines += [b"Content-Length: 17"]
    reply = raw_request(endpoint, b"\r\n".join(lines) + b"\r\n\r\n" + (b'{"budget_w": 900}' if code == 200 else b""))
    assert reply.startswith(f"HTTP/1.0 {code}".encode()), reply[:200]
    if code != 200:
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["error"]
    assert (loop.budget is None) == (code != 200)


def test_garbage_request_lines_get_json_errors(serve):
    endpoint = serve()
    for garbage in (b"GARBAGE\r\n\r\n", b"GET /status HTTP/9.9\r\n\r\n", b"\x00\xff\r\n\r\n"):
        reply = raw_request(endpoint, garbage)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.split()[1][:1] == b"4" or head.split()[1] == b"505", head
        assert "error" in json.loads(body)


# -- /decisions: capped n, rate limits, no lock held while serialising ----------------------------------


def test_decisions_n_is_capped(serve):
    endpoint = serve()
    status, _, payload = call(endpoint, "GET", "/decisions?n=10000")
    assert status == 400 and "between 1 and 1000" in payload["error"]
    status, _, payload = call(endpoint, "GET", "/decisions?n=1000")
    assert status == 200 and [r["interval"] for r in payload] == [0, 1, 2]


def test_expensive_routes_are_rate_limited_each_on_its_own(serve):
    # 0.001/s refills one request in 1,000 s: the third /decisions is refused however slow the machine.
    endpoint = serve(limits=EndpointLimits(expensive_rate_per_s=0.001, expensive_burst=2))
    assert [call(endpoint, "GET", "/decisions?n=1")[0] for _ in range(2)] == [200, 200]
    status, headers, payload = call(endpoint, "GET", "/decisions?n=1")
    assert status == 429 and int(headers["Retry-After"]) >= 1 and "too many" in payload["error"]
    assert call(endpoint, "GET", "/frontier")[0] == 200
    assert [call(endpoint, "GET", "/status")[0] for _ in range(5)] == [200] * 5


def test_the_loop_lock_is_free_while_a_response_is_serialised(loop, serve, monkeypatch):
    endpoint = serve()
    outcome = {}
    real_dumps = endpoint_server.dumps_json

    def dumps_and_probe(payload, *args, **kwargs):
        if isinstance(payload, list):  # the /decisions answer: try the loop from another thread meanwhile
            def use_loop():
                loop.set_budget(PowerBudget(777.0))
                outcome["status"] = loop.status()["budget"]
                outcome["recent"] = len(loop.log.recent(3))

            other = threading.Thread(target=use_loop, daemon=True)
            other.start()
            other.join(PATIENCE_S)
            outcome["finished"] = not other.is_alive()
        return real_dumps(payload, *args, **kwargs)

    monkeypatch.setattr(endpoint_server, "dumps_json", dumps_and_probe)
    assert call(endpoint, "GET", "/decisions?n=3")[0] == 200
    assert outcome == {"finished": True, "status": {"budget_w": 777.0, "kind": "node"}, "recent": 3}


# -- worker pool and deadlines ---------------------------------------------------------------------


def stalled_connection(endpoint) -> socket.socket:
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=PATIENCE_S)
    sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: the request never ends
    return sock


def test_a_full_worker_pool_answers_503_and_recovers(serve):
    endpoint = serve(limits=EndpointLimits(max_connections=2, read_timeout_s=600.0))
    stalled = [stalled_connection(endpoint) for _ in range(2)]
    try:
        wait_for(lambda: endpoint.active_connections == 2, "both stalled connections are being served")
        status, headers, payload = call(endpoint, "GET", "/status")
        assert status == 503 and headers["Retry-After"] == "1" and "busy" in payload["error"]
    finally:
        for sock in stalled:
            sock.close()
    wait_for(lambda: endpoint.active_connections == 0, "the workers are freed when the clients go")
    assert call(endpoint, "GET", "/status")[0] == 200


def cut_after(sock: socket.socket, trickle: bytes) -> float:
    """Send `trickle` one byte every 0.2 s (then nothing) until the server cuts us; returns seconds taken."""
    start_s = time.monotonic()
    sock.settimeout(0.2)
    sent = 0
    while time.monotonic() - start_s < PATIENCE_S:
        try:
            if sent < len(trickle):
                sock.send(trickle[sent:sent + 1])
                sent += 1
            if sock.recv(4096) == b"":
                return time.monotonic() - start_s
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start_s
    raise AssertionError(f"the server did not cut a stalled client within {PATIENCE_S} s")


@pytest.mark.parametrize("trickle", [b"", b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 2000],
                         ids=["silent", "one-byte-every-0.2s"])
def test_a_stalled_or_trickling_client_is_cut_at_the_deadline_and_frees_its_worker(serve, trickle):
    # A per-read timeout would never cut the trickle (a byte every 0.2 s < 1 s): only a deadline does.
    endpoint = serve(limits=EndpointLimits(max_connections=1, read_timeout_s=1.0))
    with socket.create_connection((endpoint.host, endpoint.port), timeout=PATIENCE_S) as sock:
        taken_s = cut_after(sock, trickle)
    assert taken_s >= 0.9  # cut by the deadline, not before it
    wait_for(lambda: endpoint.active_connections == 0, "the worker is freed")
    assert call(endpoint, "GET", "/status")[0] == 200


def test_stop_returns_while_a_client_stalls(serve):
    endpoint = serve(limits=EndpointLimits(read_timeout_s=600.0))
    sock = stalled_connection(endpoint)
    try:
        wait_for(lambda: endpoint.active_connections == 1, "the stalled connection is being served")
        endpoint.stop()
        sock.settimeout(PATIENCE_S)
        try:
            assert sock.recv(4096) == b""  # the server closed it rather than waiting 600 s
        except ConnectionResetError:
            pass
    finally:
        sock.close()


def test_limits_are_validated():
    for bad in ({"max_connections": 0}, {"read_timeout_s": float("nan")}, {"expensive_rate_per_s": 0},
                {"max_decisions": 0}, {"write_timeout_s": float("inf")}):
        with pytest.raises(ConfigError):
            EndpointLimits(**bad)


# -- token sources -----------------------------------------------------------------------------------


def write_token(tmp_path, text, mode=0o600, name="token"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    os.chmod(path, mode)
    return path


def test_resolve_token_reads_a_private_file_stripped(tmp_path, monkeypatch):
    monkeypatch.setenv("PALS_ENDPOINT_TOKEN", "from-the-environment-0123456789")
    assert resolve_token(write_token(tmp_path, f"  {TOKEN}\n")) == TOKEN  # the file wins over the variable
    assert resolve_token(str(write_token(tmp_path, TOKEN, 0o400, "ro"))) == TOKEN


def test_resolve_token_falls_back_to_the_environment(monkeypatch):
    monkeypatch.delenv("PALS_ENDPOINT_TOKEN", raising=False)
    assert resolve_token(None) is None
    monkeypatch.setenv("PALS_ENDPOINT_TOKEN", f"{TOKEN}\n")
    assert resolve_token(None) == TOKEN
    monkeypatch.setenv("MY_TOKEN", "other-token-0123456789abcdef")
    assert resolve_token(None, env_var="MY_TOKEN") == "other-token-0123456789abcdef"
    monkeypatch.setenv("PALS_ENDPOINT_TOKEN", "  ")
    with pytest.raises(ConfigError, match="empty"):
        resolve_token(None)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602])
def test_a_token_file_open_to_group_or_others_is_refused(tmp_path, mode):
    path = write_token(tmp_path, TOKEN, mode)
    with pytest.raises(ConfigError, match=f"chmod 600 {path}"):
        resolve_token(path)


@pytest.mark.parametrize("content, words", [
    ("", "empty"), ("\n  \n", "empty"), ("short", "fewer than 16"), ("two words in one token", "spaces"),
    (b"\xff\xfe\x00garbage-garbage", "not text"), ("x" * 5000, "larger than"),
])
def test_bad_token_file_contents_are_refused(tmp_path, content, words):
    with pytest.raises(ConfigError, match=words):
        resolve_token(write_token(tmp_path, content))


def test_missing_token_file_or_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_token(tmp_path / "nope")
    with pytest.raises(ConfigError, match="not a regular file"):
        resolve_token(tmp_path)


def test_an_endpoint_refuses_an_unusable_token(loop):
    with pytest.raises(ConfigError, match="fewer than 16"):
        Endpoint(loop, port=0, token="short")
    with pytest.raises(ConfigError, match="empty"):
        validate_token("", "test")
