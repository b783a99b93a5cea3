"""The Oracle: the PALS selection on the simulator's ground truth (simulated node only)."""

from __future__ import annotations

from pals.control.policies.model_guided import ModelGuidedPolicy


class Oracle(ModelGuidedPolicy):
    """Exact capacity and busy power (`TruthModel`, measured at saturation), so no PID and no learnt ratios.

    It faces the same noisy telemetry as PALS (demand estimate, throughput windows), hence the same
    target margin, hysteresis and load-aware objective: it is the upper bound on efficiency at equal
    QoS, not a policy that trades QoS for tokens/J by running right at the target.
    """

    name = "oracle"
    uses_pid = False
    learn_ratios = False
