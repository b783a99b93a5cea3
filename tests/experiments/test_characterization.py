"""The characterization report: quick run end to end, the physics it must show, the figure arithmetic."""

from __future__ import annotations

import math
import re

import pytest

from pals.cli import main
from pals.errors import ConfigError
from pals.experiments.characterization import (
    CharacterizationSettings,
    Point,
    Sweep,
    characterize,
    comparison_rows,
    write_report,
)
from pals.model.profile import read_profile
from pals.sim.step import Mechanisms

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("characterization")
    result = characterize(out_dir=out, quick=True, seed=0, progress=False)
    return result, write_report(result, out)


def test_quick_run_writes_the_report_and_its_figures(quick):
    result, report = quick
    text = report.read_text()
    assert "| paper says | ours (saturation) | ours (fixed load) | agrees? | mechanism that decides it |" in text
    for switch in Mechanisms.__dataclass_fields__:
        assert f"`{switch}`" in text  # the switches in force are listed
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) >= 4
    for rel in images:
        assert (report.parent / rel).read_bytes()[:8] == PNG
    # the measurements went through the profiler: one profile per model and load, every point in it
    for mr in result.models.values():
        for sweep in (mr.saturation, mr.fixed):
            profile = read_profile(sweep.profile_path)
            assert profile.points() == {(p.power_cap_w, p.batch_cap) for p in sweep.points}
    assert read_profile(result.models["OLMoE-1B-7B"].fixed.profile_path).workload.arrival_rate_rps == pytest.approx(
        result.models["OLMoE-1B-7B"].fixed_rate_rps
    )


def test_tokens_per_joule_rises_with_batch_at_saturation(quick):
    result, _ = quick
    for mr in result.models.values():
        sat = mr.saturation
        for cap in sat.caps_w:
            tpj = [sat.get(cap, b).tokens_per_joule for b in sat.batches]
            assert all(a < b for a, b in zip(tpj, tpj[1:])), (mr.model, cap, tpj)


def test_fixed_load_batch_ratio_is_far_below_the_saturating_one(quick):
    result, _ = quick
    for mr in result.models.values():
        top = mr.saturation.batches[-1]
        sat_ratio, fixed_ratio = mr.saturation.ratio(top, 1), mr.fixed.ratio(top, 1)
        assert fixed_ratio > 1.0
        assert fixed_ratio < 0.25 * sat_ratio
        # batch 1 is overloaded by a load of twice its capacity: it serves about its saturating throughput
        cap = mr.saturation.caps_w[-1]
        assert mr.fixed.get(cap, 1).throughput_tps == pytest.approx(mr.saturation.get(cap, 1).throughput_tps, rel=0.1)
        # the largest batch has capacity to spare: it serves the offered load, far below its saturating throughput
        assert mr.fixed.get(cap, top).throughput_tps < 0.5 * mr.saturation.get(cap, top).throughput_tps


def test_unmeasured_paper_rows_say_so(quick):
    result, _ = quick
    rows = comparison_rows(result)
    assert all(len(row) == 5 for row in rows)
    mixtral = [row for row in rows if row[0].startswith("Fig 1a, Mixtral")]
    assert mixtral and mixtral[0][1] == "not measured"


def _sweep(values: dict[tuple[float, int], float]) -> Sweep:
    points = [Point(c, b, 100.0 * v, 200.0, 1000.0, v, 2 * v) for (c, b), v in values.items()]
    return Sweep("m", 4, "saturation", None, points)


def test_figure_arithmetic():
    sweep = _sweep({(200.0, 1): 0.5, (200.0, 64): 4.0, (300.0, 1): 0.5, (300.0, 64): 4.4,
                    (400.0, 1): 0.45, (400.0, 64): 4.0})
    assert sweep.best_cap_w() == 300.0
    assert sweep.loss_at_max_cap() == pytest.approx(1 - 4.0 / 4.4)
    assert sweep.ratio(64, 1) == pytest.approx(4.0 / 0.45)
    assert sweep.ratio(64, 1, cap_w=200.0) == pytest.approx(8.0)
    assert sweep.frontier_ratio() == pytest.approx(4.4 / 4.0)  # joint peak over batch-only at 400 W
    assert sweep.frontier_ratio(300.0) == pytest.approx(1.0)
    assert math.isnan(sweep.ratio(64, 32))


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="batch_caps"):
        CharacterizationSettings(batch_caps=(8, 64))
    with pytest.raises(ConfigError, match="fixed_window_max_s"):
        CharacterizationSettings(fixed_window_min_s=100.0, fixed_window_max_s=10.0)
    with pytest.raises(ConfigError, match="outside"):
        characterize(out_dir="unused", settings=CharacterizationSettings(power_caps_w=(50.0, 400.0)), progress=False)


def test_sweep_report_flag_writes_the_characterization(tmp_path, capsys):
    out = tmp_path / "sweep.csv"
    assert main(["sweep", "--model", "GPT-2", "--caps", "400", "--batches", "1,4", "--warmup-s", "1",
                 "--window-s", "2", "--no-progress", "--no-plots", "--report", "--report-quick",
                 "--out", str(out)]) == 0
    report = tmp_path / "sweep_characterization" / "characterization.md"
    assert "Fig 1b" in report.read_text()
    assert str(report) in capsys.readouterr().err


def test_report_quick_without_report_is_one_clear_line(tmp_path, capsys):
    assert main(["sweep", "--model", "GPT-2", "--report-quick", "--out", str(tmp_path / "s.csv")]) == 2
    assert "--report" in capsys.readouterr().err.strip()


# -- words from numbers ---------------------------------------------------------------------------------


def test_frontier_words_follow_the_peaks():
    from pals.experiments.characterization.compare import best_cap_margin, frontier_words

    shared = _sweep({(200.0, 1): 0.5, (200.0, 64): 4.4, (400.0, 1): 0.45, (400.0, 64): 4.0})
    assert "share batch 64" in frontier_words(shared, "saturation")
    assert "9.1%" in frontier_words(shared, "saturation")  # 1 - 4.0 / 4.4
    apart = _sweep({(200.0, 8): 5.0, (200.0, 64): 4.4, (400.0, 8): 3.0, (400.0, 64): 4.0})
    words = frontier_words(apart, "saturation")
    assert "joint peak is at batch 8" in words and "at batch 64" in words and "share" not in words
    assert best_cap_margin(shared) == pytest.approx(4.4 / 4.0 - 1)


def test_report_words_are_the_measured_numbers(quick):
    from pals.experiments.characterization.compare import fixed_load_split

    result, report = quick
    text = report.read_text()
    served, power = fixed_load_split(result.models["OLMoE-1B-7B"])
    assert f"serves {served:.2f}x batch 1's tokens" in text and f"at {1 / power:.2f}x its node power" in text
    assert "Ours cannot" not in text and "~1 %" not in text  # the old hand-written claims are gone
    gauge = re.search(r"differs from the energy-counter figure by up to ([\d.]+)%, (as large as|smaller than)", text)
    margin = re.search(r"runner-up \(([\d.]+)%\)", text)
    assert gauge and margin
    assert (gauge.group(2) == "as large as") == (float(gauge.group(1)) >= float(margin.group(1)))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """The quick `characterize` experiment (5 seeds of the saturating grids, about a minute)."""
    from pals.experiments import run_experiment

    out = tmp_path_factory.mktemp("characterize")
    return out, run_experiment("characterize", out, quick=True, seed=0)


@pytest.mark.slow
def test_experiment_verdicts_are_the_rules_on_the_reported_intervals(experiment):
    from pals.experiments.characterization import PAPER_FRONTIER_RATIO, PAPER_TP_FRONTIER_GAIN
    from pals.experiments.stats import Estimate
    from pals.experiments.verdict import ratio_verdict

    out, summary = experiment
    assert summary["metrics"]["seeds"] == 5 and summary["all_checks_passed"]
    verdicts = {c["quantity"]: c["verdict"] for c in summary["comparisons"]}
    for model, fig3 in summary["metrics"]["fig3"].items():
        joint = Estimate(**fig3["joint_over_batch_only"])
        assert verdicts[f"{model}: joint / batch-only peak tokens/J"] == str(
            ratio_verdict(joint, PAPER_FRONTIER_RATIO[model]))
        gain = Estimate(**fig3["joint_tp_over_joint"])
        assert verdicts[f"{model}: joint + TP / joint peak tokens/J"] == str(
            ratio_verdict(gain, PAPER_TP_FRONTIER_GAIN.get(model)))
        # the why paragraph quotes the same interval and the rule's label
        why = (out / "report.md").read_text().split("**Why it differs.**")[1]
        assert f"{model} {joint.describe('{:.3f}', 'x')} ({ratio_verdict(joint, PAPER_FRONTIER_RATIO[model]).label}" in why
