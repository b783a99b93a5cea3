"""`pals demo` tells its story from the numbers: baseline, PALS and the best static configuration under a
TPOT SLO and a budget step; one caption computed from the summaries; the summary of what ran on Ctrl-C."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal

import pytest

from pals.cli import main
from pals.cli import demo
from pals.cli.demo_story import (
    MET_PCT,
    TIE_FRAC,
    StaticChoice,
    caption,
    choose_static,
    format_table,
    verdicts,
)
from pals.control.slo import Slo
from pals.control.types import Configuration
from pals.core.paper import CONTROL_INTERVAL_S
from pals.runtime.hindsight import HindsightResult, HindsightRow, MeetCriteria

QUICK_S = 40.0
"""Simulated seconds per run of the quick demo (the budget steps at a third and two thirds of it)."""
SETTLE_INTERVALS = 2
"""Intervals after the budget step before the node's power must be under it (the step is applied at the
next decision; the interval in progress still draws the old power)."""
REQUIRED = ("tokens_per_joule", "qos_violation_pct", "slo_violation_pct", "tpot_p99_ms", "budget_overshoot_pct",
            "mean_power_w", "throughput_tps", "config_changes")


@pytest.fixture(scope="module")
def quick_demo(pals_cache, tmp_path_factory):
    import matplotlib.figure

    from pals.model.plot_rules import figure_problems

    out = tmp_path_factory.mktemp("demo")
    stdout = io.StringIO()
    real = matplotlib.figure.Figure.savefig

    def savefig(self, fname, *args, **kwargs):  # every figure the demo saves, through the plot rules
        FIGURES.append((str(fname), figure_problems(self)))
        return real(self, fname, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout):
        mp.setattr(matplotlib.figure.Figure, "savefig", savefig)
        rc = main(["demo", "--duration-s", str(QUICK_S), "--out", str(out)])
    assert rc == 0
    return out, json.loads((out / "summary.json").read_text()), stdout.getvalue()


FIGURES: list[tuple[str, list[str]]] = []
"""(path, plot-rule problems) of each figure the quick demo saved."""


def test_the_demo_figure_keeps_the_plot_rules(quick_demo):
    out, _, _ = quick_demo
    assert FIGURES == [(str(out / "demo.png"), [])]


def _records(out, name):
    return [json.loads(line) for line in (out / f"decisions-{name}.jsonl").read_text().splitlines()]


def test_quick_demo_runs_the_three_policies_and_prints_the_table_and_caption(quick_demo):
    out, summary, stdout = quick_demo
    assert set(summary["policies"]) == {"baseline", "pals", "static"}
    for entry in summary["policies"].values():
        for key in REQUIRED:
            assert key in entry, key
    static = summary["static_sweep"]
    assert static["configurations"] == len(demo._static_grid(demo._scenario(_Args())[0]))
    best = static["best"]
    label = summary["labels"]["static"]
    assert label == f"static {best['power_cap_w']:g} W/{best['batch_cap']}" and label in stdout
    assert (out / "static-sweep.csv").read_text().count("\n") == static["configurations"] + 1
    assert "tok/J node" in stdout and "x baseline" in stdout and "TPOT p99 ms" in stdout
    assert summary["caption"] in stdout.splitlines()
    assert (out / "demo.png").stat().st_size > 10_000
    assert summary["scenario"]["slo"] == demo.DEMO_SLO.to_json() and summary["interrupted"] is False


def test_the_caption_and_verdicts_are_those_of_the_numbers(quick_demo):
    _, summary, _ = quick_demo
    policies = summary["policies"]
    assert verdicts(policies).as_dict() == summary["verdicts"]
    v = summary["verdicts"]
    assert v["pals_over_baseline"] == pytest.approx(policies["pals"]["tokens_per_joule"]
                                                    / policies["baseline"]["tokens_per_joule"])
    assert summary["caption"].startswith(f"PALS: {v['pals_over_baseline']:.2f}x baseline tokens/J")
    assert f"({v['pals_over_static']:.2f}x)" in summary["caption"]
    assert v["pals_under_budget"] == (policies["pals"]["budget_overshoot_pct"] <= MET_PCT)


def test_pals_keeps_under_the_budget_step(quick_demo):
    out, _, _ = quick_demo
    high, low = demo.DEMO_BUDGETS_W
    down_s, up_s = (QUICK_S * f for f in demo.DEMO_STEP_FRACS)
    records = [r for r in _records(out, "pals") if r.get("sample")]
    assert {r["budget"]["budget_w"] for r in records if r["t_s"] <= down_s} == {high}
    inside = [r for r in records if r["budget"]["budget_w"] == low]
    assert inside and all(down_s <= r["t_s"] <= up_s + 1.0 for r in inside)
    settled = inside[SETTLE_INTERVALS:]
    tolerance = 1.02  # the summary's overshoot tolerance on the node budget
    assert settled and max(r["sample"]["node_power_w"] for r in settled) <= low * tolerance
    # The step binds: the baseline drew more than the lower budget before it.
    before = [r["sample"]["node_power_w"] for r in _records(out, "baseline") if r.get("sample") and r["t_s"] < down_s]
    assert max(before) > low


class _Args:
    physics = None
    seed = 0
    duration_s = QUICK_S


def _summary(tpj, slo_pct=0.0, qos_pct=0.0, over_pct=0.0):
    return {"tokens_per_joule": tpj, "slo_violation_pct": slo_pct, "qos_violation_pct": qos_pct,
            "budget_overshoot_pct": over_pct, "tpot_p99_ms": 40.0, "throughput_tps": 1000.0, "mean_power_w": 1000.0,
            "config_changes": 3}


SLO = Slo(tpot_ms=55.0)
ROW = HindsightRow(250.0, 32, 1.0, 1.2, 1000.0, 0.0, 0.0, 0.0, True, "")


def test_caption_words_are_chosen_by_the_values():
    static = StaticChoice(ROW, "PALS's QoS, SLO and budget figures", "qos", None)
    good = {"baseline": _summary(1.0, slo_pct=20.0), "pals": _summary(1.25), "static": _summary(1.1)}
    text = caption(good, SLO, static)
    assert text.startswith("PALS: 1.25x baseline tokens/J")
    assert "meets the SLO (TPOT p99 <= 55 ms) the baseline breaks in 20 % of intervals" in text
    assert "stays under the budget step" in text and "beats the best static configuration" in text
    worse = {"baseline": _summary(1.0), "pals": _summary(0.9, slo_pct=5.0, qos_pct=30.0, over_pct=4.0),
             "static": _summary(1.0)}
    text = caption(worse, SLO, static)
    assert "breaks the SLO" in text and "both meet" not in text
    assert "misses the throughput target more often (30 %" in text
    assert "over the budget in 4.0 %" in text and "does not beat the best static configuration" in text
    tie = {"baseline": _summary(1.0), "pals": _summary(1.0 + TIE_FRAC / 2), "static": _summary(1.0)}
    assert "ties the best static configuration" in caption(tie, SLO, static) and "both meet" in caption(tie, SLO, static)
    assert caption({"baseline": _summary(1.0)}, SLO, None, interrupted=True).startswith("interrupted before")


def _sweep(rows_and_summaries):
    rows = [row for row, _ in rows_and_summaries]
    summaries = {Configuration(r.power_cap_w, r.batch_cap): s for r, s in rows_and_summaries}
    return HindsightResult(rows, MeetCriteria(), "node", summaries)


def test_the_best_static_is_held_to_pals_figures_then_to_its_slo_and_budget():
    pals = _summary(1.0, slo_pct=0.0, qos_pct=10.0)
    fast = HindsightRow(400.0, 64, 1.3, 1.5, 1500.0, 5.0, 0.0, 30.0, True, "")
    slow = HindsightRow(250.0, 32, 0.8, 1.0, 900.0, 40.0, 0.0, 0.0, True, "")
    meets_all = HindsightRow(300.0, 48, 0.9, 1.1, 1200.0, 8.0, 0.0, 0.0, True, "")
    summary = lambda r: _summary(r.tokens_per_joule, r.slo_violation_pct, r.qos_violation_pct)  # noqa: E731
    judged, choice = choose_static(_sweep([(r, summary(r)) for r in (fast, slow, meets_all)]), pals)
    assert (choice.row.power_cap_w, choice.held_to) == (300.0, "qos")
    assert [r.meets for r in judged.rows] == [False, False, True] and "slo_violation_pct" in judged.rows[0].why_not
    _, choice = choose_static(_sweep([(r, summary(r)) for r in (fast, slow)]), pals)
    assert (choice.row.power_cap_w, choice.held_to) == (250.0, "slo")
    _, choice = choose_static(_sweep([(fast, summary(fast))]), pals)
    assert (choice.row.power_cap_w, choice.held_to) == (400.0, None)


def test_table_gives_ratios_to_the_baseline():
    table = format_table({"baseline": _summary(0.8), "pals": _summary(1.0)}, {"pals": "PALS"})
    lines = table.splitlines()
    assert "x baseline" in lines[0] and lines[2].split()[2] == "1.00" and lines[3].split()[2] == "1.25"
    assert lines[3].startswith("PALS")


def test_ctrl_c_writes_the_summary_of_what_ran(pals_cache, tmp_path, monkeypatch, capsys):
    import pals.runtime.scenario as scenario

    real = scenario.run_scenario

    def interrupting(*args, **kwargs):
        if args[2] != "pals":
            return real(*args, **kwargs)
        step, stop = kwargs["on_step"], kwargs["stop"]

        def on_step(record):
            step(record)
            if record["interval"] == 10 and not stop.is_set():
                os.kill(os.getpid(), signal.SIGINT)
                assert stop.wait(10.0), "the demo's SIGINT handler sets the stop event"

        return real(*args, **{**kwargs, "on_step": on_step})

    monkeypatch.setattr(scenario, "run_scenario", interrupting)
    out = tmp_path / "demo"
    rc = main(["demo", "--duration-s", str(QUICK_S), "--out", str(out)])
    assert rc == 128 + signal.SIGINT
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and set(summary["policies"]) == {"baseline", "pals"}
    assert summary["policies"]["pals"]["interrupted"] is True
    assert summary["policies"]["pals"]["intervals"] < QUICK_S / CONTROL_INTERVAL_S
    assert "static_sweep" not in summary and (out / "demo.png").exists()
    stdout = capsys.readouterr().out
    assert "interrupted" in stdout and summary["caption"] in stdout and "partial runs" in summary["caption"]
