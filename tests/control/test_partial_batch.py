"""The partial-batch model: the batch a demand fills, its power, and how the score and the SLO test use them."""

from __future__ import annotations

import numpy as np
import pytest

from pals.control.policies.config import ModelGuidedConfig
from pals.control.policies.selection import (
    Candidates, filled_batch, partial_batch_power_w, score_candidates,
)
from pals.control.types import Configuration
from pals.errors import ConfigError

CAPS, BATCHES = (250.0, 350.0), (8, 16, 32)


def _grid() -> tuple[Candidates, np.ndarray, np.ndarray]:
    """Two caps x three batches; capacity doubles from batch to batch less a little, power rises with batch and cap."""
    cap = np.repeat(np.array(CAPS), len(BATCHES))
    batch = np.tile(np.array(BATCHES), len(CAPS))
    configs = tuple(Configuration(float(c), int(b)) for c, b in zip(cap, batch))
    capacity = np.array([400.0, 700.0, 1200.0, 430.0, 770.0, 1360.0])
    gpu_w = np.array([1000.0, 1003.0, 1004.0, 1240.0, 1280.0, 1320.0])
    return Candidates(configs, cap, batch, np.ones(len(configs), dtype=bool)), capacity, gpu_w


def test_filled_batch_interpolates_within_a_cap_and_never_exceeds_the_cap():
    cands, capacity, _ = _grid()
    b = filled_batch(cands, capacity, 700.0)
    assert b[1] == pytest.approx(16.0) and b[0] == 8  # batch 8 cannot carry 700 tok/s: it runs full
    assert b[2] == pytest.approx(16.0)  # batch cap 32 at 700 tok/s fills 16
    assert 8 < b[5] < 16  # 350 W is faster: fewer sequences carry the same demand
    assert np.all(b <= cands.batch_cap) and np.all(b >= 1.0)
    assert filled_batch(cands, capacity, 100.0)[2] == pytest.approx(8 * 100.0 / 400.0)


def test_partial_batch_power_is_the_filled_batchs_busy_power():
    cands, capacity, gpu_w = _grid()
    power = partial_batch_power_w(cands, capacity, gpu_w, 700.0, 240.0)
    assert power[2] == pytest.approx(1003.0)  # 250 W / 32 at 700 tok/s draws what 250 W / 16 draws busy
    assert np.all(power <= gpu_w + 1e-9)
    # Below the smallest batch's capacity the idle mix comes back.
    assert partial_batch_power_w(cands, capacity, gpu_w, 200.0, 240.0)[2] == pytest.approx(0.5 * 1000.0 + 0.5 * 240.0)


def test_the_score_prefers_the_lower_cap_at_partial_load_only_with_the_model():
    cands, capacity, gpu_w = _grid()
    node_w = gpu_w + 345.0
    linear = score_candidates(capacity, gpu_w, node_w, 400.0, 240.0, 1.0)
    partial = score_candidates(capacity, gpu_w, node_w, 400.0, 240.0, 1.0,
                               partial_gpu_power_w=partial_batch_power_w(cands, capacity, gpu_w, 400.0, 240.0),
                               partial_weight=1.0)
    # The linear mix of busy and idle power counts the faster cap's spare capacity as idle time; an engine
    # that keeps stepping draws its cap's power instead, so the higher cap loses more with the model.
    assert partial.tokens_per_joule[5] / partial.tokens_per_joule[2] < linear.tokens_per_joule[5] / linear.tokens_per_joule[2]
    assert partial.tokens_per_joule[5] / partial.tokens_per_joule[2] < 0.9
    assert cands.power_cap_w[int(np.argmax(partial.tokens_per_joule))] == 250.0
    assert partial.tokens_per_joule[1] == pytest.approx(partial.tokens_per_joule[2], rel=0.01)  # the batch cap does not matter
    assert np.allclose(linear.delivered_tps, partial.delivered_tps)


def test_partial_batch_is_a_fraction_and_off_by_default():
    assert ModelGuidedConfig().partial_batch == 0.0
    with pytest.raises(ConfigError):
        ModelGuidedConfig(partial_batch=1.5)
