"""Profiling a real vLLM node: the node plus the load generator that keeps it busy while it is measured.

The node layer (`pals.node.vllm_node`) knows vLLM and the GPUs, not load generation; this module
puts the two together for `pals profile --node vllm`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pals.core.node import Sample
from pals.loadgen import LoadGenerator, served_model_info
from pals.node.vllm_node import VllmNode, channel_path_for, open_gpu_backend
from pals.runtime.load import LoadSpec, make_workload

GPU_BACKEND_ENV = "PALS_GPU_BACKEND"
"""Environment variable naming the GPU backend when none is given (else "auto")."""
DEFAULT_VOCAB_SIZE = 1000
"""Token ids of generated prompts are drawn from [1, this)."""
CLOSED_LOOP_DEPTH = 2
"""A saturating load keeps this many times the server's max_num_seqs in flight."""


@dataclass(frozen=True)
class VllmProfilingOptions:
    """How to reach a vLLM server's GPUs and batch-cap channel, and how to shape the load sent to it."""

    gpu_backend: str | None = None
    """"auto", "zeus", "nvml" or "simulated"; None: $PALS_GPU_BACKEND, else "auto"."""
    sim_gpu: str | None = None
    """With the simulated GPU test double: its preset (None: the double's default)."""
    sim_gpus: int = 1
    """With the simulated GPU test double: how many GPUs."""
    cap_channel: str | None = None
    """The batch-cap channel file; None: $PALS_CAP_CHANNEL, else the path `pals serve` uses for the URL's port."""
    tp: int = 1
    """Tensor-parallel degree the server runs with."""
    max_prompt_tokens: int | None = None
    """Clip generated prompts to this many tokens; None: half the served model's context."""
    max_output_tokens: int | None = None
    """Clip requested outputs to this many tokens; None: half the served model's context."""
    vocab_size: int = DEFAULT_VOCAB_SIZE
    """Token ids are drawn from [1, vocab_size)."""
    seed: int = 0
    """Seed of the generated token ids."""


class ProfilingVllmNode(VllmNode):
    """A `VllmNode` that also runs a load generator while it is profiled.

    The generator starts on the first `sample()` and stops on `close()`;
    client-side counts are in `load.stats()` and are recorded next to the
    server's (see `client_vs_server()`).
    """

    def __init__(self, *args, load=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.load = load
        self._load_started = False
        self._server_tokens_at_start: float | None = None

    def sample(self) -> Sample:
        if self.load is not None and not self._load_started:
            self._server_tokens_at_start = self._previous.generation_tokens_total
            self.load.start()
            self._load_started = True
        return super().sample()

    def client_vs_server(self) -> tuple[int, float] | None:
        """(client completion tokens, server generated tokens) since the load started."""
        if not self._load_started:
            return None
        metrics = self.scraper.scrape()
        return self.load.stats().completion_tokens_total, metrics.generation_tokens_total - self._server_tokens_at_start

    def close(self) -> None:
        try:
            if self.load is not None and self._load_started:
                self.load.stop()
                self.load.join(timeout_s=120)
        finally:
            super().close()


def connect_for_profiling(url: str, options: VllmProfilingOptions, load: LoadSpec) -> ProfilingVllmNode:
    """The node `pals profile --node vllm --url URL` measures, with `load` offered to it.

    A trace or Poisson load is sent open loop at its own arrival times; a saturating one as a
    closed loop keeping `CLOSED_LOOP_DEPTH` x max_num_seqs requests in flight.
    """
    gpu_kind = options.gpu_backend or os.environ.get(GPU_BACKEND_ENV, "auto")
    gpus = open_gpu_backend(gpu_kind, options.sim_gpu, options.sim_gpus)
    node = ProfilingVllmNode(url, gpus, channel_path_for(url, options.cap_channel), tp=options.tp)
    workload = make_workload(load)
    model, max_model_len = served_model_info(url)
    # Trace prompts can exceed a small model's context: by default each side gets half of it.
    half = None if max_model_len is None else max(1, max_model_len // 2)
    node.load = LoadGenerator(
        url,
        workload,
        concurrency=None if not workload.closed_loop else CLOSED_LOOP_DEPTH * node.batch_cap_max,
        model=model,
        max_prompt_tokens=options.max_prompt_tokens or half,
        max_output_tokens=options.max_output_tokens or half,
        vocab_size=options.vocab_size,
        seed=options.seed,
    )
    return node
