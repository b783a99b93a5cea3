"""The profile file: round trip, validation on read (one clear line each), atomic writes."""

from __future__ import annotations

import json
import math
import os

import pytest

from pals.errors import ProfileError
from pals.model.profile import COLUMNS, read_profile, write_profile


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_round_trip_keeps_every_value(sim_profile, tmp_path):
    out = tmp_path / "copy.csv"
    write_profile(out, sim_profile.metadata, sim_profile.rows)
    again = read_profile(out)
    assert len(again) == len(sim_profile) == 36
    for a, b in zip(sim_profile.rows, again.rows):
        for name in COLUMNS:
            if isinstance(a[name], float) and math.isnan(a[name]):
                assert math.isnan(b[name])
            else:
                assert a[name] == b[name]
    assert again.content_hash() == sim_profile.content_hash()
    assert again.workload.arrival_rate_rps is None  # saturating survives as an empty cell
    assert again.metadata["schema"] == 1 and again.model == "OLMoE-1B-7B"


def test_hash_changes_with_a_value(sim_profile):
    rows = [dict(r) for r in sim_profile.rows]
    rows[3]["throughput_tps"] += 1.0
    changed = type(sim_profile)(metadata=sim_profile.metadata, rows=rows)
    assert changed.content_hash() != sim_profile.content_hash()


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda text: "", "is empty"),
        (lambda text: text[: len(text) // 2], "truncated"),
        (lambda text: "\x00\x01garbage\n" + text, "not a PALS profile"),
        (lambda text: text.replace("# pals-profile v1 ", "# pals-profile v9 ", 1), "schema v9"),
        (lambda text: text.replace('"model": ', '"model" ', 1), "corrupt metadata"),
        (lambda text: text.replace(",throughput_tps,", ",tput,", 1), "lacks column(s) throughput_tps"),
        (lambda text: _replace_cell(text, 2, "gpu_power_w", "abc"), "'abc', not a number"),
        (lambda text: _replace_cell(text, 4, "power_cap_w", ""), "power_cap_w is empty"),
        (lambda text: "\n".join(text.splitlines()[:2]) + "\n", "no measured rows"),
        (lambda text: _drop_field(text, 5), "fields, expected"),
    ],
)
def test_bad_files_raise_one_clear_line(sim_profile, tmp_path, mutate, needle):
    good = tmp_path / "good.csv"
    write_profile(good, sim_profile.metadata, sim_profile.rows)
    bad = tmp_path / "bad.csv"
    bad.write_text(mutate(good.read_text()))
    with pytest.raises(ProfileError) as error:
        read_profile(bad)
    message = _one_line(error)
    assert needle in message
    assert str(bad) in message


def test_binary_file_is_refused(tmp_path):
    bad = tmp_path / "bin.csv"
    bad.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ProfileError) as error:
        read_profile(bad)
    assert str(bad) in _one_line(error)


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(ProfileError) as error:
        read_profile(tmp_path / "nope.csv")
    assert "pals profile" in _one_line(error)


def test_profile_of_another_model_is_refused(sim_profile, tmp_path):
    out = tmp_path / "p.csv"
    write_profile(out, sim_profile.metadata, sim_profile.rows)
    with pytest.raises(ProfileError) as error:
        read_profile(out, expect_model="Mixtral-8x7B")
    message = _one_line(error)
    assert "'OLMoE-1B-7B', not 'Mixtral-8x7B'" in message
    assert read_profile(out, expect_model="OLMoE-1B-7B").model == "OLMoE-1B-7B"


def test_rows_of_a_foreign_model_are_refused(sim_profile, tmp_path):
    rows = [dict(r) for r in sim_profile.rows]
    rows[7]["model"] = "other"
    out = tmp_path / "mixed.csv"
    write_profile(out, sim_profile.metadata, rows)
    with pytest.raises(ProfileError, match="mixes models"):
        read_profile(out)


def test_failed_write_leaves_the_old_file_intact(sim_profile, tmp_path):
    out = tmp_path / "p.csv"
    write_profile(out, sim_profile.metadata, sim_profile.rows[:5])
    before = out.read_bytes()
    rows = [dict(r) for r in sim_profile.rows]
    rows[-1]["throughput_tps"] = float("nan")
    with pytest.raises(ProfileError, match="no finite throughput_tps"):
        write_profile(out, sim_profile.metadata, rows)
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["p.csv"]  # no temporary left behind


def test_metadata_line_is_json(sim_profile, tmp_path):
    out = tmp_path / "p.csv"
    write_profile(out, sim_profile.metadata, sim_profile.rows)
    first = out.read_text().splitlines()[0]
    assert first.startswith("# pals-profile v1 ")
    meta = json.loads(first.split(" ", 3)[3])
    assert {"model", "gpu", "num_gpus", "tp", "ep", "node", "workload", "created", "pals_version"} <= set(meta)


def _replace_cell(text: str, line: int, column: str, value: str) -> str:
    lines = text.splitlines()
    header = lines[1].split(",")
    cells = lines[line].split(",")
    cells[header.index(column)] = value
    lines[line] = ",".join(cells)
    return "\n".join(lines) + "\n"


def _drop_field(text: str, line: int) -> str:
    lines = text.splitlines()
    lines[line] = ",".join(lines[line].split(",")[:-3])
    return "\n".join(lines) + "\n"


# -- numbers out of their plausible range: refused on read, one line naming the column and the range --

BAD_CELLS = [
    ("power_cap_w", "-150.0", "power_cap_w must be a finite positive number from 1 to 10,000 W per GPU"),
    ("power_cap_w", "0", "power_cap_w must be a finite positive number from 1"),
    ("power_cap_w", "1e20", "got 1e+20"),
    ("power_cap_w", "inf", "not finite"),
    ("power_cap_w", "nan", "not finite"),
    ("power_cap_w", "1e400", "not finite"),
    ("batch_cap", "0", "batch_cap must be a whole number from 1 to 1,048,576 requests"),
    ("batch_cap", "8.5", "batch_cap must be a whole number"),
    ("batch_cap", "-8", "batch_cap must be a whole number"),
    ("batch_cap", "1e12", "batch_cap must be a whole number"),
    ("tp", "0", "tp must be a whole number from 1 to 4,096"),
    ("throughput_tps", "-1", "throughput_tps must be a finite number from 0"),
    ("gpu_power_total_w", "1e308", "gpu_power_total_w must be a finite number from 0 to 10,000,000 W"),
    ("window_s", "0", "window_s must be a finite positive number"),
    ("mean_prompt_tokens", "inf", "mean_prompt_tokens must be a finite number from 0 to 100,000,000 tokens"),
    ("mean_output_tokens", "-5", "mean_output_tokens must be a finite number"),
    ("arrival_rate_rps", "-inf", "arrival_rate_rps must be a finite number"),
    ("node_power_w", "-1", "node_power_w must be a finite number"),
    ("ttft_p99_s", "1e300", "ttft_p99_s must be a finite number"),
    ("tokens_per_joule", "1,5", "fields, expected"),
]


@pytest.mark.parametrize("column, raw, needle", BAD_CELLS)
def test_cells_out_of_range_are_refused(sim_profile, tmp_path, column, raw, needle):
    good = tmp_path / "good.csv"
    write_profile(good, sim_profile.metadata, sim_profile.rows)
    bad = tmp_path / "bad.csv"
    bad.write_text(_replace_cell(good.read_text(), 5, column, raw))
    with pytest.raises(ProfileError) as error:
        read_profile(bad)
    message = _one_line(error)
    assert needle in message and str(bad) in message
    assert "line 6" in message or "fields, expected" in message


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("tp", "four", "metadata tp must be a whole number from 1 to 4,096, got 'four'"),
        ("tp", 0, "metadata tp must be a whole number"),
        ("tp", -1, "metadata tp must be a whole number"),
        ("tp", 2.5, "metadata tp must be a whole number"),
        ("tp", True, "metadata tp must be a whole number"),
        ("num_gpus", 10**400, "metadata num_gpus must be a whole number from 1 to 4,096 GPUs, got 1000000"),
        ("ep", None, "metadata ep must be a whole number"),
        ("model", "", "metadata model must be a non-empty name"),
        ("gpu", 7, "metadata gpu must be a non-empty name"),
        ("workload", "saturating", "workload must be an object or null"),
        ("workload", {"mean_prompt_tokens": True, "mean_output_tokens": 5}, "mean_prompt_tokens must be a number"),
        ("workload", {"mean_prompt_tokens": -3, "mean_output_tokens": 5}, "mean_prompt_tokens must be a positive"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 20 else None,
)
def test_metadata_out_of_range_is_refused(sim_profile, tmp_path, key, value, needle):
    good = tmp_path / "good.csv"
    write_profile(good, sim_profile.metadata, sim_profile.rows)
    first, rest = good.read_text().split("\n", 1)
    meta = json.loads(first.split(" ", 3)[3])
    meta[key] = value
    bad = tmp_path / "bad.csv"
    bad.write_text(f"# pals-profile v1 {json.dumps(meta)}\n{rest}")
    with pytest.raises(ProfileError) as error:
        read_profile(bad)
    message = _one_line(error)
    assert needle in message and str(bad) in message and "pals profile" in message


def test_metadata_nested_deep_is_one_line(sim_profile, tmp_path):
    good = tmp_path / "good.csv"
    write_profile(good, sim_profile.metadata, sim_profile.rows)
    rest = good.read_text().split("\n", 1)[1]
    bad = tmp_path / "bad.csv"
    bad.write_text("# pals-profile v1 " + "[" * 100_000 + "]" * 100_000 + "\n" + rest)
    with pytest.raises(ProfileError) as error:
        read_profile(bad)
    assert str(bad) in _one_line(error)


def test_shipped_profile_still_reads(sim_profile):
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "data" / "profile-tiny-mixtral-cpu-simgpu.csv"
    assert len(read_profile(shipped)) == 8
