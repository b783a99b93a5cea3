"""A real Prometheus scrapes a running `pals run --endpoint-port` and a `pals coordinate --metrics-port`,
and PromQL answers through its HTTP API agree with the run's decisions.jsonl and summary.json.

`prometheus` comes from Debian's `prometheus` package (`scripts/ensure_prometheus.sh`, which the test
command runs first). Without it this test fails under CI (`CI` set) and skips elsewhere.

What is compared, and why it is exact or not:

- The agent's counters at its LAST scrape (energy, GPU energy, tokens, config changes) equal the
  decision log summed over the intervals that scrape had seen (`pals_control_intervals_total` of
  the same scrape), within one interval (a scrape can land between the counter updates of one
  interval).
- summary.json's totals equal the whole decision log's, and what the last scrape had not seen
  (the run's tail after it) is at most what the node ran in two scrape intervals at the fastest
  rate Prometheus saw it run: Prometheus's final value is summary.json's minus that tail.
- `pals_config_changes_total` and summary.json's `config_changes` share one definition (the changes
  after the initial configuration, governor trims apart), so the final counter is summary.json's
  minus the unscraped tail's changes.
- Every agent series carries `node` (the `--node-name` given, the coordinator's NAME for the node)
  and `policy`; the per-GPU caps are one series per GPU, and the coordinator's view of the node
  joins the node's own on `node`, as the rules' joins need.
- The budget the agent exported is the one its log records; every budget the coordinator saw the
  node report is one the node logged; the coordinator shows the node up, its target and a budget
  within the cluster budget.

The simulated node runs faster than real time (virtual clock); its duration is chosen so the run
lasts several scrapes even on a fast machine, and every wait polls with a generous deadline.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

SCRAPE_INTERVAL_S = 1.0
MODEL, TP = "OLMoE-1B-7B", 4
RUN_DURATION_S = 3000.0
"""Simulated seconds: 6,000 intervals, about 8 s of wall time on an idle 2-core machine (the simulator
runs some 400 x faster than real time), longer when loaded: several 1 s scrapes either way."""
CLUSTER_BUDGET_W, START_BUDGET_W, TARGET_TPS = 1300.0, 1500.0, 5000.0
NODE = "node0"


def _prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        message = "prometheus not found: run scripts/ensure_prometheus.sh (Debian: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str, timeout_s: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read().decode())


def _wait_for(what: str, check, timeout_s: float, procs=()):
    """Poll `check()` until it returns something truthy; fail naming `what` (and a process that died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ValueError):
            result = None
        if result:
            return result
        for name, proc in procs:
            if proc.poll() is not None and proc.returncode != 0:
                pytest.fail(f"{name} exited with {proc.returncode} while waiting for {what}: {_tail(proc)}")
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


def _tail(proc) -> str:
    try:
        out, err = proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        return "(no output)"
    return ((out or "") + (err or ""))[-1500:]


class Prom:
    """Prometheus's HTTP API."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, promql: str):
        data = _get_json(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert data["status"] == "success", data
        return data["data"]

    def samples(self, selector: str) -> list[tuple[float, float]]:
        """Every raw (time, value) sample of ONE series over the last 10 minutes, oldest first."""
        data = self.query(f"{selector}[10m]")
        result = data["result"]
        if not result:
            return []
        assert len(result) == 1, f"{selector} selects {len(result)} series: {[r['metric'] for r in result]}"
        return [(float(t), float(v)) for t, v in result[0]["values"]]

    def ready(self) -> bool:
        with urllib.request.urlopen(f"{self.base}/-/ready", timeout=5) as response:
            return response.status == 200


def _write_config(path: Path, agent_port: int, coordinator_port: int) -> None:
    # Job names as in deploy/prometheus/prometheus.yml (the rules select them).
    path.write_text(f"""\
global:
  scrape_interval: {SCRAPE_INTERVAL_S:g}s
  scrape_timeout: {SCRAPE_INTERVAL_S:g}s
  evaluation_interval: {SCRAPE_INTERVAL_S:g}s
scrape_configs:
  - job_name: pals-agent
    static_configs:
      - targets: ["127.0.0.1:{agent_port}"]
  - job_name: pals-coordinator
    static_configs:
      - targets: ["127.0.0.1:{coordinator_port}"]
""")


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


class LogPrefix:
    """Cumulative sums of the decision log, as the agent's counters count them, after k records."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records
        self.energy_j, self.gpu_energy_j, self.tokens, self.changes = [0.0], [0.0], [0.0], [0]
        for rec in records:
            sample, dt = rec.get("sample"), float(rec["interval_s"])
            self.energy_j.append(self.energy_j[-1] + (sample["node_power_w"] * dt if sample else 0.0))
            self.gpu_energy_j.append(self.gpu_energy_j[-1] + (sample["gpu_power_w"] * dt if sample else 0.0))
            tokens = 0.0
            if sample:  # the counter's own delta when logged (exact), else the rate over the interval
                tokens = sample["generated_tokens"] if sample.get("generated_tokens") is not None \
                    else sample["throughput_tps"] * dt
            self.tokens.append(self.tokens[-1] + tokens)
            # As the summary counts them: the first record applies the initial configuration.
            first = len(self.changes) == 1
            self.changes.append(self.changes[-1] + int(not first and rec["config_changed"]
                                                       and not rec["governor_trim"]))

    def agrees(self, series: list[float], k: int, value: float) -> bool:
        """`value` equals the prefix sum after k records, or after k +/- 1 (a scrape between two updates)."""
        return any(abs(series[j] - value) <= 1e-6 * max(1.0, abs(value)) + 0.01
                   for j in (k - 1, k, k + 1) if 0 <= j < len(series))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Prometheus scraping a `pals run` node and a `pals coordinate` over it, until the run ends."""
    prometheus = _prometheus()
    tmp = tmp_path_factory.mktemp("real-prometheus")
    agent_port, coordinator_port, prom_port = _free_port(), _free_port(), _free_port()
    config = tmp / "prometheus.yml"
    _write_config(config, agent_port, coordinator_port)
    env = dict(os.environ, PALS_CACHE_DIR=str(tmp / "cache"))
    out_dir = tmp / "run"
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["prometheus"] = _spawn([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"], env)
        procs["pals run"] = _spawn([sys.executable, "-m", "pals", "run", "--node", "sim", "--model", MODEL,
                                    "--tp", str(TP), "--policy", "pals", "--saturate", "--target-tps", str(TARGET_TPS),
                                    "--budget-w", str(START_BUDGET_W), "--duration-s", str(RUN_DURATION_S),
                                    "--endpoint-port", str(agent_port), "--node-name", NODE, "--out", str(out_dir),
                                    "--quiet"], env)
        prom = Prom(prom_port)
        watched = list(procs.items())
        _wait_for("Prometheus to be ready", prom.ready, 60, watched)
        _wait_for("the node's endpoint", lambda: _get_json(f"http://127.0.0.1:{agent_port}/status", 2), 60, watched)
        procs["pals coordinate"] = _spawn([sys.executable, "-m", "pals", "coordinate", "--node",
                                           f"{NODE}=http://127.0.0.1:{agent_port}", "--cluster-budget-w",
                                           str(CLUSTER_BUDGET_W), "--target", f"{NODE}={TARGET_TPS}",
                                           "--interval-s", "0.5", "--timeout-s", "2", "--metrics-port",
                                           str(coordinator_port), "--quiet"], env)
        watched = list(procs.items())
        _wait_for("Prometheus to scrape the coordinator's rounds",
                  lambda: prom.query('pals_coordinator_rounds_total{job="pals-coordinator"} >= 1')["result"], 60,
                  watched)
        run = procs["pals run"]
        try:
            run.wait(timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail("pals run did not finish within 180 s")
        assert run.returncode == 0, _tail(run)
        # The agent is gone: wait until Prometheus has seen it down, so the last sample is final.
        _wait_for("Prometheus to see the finished agent down",
                  lambda: prom.query('up{job="pals-agent"} == 0')["result"], 30)
        _wait_for("Prometheus to see the coordinator find the node down",
                  lambda: prom.query(f'pals_coordinator_node_up{{node="{NODE}"}} == 0')["result"], 30)
        yield prom, out_dir
    finally:
        for proc in procs.values():
            _stop(proc)


@pytest.fixture(scope="module")
def scraped(stack):
    prom, out_dir = stack
    intervals = prom.samples('pals_control_intervals_total{job="pals-agent"}')
    assert len(intervals) >= 2, f"only {len(intervals)} scrapes of the agent while it ran; the run was too short"
    last_t = intervals[-1][0]
    names = ("pals_node_energy_joules_total", "pals_gpu_energy_joules_total", "pals_generated_tokens_total",
             "pals_config_changes_total")
    last = {}
    for name in names:
        series = prom.samples(f'{name}{{job="pals-agent"}}')
        assert series and series[-1][0] == last_t, f"{name} was not in the agent's last scrape"
        last[name] = series[-1][1]
    records = [json.loads(line) for line in (out_dir / "decisions.jsonl").read_text().splitlines()]
    summary = json.loads((out_dir / "summary.json").read_text())
    return prom, intervals, last, LogPrefix(records), summary


def test_counters_at_the_last_scrape_equal_the_decision_log_up_to_that_interval(scraped):
    _, intervals, last, log, _ = scraped
    k = int(intervals[-1][1])
    assert 0 < k <= len(log.records)
    assert log.agrees(log.energy_j, k, last["pals_node_energy_joules_total"])
    assert log.agrees(log.gpu_energy_j, k, last["pals_gpu_energy_joules_total"])
    assert log.agrees(log.tokens, k, last["pals_generated_tokens_total"])
    assert log.agrees(log.changes, k, last["pals_config_changes_total"])


def test_promql_agrees_with_summary_json_up_to_the_unscraped_tail(scraped):
    _, intervals, last, log, summary = scraped
    n = len(log.records)
    # summary.json is the decision log's total (so the prefix check above ties PromQL to it) ...
    assert summary["energy_j"] == pytest.approx(log.energy_j[n], rel=1e-6)
    assert summary["gpu_energy_j"] == pytest.approx(log.gpu_energy_j[n], rel=1e-6)
    assert summary["generated_tokens"] == pytest.approx(log.tokens[n], rel=1e-6)
    # ... and counts the changes after the initial configuration, as the counter does.
    assert summary["config_changes"] == log.changes[n]
    assert summary["config_changes"] > 0, "the coordinator's budget should have moved the policy"
    # What Prometheus never saw: the intervals after its last scrape. Bound: two scrape intervals at
    # the fastest rate the node ran between two scrapes (the agent died within one interval of it).
    fastest_per_s = max((v1 - v0) / (t1 - t0) for (t0, v0), (t1, v1) in zip(intervals, intervals[1:]) if t1 > t0)
    tail = n - int(intervals[-1][1])
    assert 0 <= tail <= 2 * SCRAPE_INTERVAL_S * fastest_per_s + 2, (tail, fastest_per_s)
    for name, total in (("pals_node_energy_joules_total", summary["energy_j"]),
                        ("pals_generated_tokens_total", summary["generated_tokens"])):
        unseen = total - last[name]
        per_interval = total / n
        assert -0.01 <= unseen <= (tail + 1) * per_interval * 1.5 + 0.01, (name, unseen, tail)
    unseen_changes = summary["config_changes"] - last["pals_config_changes_total"]
    assert 0 <= unseen_changes <= tail + 1, (unseen_changes, tail)


def test_the_budget_exported_is_the_one_logged_and_the_coordinator_shows_it(scraped):
    prom, intervals, _, log, _ = scraped
    k = int(intervals[-1][1])
    budget = prom.samples('pals_power_budget_watts{job="pals-agent", kind="node"}')
    assert budget and budget[-1][0] == intervals[-1][0]
    logged = [(rec.get("budget") or {}).get("budget_w") for rec in log.records]
    assert any(abs(logged[j] - budget[-1][1]) < 1e-3 for j in (k - 2, k - 1, k) if 0 <= j < len(logged))
    # The coordinator moved the node from its start budget into the cluster budget.
    assert budget[-1][1] <= CLUSTER_BUDGET_W + 1e-6 < START_BUDGET_W
    logged_set = {round(b, 3) for b in logged if b is not None}
    reported = prom.samples(f'pals_coordinator_node_reported_budget_watts{{node="{NODE}"}}')
    seen = [v for _, v in reported if not math.isnan(v)]
    assert seen, "the coordinator never saw the node report a budget"
    assert all(min(abs(v - b) for b in logged_set) < 1e-3 for v in seen), "a budget the node never logged"
    counted = prom.samples(f'pals_coordinator_node_budget_watts{{node="{NODE}"}}')
    assert counted and all(v <= CLUSTER_BUDGET_W + 1e-6 for _, v in counted)


def test_the_coordinator_shows_the_node_its_target_and_the_cluster_budget(scraped):
    prom = scraped[0]
    up = prom.samples(f'pals_coordinator_node_up{{node="{NODE}"}}')
    assert any(v == 1 for _, v in up)
    assert up[-1][1] == 0, "the run has ended: the coordinator should show the node down"
    target = prom.samples(f'pals_coordinator_node_target_tokens_per_second{{node="{NODE}"}}')
    assert target and target[-1][1] == TARGET_TPS
    cluster = prom.query('pals_coordinator_cluster_budget_watts{job="pals-coordinator"}')["result"]
    assert cluster and float(cluster[0]["value"][1]) == CLUSTER_BUDGET_W
    writes = prom.query(f'pals_coordinator_budget_writes_total{{node="{NODE}"}}')["result"]
    assert writes and float(writes[0]["value"][1]) >= 1
    # The agent's target as the node exports it is the coordinator's.
    node_target = prom.samples('pals_throughput_target_tokens_per_second{job="pals-agent"}')
    assert node_target and node_target[-1][1] == TARGET_TPS


def test_agent_series_carry_node_and_policy_and_join_the_coordinators_view(scraped):
    prom = scraped[0]
    # The agent has ended: its series are stale now, so each query looks back over the run.
    agent = prom.query('{job="pals-agent", __name__=~"pals_.*"}[10m]')["result"]
    assert agent, "no agent series"
    for series in agent:
        labels = series["metric"]
        assert (labels.get("node"), labels.get("policy")) == (NODE, "pals"), labels
    caps = prom.query('last_over_time(pals_gpu_power_cap_watts{job="pals-agent"}[10m])')["result"]
    maxima = prom.query('last_over_time(pals_gpu_power_cap_max_watts{job="pals-agent"}[10m])')["result"]
    gpus = [str(i) for i in range(TP)]
    assert sorted(s["metric"]["gpu"] for s in caps) == gpus and sorted(s["metric"]["gpu"] for s in maxima) == gpus
    assert all(float(c["value"][1]) <= float(m["value"][1]) for c, m in zip(
        sorted(caps, key=lambda s: s["metric"]["gpu"]), sorted(maxima, key=lambda s: s["metric"]["gpu"])))
    # The coordinator's counted budget and the node's own exported budget meet on `node` (last 10 min).
    joined = prom.query('last_over_time(pals_coordinator_node_budget_watts[10m]) '
                        'and on(node) last_over_time(pals_power_budget_watts{kind="node"}[10m])')
    assert [s["metric"].get("node") for s in joined["result"]] == [NODE]
    for name in ("pals_batch_cap_max", "pals_requests_running", "pals_telemetry_age_seconds",
                 "pals_last_sample_timestamp_seconds"):
        assert prom.samples(f'{name}{{job="pals-agent"}}'), name
    stamps = prom.samples('pals_last_sample_timestamp_seconds{job="pals-agent"}')
    # Unix time of the agent's last sample (the wall clock, not the simulator's virtual one): close
    # to Prometheus's own scrape times (NaN only if a scrape came before the first interval).
    stamped = [(t, v) for t, v in stamps if not math.isnan(v)]
    assert stamped and all(abs(v - t) <= 60.0 for t, v in stamped), stamped[-3:]
