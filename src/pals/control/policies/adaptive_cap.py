"""AdaptiveCap: the batch fixed (at its maximum), the cap chosen with the predictor to meet the target."""

from __future__ import annotations

from typing import Sequence

from pals.control.policies.config import ModelGuidedConfig
from pals.control.policies.interface import PerfModel
from pals.control.policies.model_guided import ModelGuidedPolicy


class AdaptiveCap(ModelGuidedPolicy):
    """Cap-only control: every cap of `power_caps_w`, one candidate batch (`batch_cap`)."""

    name = "adaptive-cap"

    def __init__(self, model: PerfModel, power_caps_w: Sequence[float], batch_cap: int,
                 config: ModelGuidedConfig | None = None) -> None:
        super().__init__(model, power_caps_w, (batch_cap,), config)
