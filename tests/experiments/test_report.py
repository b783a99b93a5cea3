"""The report writer: Markdown with tables and linked images, CSV tables, JSON summary."""

import json
import math

import pytest

from pals.errors import ConfigError
from pals.experiments.report import Report, markdown_table


def test_report_writes_markdown_csv_and_json(tmp_path):
    report = Report("demo", "Demo", tmp_path / "out", quick=True)
    sec = report.section("Numbers")
    report.table(sec, "t1", ["a", "b"], [[1.5, math.nan], ["x|y", 2000.0]], caption="cap")
    report.compare("ratio", "1.26x", "1.10x", "same direction")
    report.check("holds", True, "because")
    report.check("fails", False, "measured 3")
    report.why(sec, "the load regime")
    report.metrics = {"nan": math.nan}
    summary = report.write(1.0)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| ratio | 1.26x | 1.10x | same direction |" in text
    assert "**no**" in text and "**Why it differs.** the load regime" in text
    assert "x/y" in text  # a pipe inside a cell does not break the table
    assert (tmp_path / "out" / "tables" / "t1.csv").read_text().splitlines()[0] == "a,b"
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["metrics"]["nan"] is None and data["all_checks_passed"] is False
    assert summary["tables"] == ["tables/t1.csv"]


def test_missing_image_is_not_linked(tmp_path):
    report = Report("demo", "Demo", tmp_path, quick=False)
    sec = report.section("s")
    report.image(sec, "absent", "never drawn")
    assert "absent.png" not in report.markdown()


def test_markdown_table_shape():
    lines = markdown_table(["x"], [[1], [2]]).splitlines()
    assert lines[1] == "|---|" and len(lines) == 4


def test_unwritable_out_names_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="--out"):
        Report("demo", "Demo", blocker / "sub", quick=True)
