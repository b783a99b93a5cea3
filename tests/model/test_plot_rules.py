"""The plot rules (`pals.model.plot_rules`): what they flag, what they let through, and PALS's own figures
(the profile plots, the grouped bars, `pals report`, `pals demo`: test_demo.py) run through them."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from pals.model.plot_rules import (  # noqa: E402
    SMALL_DIFFERENCE_FRAC,
    PlotRuleError,
    PlotRuleWarning,
    enforce,
    figure_problems,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _labelled(ax, x="time (s)", y="power (W)", title="Power"):
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)


def test_a_titled_figure_with_units_on_its_axes_passes():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [2, 3])
    _labelled(ax)
    assert figure_problems(fig) == []


def test_no_title_is_flagged():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [2, 3])
    _labelled(ax, title="")
    assert any("no title" in p for p in figure_problems(fig))
    fig.suptitle("Power over time")
    assert figure_problems(fig) == []


def test_an_unlabelled_axis_or_a_label_without_its_unit_is_flagged():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [2, 3])
    _labelled(ax, x="", y="tokens/J")
    problems = figure_problems(fig)
    assert any("x axis has no label" in p for p in problems)
    assert any("'tokens/J' names no unit" in p for p in problems)


def test_shared_time_axes_twins_and_category_axes_need_no_extra_label():
    fig, axes = plt.subplots(2, 1, sharex=True)
    for ax in axes:
        ax.plot([0, 1], [2, 3])
        ax.set_ylabel("power cap (W)")
    axes[0].set_title("Caps")
    axes[1].set_xlabel("time (s)")
    twin = axes[1].twinx()
    twin.plot([0, 1], [8, 64])
    twin.set_ylabel("batch cap (sequences)")
    assert figure_problems(fig) == []
    twin.set_ylabel("")
    assert len(figure_problems(fig)) == 1
    fig, ax = plt.subplots()
    ax.bar(["baseline", "pals"], [1.0, 2.0])
    ax.set_ylabel("tokens/J (tokens/J)")
    ax.set_title("Bars")
    assert figure_problems(fig) == []


def test_bars_of_small_differences_are_flagged_until_drawn_as_ratios_or_zoomed():
    close = [1.0, 1.0 + SMALL_DIFFERENCE_FRAC / 2]
    fig, ax = plt.subplots()
    ax.bar([0, 1], close)
    _labelled(ax, x="", y="tokens/J (tokens/J)")
    ax.set_xticks([0, 1], ["a", "b"])
    assert any("bars differ by" in p for p in figure_problems(fig))
    ax.set_ylim(0.99, 1.03)  # zoomed
    assert figure_problems(fig) == []
    fig, ax = plt.subplots()
    ax.bar([0, 1], [v - 1.0 for v in close], bottom=1.0)  # ratios, bars grown from 1x
    _labelled(ax, x="", y="tokens/J over the baseline's (x)")
    ax.set_xticks([0, 1], ["a", "b"])
    assert figure_problems(fig) == []
    fig, ax = plt.subplots()
    ax.bar([0, 1], [1.0, 1.0])  # equal bars: nothing to see, nothing flagged
    _labelled(ax, x="", y="tokens/J (tokens/J)")
    ax.set_xticks([0, 1], ["a", "b"])
    assert figure_problems(fig) == []


def test_enforce_raises_or_warns(tmp_path):
    from pals.experiments.common import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [2, 3])
    with pytest.raises(PlotRuleError, match="no title"):
        enforce(fig, "x.png")
    with pytest.warns(PlotRuleWarning, match="x.png"):
        assert enforce(fig, "x.png", strict=False)
    with pytest.warns(PlotRuleWarning):
        save_figure(fig, tmp_path / "reported.png")  # an experiment's figure: reported, still written
    assert (tmp_path / "reported.png").exists()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [2, 3])
    with pytest.raises(PlotRuleError):
        save_figure(fig, tmp_path / "refused.png", strict=True)
    assert not (tmp_path / "refused.png").exists()


@pytest.fixture
def checked_saves(monkeypatch):
    """Every figure saved while the test runs, with its plot-rule problems."""
    seen: list[tuple[str, list[str]]] = []
    real = matplotlib.figure.Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        seen.append((str(fname), figure_problems(self)))
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return seen


def test_the_profile_figures_keep_the_rules(sim_profile, tmp_path, checked_saves):
    from pals.model.plots import plot_profile, plot_relative_curves

    paths = plot_profile(sim_profile, tmp_path / "olmoe")
    plot_relative_curves({"a": {"x": ([150, 200], [1.0, 2.0])}, "b": {"x": ([150, 200], [3.0, 1.0])}},
                         tmp_path / "curves.png", "Curves", ylabel="tokens/J (tokens/J)", normalize=False)
    assert len(checked_saves) == len(paths) + 1
    assert all(problems == [] for _, problems in checked_saves), checked_saves


def test_grouped_bars_of_small_differences_are_zoomed(tmp_path, checked_saves):
    from pals.model.plots import plot_grouped_bars

    with warnings.catch_warnings():
        warnings.simplefilter("error", PlotRuleWarning)
        plot_grouped_bars(["a", "b"], {"ours": [1.20, 1.21], "paper": [1.205, float("nan")]}, tmp_path / "bars.png",
                          "Close ratios", "tokens/J ratio (x)")
    assert checked_saves == [(str(tmp_path / "bars.png"), [])]
    with pytest.warns(PlotRuleWarning, match="names no unit"):  # the caller's label is reported, not refused
        plot_grouped_bars(["a"], {"ours": [2.0]}, tmp_path / "unitless.png", "Ratio", "ratio")


def test_the_run_report_figure_keeps_the_rules(tmp_path, checked_saves):
    from pals.cli import main

    run = tmp_path / "run"
    assert main(["run", "--model", "GPT-2", "--tp", "1", "--num-gpus", "1", "--policy", "baseline", "--rate", "2",
                 "--target-tps", "100", "--budget-w", "800", "--duration-s", "5", "--quiet", "--out", str(run)]) == 0
    assert main(["report", str(run)]) == 0
    assert len(checked_saves) == 1 and checked_saves[0][1] == []
