"""Run inside the cached vLLM environment (CPU torch + transformers): TorchBench's control flow on a tiny model.

Real model, real StaticCache, real forward passes on CPU; only `torch.cuda`'s graph API is replaced by a recorder
(this machine has no GPU), to check what the GPU path does around it: the cache rewinds, a captured decode is
replayed once per step with that step's token ids, and a failed capture falls back to eager decoding with one
note. Prints `PALS_RESULT {json}`.

    python bench_check.py CONFIG_DIR
"""

import contextlib
import json
import sys
import types
from pathlib import Path

import torch

from pals.probe.bench import TorchBench
from pals.probe.plan import ProbeSettings

PROMPT, STEPS = 8, 3


class RecordingCuda:
    """torch.cuda's graph API, recorded: capture runs nothing (as a real capture runs no kernel)."""

    OutOfMemoryError = torch.cuda.OutOfMemoryError

    def __init__(self, fail: bool) -> None:
        self.fail, self.captures, self.replayed_ids = fail, 0, []

    def Stream(self, device=None):  # noqa: N802 (torch's name)
        return types.SimpleNamespace(wait_stream=lambda other: None)

    def stream(self, s):
        return contextlib.nullcontext()

    def current_stream(self, device=None):
        return types.SimpleNamespace(wait_stream=lambda other: None)

    def synchronize(self, device=None):
        pass

    def CUDAGraph(self):  # noqa: N802
        return types.SimpleNamespace(replay=lambda: self.replayed_ids.append(self.bench.graph_ids.flatten().tolist()))

    @contextlib.contextmanager
    def graph(self, g):
        self.captures += 1
        if self.fail:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        yield


class TorchWithCuda:
    def __init__(self, cuda) -> None:
        self.cuda = cuda

    def __getattr__(self, name):
        return getattr(torch, name)


def run(config_dir: str, fail: bool) -> dict:
    settings = ProbeSettings(config_path=Path(config_dir), out_path=Path("unused.csv"), device="cpu", dtype="float32",
                             prompt_tokens=PROMPT, decode_steps=STEPS)
    said = []
    bench = TorchBench.build(settings, say=said.append)
    cuda = RecordingCuda(fail)
    cuda.bench = bench
    bench.torch = TorchWithCuda(cuda)
    bench.graphs_wanted, bench.decode_mode = True, "cudagraph"
    bench.prepare(2)
    length = lambda: int(bench.cache.layers[0].cumulative_length)  # noqa: E731
    bench.prefill()
    after_prefill = length()
    bench.prefill()
    after_second_prefill = length()
    bench.setup_decode()
    bench.decode()
    result = {"after_prefill": after_prefill, "after_second_prefill": after_second_prefill,
              "after_decode": length(), "captures": cuda.captures, "replayed_ids": list(cuda.replayed_ids),
              "decode_ids": bench.decode_ids.flatten(1).tolist(), "decode_mode": bench.decode_mode,
              "graph_failure": bench.graph_failure, "said": said}
    bench.decode()
    result["captures_after_second_decode"] = cuda.captures
    bench.release()
    result["released"] = bench.cache is None and bench.graph is None
    return result


if __name__ == "__main__":
    print("PALS_RESULT " + json.dumps({"ok": run(sys.argv[1], fail=False), "fail": run(sys.argv[1], fail=True)}))
