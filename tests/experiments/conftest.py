"""Shared helper of the experiment tests: the checks an experiment must show hold."""

from __future__ import annotations

import pytest


def require_checks(summary: dict, *required: str) -> None:
    """Every check whose claim contains one of `required` exists and holds (AssertionError otherwise)."""
    for name in required:
        assert any(name in c["claim"] for c in summary["checks"]), f"no check {name!r}"
    failing = [c["claim"] for c in summary["checks"]
               if not c["passed"] and any(name in c["claim"] for name in required)]
    if failing:
        raise AssertionError(f"checks do not hold: {failing}")


@pytest.fixture
def checks_hold():
    """`require_checks` as a fixture (test modules do not import each other)."""
    return require_checks
