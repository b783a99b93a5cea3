"""VllmNode against a stand-in /metrics server, the load generator, and `pals serve`'s bad inputs.

No vLLM here (these run in the main test venv): the /metrics page is the real
captured one served by a local http.server, and the scheduler end of the cap
channel is played by a `CapReader` in the test. `pals serve`'s error paths use
FAKE vllm packages in tests/data/fake_vllm (test doubles for an old vLLM and
for a server that never becomes healthy). Real-vLLM tests are in tests/vllm/.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pals.cli import main
from pals.errors import ConfigError, EngineUnreachable
from pals.integrations.cap_channel import CapReader, read_record
from pals.core.node import Actuation, Node

DATA = Path(__file__).resolve().parents[1] / "data"
PAGE = (DATA / "metrics-sample-vllm-0.32-cpu.txt").read_text()
PROFILE = DATA / "profile-tiny-mixtral-cpu-simgpu.csv"


class FakeVllmServer:
    """Serves the captured /metrics page and an OpenAI completions stand-in (no model).

    `metrics_gate`, when cleared, holds every /metrics request until it is set again (a busy
    API server); `metrics_in_flight` counts those held.
    """

    def __init__(self, page: str = PAGE) -> None:
        self.page = page
        self.completions = 0
        self.metrics_gate = threading.Event()
        self.metrics_gate.set()
        self.metrics_in_flight = 0
        self.metrics_answered = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path == "/metrics":
                    outer.metrics_in_flight += 1
                    outer.metrics_gate.wait()
                    page = outer.page  # as it is when the server gets round to answering
                    outer.metrics_in_flight -= 1
                    self._send(200, page.encode(), "text/plain")
                    outer.metrics_answered += 1
                elif self.path == "/v1/models":
                    self._send(200, json.dumps({"data": [{"id": "tiny", "max_model_len": 512}]}).encode())
                else:
                    self._send(404, b"{}")

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with threading.Lock():
                    outer.completions += 1
                usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": body["max_tokens"]}
                self._send(200, json.dumps({"choices": [{"text": ""}], "usage": usage}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.metrics_gate.set()
        self.server.shutdown()
        self.server.server_close()


def _sim_gpus(tmp_path, settable=True):
    from pals.node.vllm_node import open_gpu_backend

    return open_gpu_backend("simulated", "A100-SXM4-80GB", 2, str(tmp_path / "sim" / "driver.json"), settable=settable)


def test_node_samples_applies_and_restores(tmp_path):
    from pals.node.hwstate import PowerLimitGuard
    from pals.node.vllm_node import SIMULATED_GPU_NOTE, VllmNode

    channel = tmp_path / "cap"
    scheduler_end = CapReader(channel, min_interval_s=0.0)
    scheduler_end.report_applied(seq=0, cap=16, effective_cap=16, running=0, max_cap=16)  # as at engine start
    gpus = _sim_gpus(tmp_path)
    guard = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    with FakeVllmServer() as server:
        node = VllmNode(server.url, gpus, channel, guard=guard)
        assert isinstance(node, Node)
        c = node.constraints()
        assert c.batch_cap_max == 16  # read from the scheduler's report
        assert c.num_gpus == 2 and c.model_name == "tiny-llama" and "simulated" in c.gpu_name
        s = node.sample()
        assert s.generated_tokens_total == 16.0 and s.requests_running == 0 and s.batch_cap == 16
        assert SIMULATED_GPU_NOTE in s.notes
        assert len(s.gpu_power_cap_w) == 2 and s.gpu_power_cap_w[0] == 400.0

        node.apply(Actuation(power_cap_w=250.0, batch_cap=4))
        assert [gpus.get_power_limit_w(i) for i in range(2)] == [250.0, 250.0]
        assert read_record(str(channel)).cap == 4
        assert any("not yet applied" in n for n in node.sample().notes)
        rec = scheduler_end.poll()  # the scheduler picks it up and reports
        scheduler_end.report_applied(rec.seq, rec.cap, effective_cap=6, running=6, max_cap=16)
        s = node.sample()
        assert s.batch_cap == 4 and not any("not yet applied" in n for n in s.notes)
        assert node.batch_cap_state().effective == 6
        node.apply(Actuation(batch_cap=4))  # unchanged: no new record
        assert read_record(str(channel)).seq == rec.seq
        with pytest.raises(ConfigError):
            node.apply(Actuation(batch_cap=17))

        node.close()
    assert read_record(str(channel)).cap == 16  # batch cap back to max_num_seqs
    assert [gpus.get_power_limit_w(i) for i in range(2)] == [400.0, 400.0]  # originals back


def test_a_dropped_scrape_is_bridged_then_reported(tmp_path):
    """A busy host may drop one /metrics scrape: the node reuses the last engine data (with its
    age and a note) instead of stopping the controller, and raises once it is too stale."""
    from pals.node.hwstate import PowerLimitGuard
    from pals.node.vllm_node import VllmNode

    channel = tmp_path / "cap"
    CapReader(channel, min_interval_s=0.0).report_applied(seq=0, cap=16, effective_cap=16, running=0, max_cap=16)
    gpus = _sim_gpus(tmp_path)
    guard = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    with FakeVllmServer() as server:
        node = VllmNode(server.url, gpus, channel, guard=guard, stale_limit_s=0.3)
        good = node.sample()
        server.page = "# no vLLM families here\n"
        bridged = node.sample()
        assert bridged.generated_tokens_total == good.generated_tokens_total
        assert any("did not answer" in n for n in bridged.notes)
        assert bridged.age_s >= bridged.time_s - good.time_s - 1e-6
        time.sleep(0.35)
        with pytest.raises(EngineUnreachable):
            node.sample()
        node.close()


def _page_with(generated: float) -> str:
    import re

    return re.sub(r'(vllm:generation_tokens_total\{[^}]*\}) [0-9.e+]+', rf"\g<1> {generated}", PAGE)


def _scheduler_end(channel, max_cap=8):
    """The scheduler's two ends, played here: the applied report and the engine-state publisher."""
    from pals.integrations.engine_state import StatePublisher, state_path_for

    CapReader(channel, min_interval_s=0.0).report_applied(seq=0, cap=max_cap, effective_cap=max_cap, running=0,
                                                          max_cap=max_cap)
    return StatePublisher(state_path_for(channel), min_interval_s=0.0)


def test_queues_and_counters_come_from_the_scheduler_record(tmp_path):
    """vLLM's gauges read 0 (the captured page) while 8 requests run and 40 wait: the node takes
    the queues, KV use and token counters from PalsScheduler's record, and says so."""
    from pals.node.hwstate import PowerLimitGuard
    from pals.node.vllm_node import GAUGE_FALLBACK_NOTE, VllmNode

    channel = tmp_path / "cap"
    publisher = _scheduler_end(channel)
    publisher.count_outputs(generated_tokens=500, prompt_tokens=2000, finished=3)
    publisher.publish(8, 40, 0.3, 8, 8)
    gpus = _sim_gpus(tmp_path)
    guard = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    with FakeVllmServer() as server:
        node = VllmNode(server.url, gpus, channel, guard=guard)
        s = node.sample()
        assert (s.requests_running, s.requests_waiting, s.kv_cache_usage) == (8, 40, 0.3)
        assert (s.generated_tokens_total, s.prompt_tokens_total, s.requests_finished_total) == (500, 2000, 3)
        assert not any(n.startswith(GAUGE_FALLBACK_NOTE) for n in s.notes)
        status = node.status()
        assert status["counters_source"] == "scheduler" and status["queues_source"] == "scheduler"
        # The engine stops publishing while busy (stuck for longer than the limit, 10 s):
        # its queues give way to the gauges, with a note; its counters stay, marked by their age.
        from pals.integrations.engine_state import StatePublisher, state_path_for

        old = StatePublisher(state_path_for(channel), clock=lambda: time.monotonic() - 12.0)
        old.seq = publisher.seq
        old.count_outputs(600)
        old.publish(8, 40, 0.3, 8, 8)
        s = node.sample()
        assert (s.requests_running, s.requests_waiting) == (0, 0)  # the page's gauges
        assert any(n.startswith(GAUGE_FALLBACK_NOTE) and "12." in n for n in s.notes), s.notes
        assert s.generated_tokens_total == 600 and s.age_s >= 12.0
        assert node.status()["queues_source"] == "gauges"
        node.close()


def test_token_and_energy_totals_add_up_over_intervals(tmp_path):
    """Each sample is dated at the record's instant with the GPU energy interpolated there, so the
    controller's intervals add up to the engine's token counter and the GPUs' energy counter,
    whatever mix of busy, idle and not-yet-renewed records the samples meet."""
    from pals.control.types import observe
    from pals.node.hwstate import PowerLimitGuard
    from pals.node.vllm_node import VllmNode

    channel = tmp_path / "cap"
    publisher = _scheduler_end(channel)
    publisher.publish(0, 0, 0.0, 8, 8)
    gpus = _sim_gpus(tmp_path)
    guard = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    with FakeVllmServer() as server:
        node = VllmNode(server.url, gpus, channel, guard=guard)
        samples = [node.sample()]
        for k in range(24):
            if k % 5 != 3:  # every 5th interval the engine publishes nothing new (a long step)
                publisher.count_outputs(generated_tokens=37 * (k % 4) + 11, prompt_tokens=64)
                running = 0 if k % 7 == 6 else 8
                publisher.publish(running, 0 if running == 0 else 12, 0.2, 8, 8)
            time.sleep(0.01)
            samples.append(node.sample())
        node.close()
    times = [s.time_s for s in samples]
    assert times == sorted(times) and len(set(times)) == len(times)
    obs = [observe(a, b) for a, b in zip(samples, samples[1:])]
    assert sum(o.generated_tokens for o in obs) == pytest.approx(publisher.generated_tokens_total, rel=1e-9)
    energy_j = samples[-1].gpu_energy_total_j - samples[0].gpu_energy_total_j
    assert sum(o.gpu_energy_j for o in obs) == pytest.approx(energy_j, rel=1e-9)
    assert all(o.gpu_energy_j >= 0 and o.generated_tokens >= 0 for o in obs)
    assert node.status()["readings"]["aligned"] > 0 and node.status()["readings"]["now"] > 0


def test_a_slow_metrics_page_never_holds_the_sample(tmp_path):
    """Without a scheduler record the counters come from /metrics. A scrape the server holds is
    not waited for beyond the deadline: the sample bridges with the last data (a note, its age),
    the scrape finishes in the background, and its counters land in a later sample."""
    from pals.node.hwstate import PowerLimitGuard
    from pals.node.vllm_node import VllmNode

    channel = tmp_path / "cap"
    CapReader(channel, min_interval_s=0.0).report_applied(seq=0, cap=8, effective_cap=8, running=0, max_cap=8)
    gpus = _sim_gpus(tmp_path)
    guard = PowerLimitGuard(gpus, handle_signals=False, register_atexit=False)
    with FakeVllmServer() as server:
        node = VllmNode(server.url, gpus, channel, guard=guard, scrape_deadline_s=0.05)
        assert node.status()["counters_source"] == "metrics"
        first = node.sample()
        server.metrics_gate.clear()
        held = node.sample()  # its scrape is held by the server: this returns without it
        assert server.metrics_in_flight == 1 and node.status()["scrape_in_flight"]
        assert any("did not answer in time" in n for n in held.notes), held.notes
        assert held.generated_tokens_total == first.generated_tokens_total and held.age_s > 0
        server.page = _page_with(first.generated_tokens_total + 480)
        server.metrics_gate.set()
        assert node._scrapes.wait(30.0)  # the held scrape completes in the background
        late = node.sample()
        assert late.generated_tokens_total == first.generated_tokens_total + 480
        assert late.time_s > held.time_s
        node.close()


def test_node_without_scheduler_report_says_how_to_start_vllm(tmp_path):
    from pals.node.vllm_node import VllmNode

    with FakeVllmServer() as server:
        with pytest.raises(ConfigError, match="--scheduler-cls pals.integrations.vllm_scheduler.PalsScheduler"):
            VllmNode(server.url, _sim_gpus(tmp_path), tmp_path / "cap")


def test_node_rejects_a_page_without_vllm_families(tmp_path):
    from pals.node.vllm_node import VllmNode

    with FakeVllmServer(page="# TYPE up gauge\nup 1\n") as server:
        with pytest.raises(EngineUnreachable, match="lacks vllm:generation_tokens"):
            VllmNode(server.url, _sim_gpus(tmp_path), tmp_path / "cap", batch_cap_max=8)


def test_unreachable_url_for_profiling(tmp_path):
    from pals.runtime.load import LoadSpec
    from pals.runtime.profiling import VllmProfilingOptions, connect_for_profiling

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = VllmProfilingOptions(gpu_backend="simulated", sim_gpu="A100-SXM4-80GB", sim_gpus=1,
                                   cap_channel=str(tmp_path / "c"))
    with pytest.raises(EngineUnreachable, match="cannot reach"):
        connect_for_profiling(f"http://127.0.0.1:{port}", options, LoadSpec(saturate=True))


def test_loadgen_counts_open_and_closed_loop():
    from pals.loadgen import LoadGenerator
    from pals.sim.workload import LengthDistribution, PoissonWorkload

    with FakeVllmServer() as server:
        wl = PoissonWorkload(200.0, LengthDistribution.fixed(700), LengthDistribution.fixed(900), seed=1, duration_s=0.2)
        gen = LoadGenerator(server.url, wl, max_prompt_tokens=256, max_output_tokens=64).start()
        assert gen.join(timeout_s=30)
        st = gen.stats()
        assert st.sent == len(list(wl.requests())) and st.completed == st.sent and st.errors == 0
        assert st.completion_tokens_total == 64 * st.sent  # clipped to the model's limit
        assert server.completions == st.sent
        closed = LoadGenerator(server.url, concurrency=3, prompt_tokens=5, output_tokens=7, max_requests=20).start()
        assert closed.join(timeout_s=30)
        assert closed.stats().completed == 20 and closed.stats().completion_tokens_total == 140


def test_loadgen_counts_errors_from_a_dead_server():
    from pals.loadgen import LoadGenerator

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gen = LoadGenerator(f"http://127.0.0.1:{port}", concurrency=2, model="m", max_requests=4, timeout_s=2).start()
    assert gen.join(timeout_s=30)
    assert gen.stats().errors == 4 and gen.stats().completed == 0


# -- pals serve: one clear message per bad input, GPU caps never left changed ----------------


def _serve(tmp_path, capsys, fake: str | None, *extra: str, env_extra: dict | None = None, monkeypatch=None) -> tuple[int, str]:
    if fake is not None:
        monkeypatch.setenv("PYTHONPATH", str(DATA / "fake_vllm" / fake))
    for k, v in (env_extra or {}).items():
        monkeypatch.setenv(k, v)
    sim_state = tmp_path / "sim" / "driver.json"
    rc = main([
        "serve", "tiny", "--profile", str(PROFILE), "--vllm-python", sys.executable,
        "--gpu-backend", "simulated", "--sim-state", str(sim_state), "--port", "1",
        "--cap-channel", str(tmp_path / "cap"), *extra,
    ])
    err = capsys.readouterr().err
    if sim_state.exists():  # whatever happened, the (simulated) GPU limits are the defaults
        assert [g["power_limit_w"] for g in json.loads(sim_state.read_text())["gpus"]] == [400.0]
        assert not (sim_state.parent / "power-limits.json").exists()
    return rc, err


def test_serve_without_vllm(tmp_path, capsys, monkeypatch):
    rc, err = _serve(tmp_path, capsys, None, monkeypatch=monkeypatch)
    assert rc == 2 and "vLLM is not installed" in err and err.count("\n") == 1


def test_serve_with_vllm_lacking_the_scheduler_hook(tmp_path, capsys, monkeypatch):
    rc, err = _serve(tmp_path, capsys, "old", monkeypatch=monkeypatch)
    assert rc == 2 and "vLLM 0.5.0 has no --scheduler-cls hook" in err and err.count("\n") == 1


def test_serve_when_vllm_never_gets_healthy(tmp_path, capsys, monkeypatch):
    rc, err = _serve(tmp_path, capsys, "healthless", "--health-timeout-s", "3", monkeypatch=monkeypatch)
    assert rc == 2 and "did not become healthy" in err
    assert "restored" in err


def test_serve_when_vllm_exits_at_start(tmp_path, capsys, monkeypatch):
    rc, err = _serve(tmp_path, capsys, "healthless", env_extra={"FAKE_VLLM_EXIT_CODE": "3"}, monkeypatch=monkeypatch)
    assert rc == 2 and "vLLM exited with code 3 while starting" in err and "failing on purpose" in err


def test_serve_refuses_flags_it_owns(tmp_path, capsys, monkeypatch):
    rc, err = _serve(tmp_path, capsys, None, "--", "--max-num-seqs", "4", monkeypatch=monkeypatch)
    assert rc == 2 and "do not pass --max-num-seqs" in err


def test_serve_stops_on_every_terminating_signal_and_keeps_ignored_ones_ignored(default_stop_signals):
    """In-process: each of serve's stop signals sets its stop event (the handler runs in this, the
    main, thread); a signal ignored beforehand (nohup's SIGHUP) is left ignored."""
    import os
    import signal

    from pals.cli.serve import STOP_SIGNALS, install_stop_handlers

    names = {s.name for s in STOP_SIGNALS}
    assert {"SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU"} <= names
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        stop, received = threading.Event(), []
        previous = install_stop_handlers(stop, received)
        assert signal.SIGHUP not in previous and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        for sig in STOP_SIGNALS:
            if sig == signal.SIGHUP:
                continue
            stop.clear()
            os.kill(os.getpid(), sig)
            assert stop.wait(10.0), sig.name
            assert received[-1] == sig.name
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


@pytest.mark.parametrize("signame", ["SIGHUP", "SIGQUIT", "SIGUSR1"])
def test_serve_on_a_signal_while_vllm_starts_stops_vllm(tmp_path, signame, default_stop_signals):
    """`pals serve` as a process, vLLM a FAKE server that never gets healthy (tests/data/fake_vllm):
    a terminating signal stops pals serve, and its vLLM with it, with the GPU limits untouched."""
    import os
    import signal
    import subprocess

    model = f"tiny-{tmp_path.name}"  # unique: finds the fake vLLM among this host's processes
    sim_state = tmp_path / "sim" / "driver.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(DATA / "fake_vllm" / "healthless"), str(Path(__file__).parents[2] / "src")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "pals", "serve", model, "--profile", str(PROFILE), "--vllm-python", sys.executable,
         "--gpu-backend", "simulated", "--sim-state", str(sim_state), "--port", "1", "--health-timeout-s", "600",
         "--cap-channel", str(tmp_path / "chan" / "cap")],
        env=env, stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals,
    )

    def fake_vllm_pids() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        args = f.read().split(b"\0")
                except OSError:
                    continue
                if model.encode() in args and b"vllm.entrypoints.openai.api_server" in args:
                    pids.append(int(entry))
        return pids

    try:
        deadline = time.monotonic() + 120
        while not fake_vllm_pids():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the fake vLLM never started"
            time.sleep(0.1)
        os.kill(proc.pid, getattr(signal, signame))
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    assert rc == 2 and "interrupted while vLLM was starting" in err, err
    assert fake_vllm_pids() == [], "vLLM outlived pals serve"
    assert [g["power_limit_w"] for g in json.loads(sim_state.read_text())["gpus"]] == [400.0]
