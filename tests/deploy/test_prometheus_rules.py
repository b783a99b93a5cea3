"""The Prometheus rules (`deploy/prometheus/`) pass `promtool check` and their unit tests.

`promtool` comes from Debian's `prometheus` package (`scripts/ensure_prometheus.sh`, which the
test command runs first). Without it these tests fail under CI (`CI` set) and skip elsewhere.
The mutation tests show the unit tests have teeth: a rule changed in a plausible wrong way makes
`promtool test rules` fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "pals-rules.yml"
RULE_TESTS = DEPLOY / "pals-rules.test.yml"
CONFIG = DEPLOY / "prometheus.yml"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found: run scripts/ensure_prometheus.sh (Debian: apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess:
    return subprocess.run([_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_pass_promtool_check():
    result = _run("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_example_scrape_config_is_valid():
    result = _run("check", "config", CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass():
    result = _run("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test():
    import yaml

    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    by_alert: dict[str, list[list]] = {}
    for case in tests:
        for check in case.get("alert_rule_test", []):
            by_alert.setdefault(check["alertname"], []).append(check.get("exp_alerts") or [])
    missing = sorted(alerts - set(by_alert))
    assert not missing, f"alerts without a promtool test: {missing}"
    # Each alert is seen firing at least once; each alert with a `for:` is also seen not firing.
    never_fires = sorted(a for a in alerts if not any(by_alert[a]))
    assert not never_fires, f"alerts never expected to fire in pals-rules.test.yml: {never_fires}"
    pending = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r and "for" in r}
    never_quiet = sorted(a for a in pending if all(by_alert[a]))
    assert not never_quiet, f"alerts never expected to stay quiet: {never_quiet}"


@pytest.mark.parametrize(
    "old, new",
    [
        # A shorter sustain period: a burst of a few minutes would page.
        ("> 0.02\n        for: 10m", "> 0.02\n        for: 5m"),
        # A GPU budget judged against node power.
        ('(avg_over_time(pals_gpu_power_watts[5m]) and ignoring(kind) (pals_power_budget_watts{kind="gpu"}',
         '(avg_over_time(pals_node_power_watts[5m]) and ignoring(kind) (pals_power_budget_watts{kind="gpu"}'),
        # "Left capped" without the controller-down condition: fires for a controlled node too.
        ('and on(job, instance) (up{job="pals-agent"} == 0)\n        for: 5m', "\n        for: 5m"),
        # Tokens per joule "by policy" that averages the nodes' ratios instead of pooling their tokens and joules.
        ("sum by (policy) (rate(pals_generated_tokens_total[5m])) / sum by (policy) (rate(pals_node_energy_joules_total[5m]))",
         "avg by (policy) (rate(pals_generated_tokens_total[5m]) / rate(pals_node_energy_joules_total[5m]))"),
        # Stale telemetry that only looks at the engine's data age misses a loop that stopped.
        ("pals_telemetry_age_seconds > 5 or (time() - pals_last_sample_timestamp_seconds) > 30",
         "pals_telemetry_age_seconds > 5"),
    ],
)
def test_rule_unit_tests_catch_a_broken_rule(tmp_path, old, new):
    text = RULES.read_text()
    assert old in text, "the mutation no longer matches pals-rules.yml; update the test"
    (tmp_path / RULES.name).write_text(text.replace(old, new, 1))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = _run("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0, "promtool's unit tests still pass with a broken rule"
