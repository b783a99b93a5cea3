"""What the characterization measures and what the paper says: the paper's numbers, the load rule,
the workload defaults and the grid and timing of a run (`CharacterizationSettings`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pals.core.paper import PAPER_BATCH_CAPS, PAPER_GPU
from pals.errors import ConfigError

PAPER_MODEL_TP: dict[str, int] = {
    "GPT-2": 1,
    "Llama-2-7B": 1,
    "Mistral-7B": 1,
    "OLMoE-1B-7B": 4,
    "Qwen1.5-MoE-A2.7B": 4,
    "DeepSeek-MoE-16B": 2,
    "Phi-3.5-MoE": 2,
    "Mixtral-8x7B": 4,
}
"""The paper's eight models and the TP used for their batch ratio on a 4-GPU node
(replicas = 4 / TP; the choice of the feasibility study, docs/calibration.md §7). Models in `characterize(models=...)` use `tp`."""

FIG1A_MODELS = ("Mixtral-8x7B", "Qwen1.5-MoE-A2.7B", "OLMoE-1B-7B")
"""The models of the paper's Figure 1a and Figure 3."""

PAPER_BEST_CAP_W = {"Mixtral-8x7B": 400.0, "Qwen1.5-MoE-A2.7B": 200.0, "OLMoE-1B-7B": 200.0}
"""Fig 1a: Mixtral keeps gaining up to 400 W; Qwen-MoE and OLMoE peak at about 200 W and decline above."""
PAPER_BATCH_RATIO = (1.7, 2.1)
"""Fig 1b: batch 64 over batch 1 tokens/J, across models."""
PAPER_GAIN_32_64 = {"Mixtral-8x7B": 0.02, "Qwen1.5-MoE-A2.7B": 0.07}
"""Going from batch 32 to 64 adds 2 % (Mixtral) and 7 % (Qwen-MoE)."""
PAPER_FRONTIER_RATIO = {"Mixtral-8x7B": 1.18, "Qwen1.5-MoE-A2.7B": 1.13, "OLMoE-1B-7B": 1.14}
"""Fig 3: peak tokens/J of the joint frontier over the software-only frontier."""
PAPER_TP_FRONTIER_GAIN = {"Mixtral-8x7B": 1.15}
"""Fig 3: re-choosing TP adds this to the joint frontier's peak (Mixtral; Qwen-MoE "gains little beyond TP 2")."""
PAPER_FIG2_BOUND = {"Mixtral-8x7B": "compute", "Qwen1.5-MoE-A2.7B": "communication", "OLMoE-1B-7B": "communication"}
"""Fig 2: the largest share of a decode step's time at high TP and batch, per model."""

LOAD_FACTOR = 2.0
"""Fixed offered load = LOAD_FACTOR x the model's batch-1 capacity (requests/s)."""
SW_ONLY_BUDGET_CAP_W = 300.0
"""The paper also describes the software-only sweep as "capped by the fixed 300 W budget"."""

DEFAULT_GPU = PAPER_GPU
DEFAULT_PROMPT_TOKENS = 1000.0
DEFAULT_OUTPUT_TOKENS = 200.0
LENGTH_CV = 0.5
"""Log-normal prompt and output lengths, the same defaults as `pals sweep`."""

ABLATIONS = ("per_step_limiter", "bandwidth_scales_with_clock", "collective_spin_power")
"""Mechanism switches turned off one at a time for the saturating cap curve (the Fig 1a mechanisms)."""


@dataclass(frozen=True)
class CharacterizationSettings:
    """Grid and timing of a characterization run (simulated seconds)."""

    power_caps_w: tuple[float, ...] | None = None
    """Caps of every sweep in W (None: the paper's grid within the GPU's range)."""
    batch_caps: tuple[int, ...] = PAPER_BATCH_CAPS
    """Batches of the cap-curve models (must hold 1 and a larger one)."""
    ratio_batches: tuple[int, ...] = (1, 32, 64)
    """Batches measured for the other models' batch ratio (must hold 1 and a larger one)."""
    saturation_warmup_s: float = 30.0
    """Warm-up per point at saturation."""
    saturation_window_s: float = 60.0
    """Measurement window per point at saturation."""
    fixed_warmup_s: float = 30.0
    """Warm-up per point at the fixed load."""
    fixed_requests: int = 1000
    """A fixed-load window lasts this many mean inter-arrival times, clipped to the two bounds below."""
    fixed_window_min_s: float = 60.0
    """Shortest fixed-load window."""
    fixed_window_max_s: float = 1200.0
    """Longest fixed-load window."""
    ablations: bool = True
    """Run the mechanism ablations of the saturating cap curve."""

    def __post_init__(self) -> None:
        for name in ("saturation_warmup_s", "fixed_warmup_s"):
            if not (getattr(self, name) >= 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"CharacterizationSettings.{name} must be >= 0 seconds, got {getattr(self, name)!r}")
        for name in ("saturation_window_s", "fixed_window_min_s", "fixed_window_max_s"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ConfigError(f"CharacterizationSettings.{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if self.fixed_window_max_s < self.fixed_window_min_s:
            raise ConfigError("CharacterizationSettings.fixed_window_max_s is below fixed_window_min_s; swap them")
        if self.fixed_requests < 1:
            raise ConfigError(f"CharacterizationSettings.fixed_requests must be >= 1, got {self.fixed_requests}")
        for name in ("batch_caps", "ratio_batches"):
            batches = getattr(self, name)
            if 1 not in batches or len(batches) < 2:
                raise ConfigError(f"CharacterizationSettings.{name}={batches} must hold batch 1 and a larger batch")

    @classmethod
    def quick(cls) -> "CharacterizationSettings":
        """Two caps, three batches, short windows, no ablations (a smoke test: seconds)."""
        return cls(
            power_caps_w=(200.0, 400.0),
            batch_caps=(1, 8, 64),
            ratio_batches=(1, 8, 64),
            saturation_warmup_s=5.0,
            saturation_window_s=10.0,
            fixed_warmup_s=10.0,
            fixed_requests=100,
            fixed_window_min_s=20.0,
            fixed_window_max_s=60.0,
            ablations=False,
        )
