"""scripts/results_digest.py: docs/results.md is built from the experiments' summaries, never typed by hand."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "results_digest.py"


def _summary(folder: Path, name: str, checks: list[tuple[str, bool]], quick: bool = True) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({
        "experiment": name, "title": f"{name} | title", "quick": quick, "wall_s": 12.4,
        "comparisons": [{"quantity": "PALS / Baseline", "paper": "1.26x", "ours": "1.348x [1.327, 1.369]",
                         "verdict": "same direction"}],
        "checks": [{"claim": claim, "passed": passed, "evidence": f"evidence of {claim}"} for claim, passed in checks],
    }))


def _digest(runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(runs), "--title", "Test runs"], capture_output=True,
                          text=True, timeout=60)


def test_the_page_copies_every_comparison_and_names_the_checks_that_fail(tmp_path):
    _summary(tmp_path / "slo", "slo", [("meets the SLO", True), ("beats the best static", False)])
    _summary(tmp_path / "kv", "kv-pressure", [("finds batch 32", True)], quick=False)
    run = _digest(tmp_path)
    assert run.returncode == 0, run.stderr
    page = run.stdout
    assert page.startswith("# Test runs")
    assert "| slo | quick | 12 | 1 of 2 |" in page and "| kv-pressure | full | 12 | 1 of 1 |" in page
    assert "| PALS / Baseline | 1.26x | 1.348x [1.327, 1.369] | same direction |" in page
    assert "- beats the best static: evidence of beats the best static" in page
    assert "meets the SLO:" not in page  # a check that holds is counted, not listed
    assert "slo | title" not in page and "slo \\| title" in page  # a pipe in a cell cannot break the table
    assert "All 1 checks hold." in page


def test_a_folder_without_summaries_is_one_error_line(tmp_path):
    run = _digest(tmp_path)
    assert run.returncode != 0
    assert run.stderr.strip().count("\n") == 0 and "pals experiment all" in run.stderr
