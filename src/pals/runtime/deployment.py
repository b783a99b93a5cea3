"""The static deployment of one node: which model on which GPUs, with what parallelism.

One value object for every command and experiment; the simulated node's `SimNodeSpec` and the
cache keys of profiles built on the fly derive from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pals.core.node import Constraints
from pals.core.paper import PAPER_BATCH_CAPS, PAPER_GPU, PAPER_NUM_GPUS
from pals.errors import ConfigError
from pals.runtime.cache import simulator_fingerprint
from pals.sim.node import SimNodeSpec
from pals.sim.physics import PhysicsParams


@dataclass(frozen=True)
class Deployment:
    """Model, GPUs and parallelism of one node (the part that does not change while it runs)."""

    model: str
    """LLM preset name (`pals.sim.llm`, e.g. "Mixtral-8x7B") or a Hugging Face config.json path."""
    gpu: str = PAPER_GPU
    """GPU preset name (`pals.sim.hardware`)."""
    num_gpus: int = PAPER_NUM_GPUS
    """GPUs in the node."""
    tp: int = 4
    """Tensor-parallel degree of each engine replica; replicas = num_gpus // tp."""
    ep: int = 1
    """Expert-parallel degree (1: experts are tensor-sliced; dense models always 1)."""
    batch_cap_max: int = max(PAPER_BATCH_CAPS)
    """The engine's max_num_seqs: the largest batch cap the controller may set."""
    physics: PhysicsParams | None = None
    """The simulated GPU's step-model physics (`pals.sim.physics.load_physics` of a `pals calibrate`
    file); None: the GPU preset's own. Part of `key()`, so profiles on other physics are not reused."""

    def __post_init__(self) -> None:
        for name in ("num_gpus", "tp", "ep", "batch_cap_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"deployment {name} must be an integer of at least 1, got {value!r}")
        if not self.model:
            raise ConfigError("deployment model is empty; name a model preset or a config.json path")

    def sim_spec(self) -> SimNodeSpec:
        """The simulated node of this deployment (raises ConfigError on an unknown model or GPU)."""
        return SimNodeSpec(self.model, self.gpu, num_gpus=self.num_gpus, tp=self.tp, ep=self.ep,
                           batch_cap_max=self.batch_cap_max, params=self.physics)

    def constraints(self) -> Constraints:
        """The settable ranges of the simulated node of this deployment (before building it)."""
        spec = self.sim_spec()
        gpu = spec.gpu_spec
        return Constraints(num_gpus=self.num_gpus, power_cap_min_w=gpu.power_limit_min_w,
                           power_cap_max_w=gpu.power_limit_max_w, batch_cap_max=spec.batch_cap_max,
                           tp=self.tp, ep=self.ep, gpu_name=gpu.name, model_name=spec.llm_spec.name)

    def key(self) -> str:
        """Cache key: the deployment plus a fingerprint of the simulator that measures it."""
        name = f"{self.model}_{self.gpu}_{self.num_gpus}x_tp{self.tp}_ep{self.ep}_b{self.batch_cap_max}"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + f"_sim{simulator_fingerprint(repr(self.sim_spec()))}"

    def describe(self) -> str:
        """One line for logs: '4x A100-SXM4-80GB Mixtral-8x7B TP4'."""
        return f"{self.num_gpus}x {self.gpu} {self.model} TP{self.tp}"


def fits_node(model: str, gpu: str, tp: int, num_gpus: int = 4) -> bool:
    """Whether the model's weights and some KV cache fit `num_gpus` x `gpu` at TP `tp`.

    Raises:
        ConfigError: an unknown model or GPU, or a TP the node cannot hold (not a memory question).
    """
    try:
        spec = SimNodeSpec(model, gpu, num_gpus=num_gpus, tp=tp)
        return spec.step_model().kv_cache_tokens(spec.gpu_memory_utilization) >= 1
    except ConfigError as error:
        if "fit" not in str(error):
            raise
        return False
