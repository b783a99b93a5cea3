"""AdaptiveBatch: the cap fixed (at the GPU's maximum, clamped by the budget), the batch chosen with the predictor."""

from __future__ import annotations

from typing import Sequence

from pals.control.policies.config import ModelGuidedConfig
from pals.control.policies.interface import PerfModel
from pals.control.policies.model_guided import ModelGuidedPolicy


class AdaptiveBatch(ModelGuidedPolicy):
    """Batch-only control: one candidate cap (`power_cap_w`), every batch of `batch_caps`."""

    name = "adaptive-batch"

    def __init__(self, model: PerfModel, power_cap_w: float, batch_caps: Sequence[int],
                 config: ModelGuidedConfig | None = None) -> None:
        super().__init__(model, (power_cap_w,), batch_caps, config)
