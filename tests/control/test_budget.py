import json

import pytest

from pals.control.budget import BudgetSchedule, BudgetStep, PowerBudget, ThroughputTarget
from pals.errors import ConfigError


def test_budget_and_target_validate_their_fields():
    assert PowerBudget(1500, "gpu").kind == "gpu"
    for bad in (0, -5, float("nan"), float("inf"), "1500", True):
        with pytest.raises(ConfigError, match="budget_w"):
            PowerBudget(bad)
    with pytest.raises(ConfigError, match="'node' or 'gpu'"):
        PowerBudget(1500, "rack")
    with pytest.raises(ConfigError, match="target_tps"):
        ThroughputTarget(-1)


def test_schedule_steps_in_time(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("time_s,budget_w\n0,1500\n60,1100\n120,1300\n")
    schedule = BudgetSchedule.load(path, kind="gpu")
    assert schedule.budget_at(0).budget_w == 1500
    assert schedule.budget_at(59.9).budget_w == 1500
    assert schedule.budget_at(60).budget_w == 1100
    assert schedule.budget_at(1e6) == PowerBudget(1300, "gpu")


def test_schedule_json_both_shapes(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"time_s": 0, "budget_w": 900}, {"time_s": 5, "budget_w": 800}]))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"kind": "gpu", "steps": [{"time_s": 10, "budget_w": 700}]}))
    assert BudgetSchedule.load(a).budget_at(6).budget_w == 800
    loaded = BudgetSchedule.load(b)
    assert loaded.kind == "gpu" and loaded.budget_at(5) is None


@pytest.mark.parametrize(
    "text, match",
    [
        ("time_s,budget_w\n10,1500\n5,1100\n", "sort the rows"),
        ("time_s,budget_w\n0,1500\n0,1100\n", "sort the rows"),
        ("time_s,budget_w\n-1,1500\n", "negative"),
        ("time_s,budget_w\n0,-3\n", "must be positive"),
        ("time_s,budget_w\n0,abc\n", "cannot read"),
        ("when,watts\n0,1\n", "header must be time_s,budget_w"),
        ("time_s,budget_w\n", "empty"),
    ],
)
def test_bad_schedule_is_one_clear_line(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        BudgetSchedule.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_schedule_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        BudgetSchedule.load(tmp_path / "nope.csv")


def test_schedule_object_rejects_unsorted_steps():
    with pytest.raises(ConfigError, match="sort"):
        BudgetSchedule((BudgetStep(5, 100), BudgetStep(1, 100)))
