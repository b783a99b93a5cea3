"""The node-power line P_node = alpha * sum(P_gpu) + beta."""

from __future__ import annotations

import numpy as np
import pytest

from pals.errors import ProfileError
from pals.model.syspower import PAPER_ALPHA, PAPER_BETA_W, fit_syspower


def test_recovers_a_known_line():
    gpu = np.linspace(400.0, 1600.0, 20)
    fit = fit_syspower(gpu, 1.07 * gpu + 330.0)
    assert (fit.alpha, fit.beta_w) == (pytest.approx(1.07), pytest.approx(330.0))
    assert fit.r2 == pytest.approx(1.0) and fit.mae_w == pytest.approx(0.0, abs=1e-9)


def test_noise_lowers_r2_and_shows_in_mae():
    rng = np.random.default_rng(0)
    gpu = rng.uniform(500.0, 1500.0, 200)
    fit = fit_syspower(gpu, 1.05 * gpu + 345.0 + rng.normal(0.0, 15.0, 200))
    assert 0.9 < fit.r2 < 1.0
    assert 8.0 < fit.mae_w < 16.0
    assert fit.alpha == pytest.approx(1.05, abs=0.02)


def test_nan_rows_are_ignored_and_too_few_refused():
    with pytest.raises(ProfileError, match="at least 3"):
        fit_syspower([500.0, 600.0, 700.0], [900.0, np.nan, np.nan])
    with pytest.raises(ProfileError, match="does not vary"):
        fit_syspower([500.0] * 4, [900.0, 901.0, 899.0, 900.0])


def test_paper_defaults():
    assert (PAPER_ALPHA, PAPER_BETA_W) == (1.05, 345.0)
