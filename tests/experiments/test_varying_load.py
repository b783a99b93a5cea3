"""The step-rate Poisson load: reproducible, its rate follows the phases, bad phases are refused."""

from __future__ import annotations

from itertools import islice

import pytest

from pals.errors import ConfigError
from pals.experiments.varying_load import RatePhase, StepPoissonWorkload



def _load(seed: int = 0) -> StepPoissonWorkload:
    from pals.experiments.common import EXPERIMENT_LENGTHS

    prompt, output = EXPERIMENT_LENGTHS.distributions()
    return StepPoissonWorkload([RatePhase(50.0, 2000.0), RatePhase(50.0, 500.0)], prompt, output, seed=seed)


def test_arrivals_follow_the_phases_and_repeat():
    load = _load()
    rate_rps = {2000.0: 2000.0 / load.output_tokens.mean, 500.0: 500.0 / load.output_tokens.mean}
    arrivals = [r.arrival_s for r in islice(load.requests(), 6000) if r.arrival_s < 400.0]
    assert arrivals == sorted(arrivals)
    for start, offered in ((0.0, 2000.0), (50.0, 500.0), (100.0, 2000.0), (150.0, 500.0)):
        count = sum(start <= t < start + 50.0 for t in arrivals)
        expected = rate_rps[offered] * 50.0
        assert abs(count - expected) < 4.0 * expected ** 0.5, (start, count, expected)
    assert load.offered_tps_at(120.0) == 2000.0 and load.offered_tps_at(175.0) == 500.0
    assert [r.arrival_s for r in islice(load.requests(), 50)] == arrivals[:50]  # reproducible
    assert [r.arrival_s for r in islice(_load(1).requests(), 50)] != arrivals[:50]


@pytest.mark.parametrize("phases", [[], [RatePhase(0.0, 100.0)], [RatePhase(10.0, -1.0)]])
def test_bad_phases_are_refused(phases):
    from pals.experiments.common import EXPERIMENT_LENGTHS

    prompt, output = EXPERIMENT_LENGTHS.distributions()
    with pytest.raises(ConfigError):
        StepPoissonWorkload(phases, prompt, output)
