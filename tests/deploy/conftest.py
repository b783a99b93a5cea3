"""Fixtures for the deployment tests (helpers are in promql_names.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# pytest's importlib import mode (pyproject.toml) does not put test folders on sys.path; the
# tests here share promql_names.py, so this folder goes on it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
