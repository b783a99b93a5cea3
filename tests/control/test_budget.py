import json

import pytest

from pals.control.budget import BudgetSchedule, BudgetStep, PowerBudget, ThroughputTarget
from pals.errors import ConfigError


BAD_NUMBERS = [0, -5, 0.5, 1e-300, 1e20, 1e308, 10**400, float("nan"), float("inf"), -float("inf"), "1500", True,
               None, [1500]]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=lambda v: repr(v)[:20])
def test_budget_refuses_values_outside_1_w_to_10_mw(bad):
    with pytest.raises(ConfigError) as info:
        PowerBudget(bad)
    message = str(info.value)
    assert message.startswith("budget_w must be a") and "\n" not in message
    if isinstance(bad, (int, float)) and not isinstance(bad, bool):
        assert "from 1 to 10,000,000 W" in message


@pytest.mark.parametrize("bad", BAD_NUMBERS[:1] + BAD_NUMBERS[3:], ids=lambda v: repr(v)[:20])
def test_target_refuses_values_outside_its_range(bad):
    with pytest.raises(ConfigError) as info:
        ThroughputTarget(bad)
    assert str(info.value).startswith("target_tps must be a")


def test_budget_and_target_accept_the_edges_of_their_ranges():
    assert PowerBudget(1500, "gpu").kind == "gpu"
    assert PowerBudget(1).budget_w == 1 and PowerBudget(1e7).budget_w == 1e7
    assert ThroughputTarget(0.01).target_tps == 0.01 and ThroughputTarget(1e7).target_tps == 1e7
    for kind in ("rack", None, 5):
        with pytest.raises(ConfigError, match="'node' or 'gpu'"):
            PowerBudget(1500, kind)


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
        ("time_s,budget_w\n-1,1500\n", "row 1: time_s must be a finite number from 0 to 1,000,000,000 s"),
        ("time_s,budget_w\n0,-3\n", "row 1: budget_w must be a finite positive number from 1 to 10,000,000 W, got -3.0"),
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


@pytest.mark.parametrize(
    "body, match",
    [
        ('{"budget_w": true}', "expected a list"),
        ('[{"time_s": 0, "budget_w": true}]', "row 1: budget_w must be a number W, got True"),
        ('[{"time_s": false, "budget_w": 900}]', "row 1: time_s must be a number s, got False"),
        ('[{"time_s": 0, "budget_w": "900"}]', "row 1: budget_w must be a number W, got '900'"),
        ('[{"time_s": 0, "budget_w": 1e400}]', "budget_w must be a finite positive number from 1 to 10,000,000 W, got inf"),
        ('[{"time_s": 0, "budget_w": 1e20}]', "budget_w must be a finite positive number from 1 to 10,000,000 W, got 1e+20"),
        ('[{"time_s": 0, "budget_w": 1e-300}]', "budget_w must be a finite positive number from 1 to 10,000,000 W"),
        ('[{"time_s": 0, "budget_w": NaN}]', "not valid JSON (NaN is not a JSON number)"),
        ('[{"time_s": 0, "budget_w": Infinity}]', "not valid JSON (Infinity is not a JSON number)"),
        ('[{"time_s": 0, "budget_w": 1' + "0" * 5000 + '}]', "not valid JSON (Exceeds the limit"),
        ('[{"time_s": 1e12, "budget_w": 900}]', "time_s must be a finite number from 0 to 1,000,000,000 s"),
        ('[{"time_s": 0}]', "row 1: expected an object with time_s and budget_w"),
        ('[5]', "row 1: expected an object with time_s and budget_w, got 5"),
        ('{"kind": "rack", "steps": [{"time_s": 0, "budget_w": 900}]}', "kind must be 'node' or 'gpu', got 'rack'"),
        ('{"kind": ["gpu"], "steps": [{"time_s": 0, "budget_w": 900}]}', "kind must be 'node' or 'gpu'"),
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 64 levels"),
        ("[]", "empty"),
        ('{"steps": "lots"}', "expected a list"),
    ],
    ids=lambda v: v[:40],
)
def test_bad_json_schedule_is_one_clear_line(tmp_path, body, match):
    path = tmp_path / "bad.json"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        BudgetSchedule.load(path)
    message = str(info.value)
    assert match in message and str(path) in message and "\n" not in message and len(message) < 300


@pytest.mark.parametrize("suffix", [".csv", ".json", ".txt"])
def test_binary_garbage_schedule_is_refused(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ConfigError, match="not UTF-8 text") as info:
        BudgetSchedule.load(path)
    assert str(path) in str(info.value)
    path.write_bytes(b"time_s,budget_w\n0,9\x0000\n")
    with pytest.raises(ConfigError, match="NUL bytes"):
        BudgetSchedule.load(path)


@pytest.mark.parametrize(
    "cell, match",
    [
        ("inf", "budget_w must be a finite positive number from 1 to 10,000,000 W, got inf"),
        ("nan", "budget_w must be a finite positive number"),
        ("1e400", "got inf"),
        ("0", "got 0.0"),
        ("0.5", "got 0.5"),
        ("1e308", "got 1e+308"),
        ("true", "cannot read budget_w 'true' as a number"),
        ("", "cannot read budget_w '' as a number"),
    ],
)
def test_bad_csv_budget_cell_names_row_field_and_range(tmp_path, cell, match):
    path = tmp_path / "bad.csv"
    path.write_text(f"time_s,budget_w\n0,900\n10,{cell}\n")
    with pytest.raises(ConfigError, match="row 2") as info:
        BudgetSchedule.load(path)
    assert match in str(info.value)


def test_schedule_steps_validate_when_built_in_code():
    with pytest.raises(ConfigError, match="budget_w must be a number W, got True"):
        BudgetStep(0, True)
    with pytest.raises(ConfigError, match="time_s must be a finite number"):
        BudgetStep(float("nan"), 900)
    with pytest.raises(ConfigError, match="expected a BudgetStep"):
        BudgetSchedule(((0, 900),))
