"""PALS: joint cap x batch selection, model-guided, with PID correction and hysteresis."""

from __future__ import annotations

from pals.control.policies.model_guided import ModelGuidedPolicy


class Pals(ModelGuidedPolicy):
    """Every cap x batch candidate, the predictor corrected by learnt ratios and a PID on the target."""

    name = "pals"
