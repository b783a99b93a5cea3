"""The torch side of the probe: a random-weight model from a config.json, and its prefill and decode steps.

torch and transformers are an optional extra (`pip install 'pals[probe]'`); this module imports them only in
`require_torch()`, so the rest of PALS (and `pals probe --help`) works without them.

The model is built with `AutoConfig.from_pretrained(folder)` and `AutoModelForCausalLM.from_config(config,
dtype=...)` directly on the device, with Hugging Face's own random initialisation (normal weights, unit norms):
no weights are downloaded and nothing is fetched from a hub (HF_HUB_OFFLINE is set before transformers loads).

Per batch B the bench allocates a `StaticCache` of prompt + decode_steps slots per sequence (preallocated, no
re-allocation per step, as a serving engine's KV cache) and random token ids. A prefill writes positions
0..P-1; a decode run rewinds the cache to P and runs `decode_steps` single-token steps (random ids per step,
so an MoE router spreads tokens as real text does). Rewinding sets each cache layer's `cumulative_length`, the
position counter transformers 5 keeps on the device (checked when the cache is made: another layout is one
clear error). With `cuda_graphs='auto'` one decode step is captured in a CUDA graph after a warm-up and
replayed, as vLLM does, so per-kernel launch cost (eager PyTorch spends ~10 us of CPU per kernel, thousands per
step) does not leave the GPU idle between kernels; if the capture fails the bench says why once and decodes
eagerly for the rest of the run.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from pals.errors import ConfigError, PalsError
from pals.probe.measure import BenchOutOfMemory
from pals.probe.plan import ProbeSettings

INSTALL_HINT = "pals probe needs torch and transformers: pip install 'pals[probe]'"


class MissingDependency(PalsError):
    """An optional dependency (torch, transformers) is not installed."""


def require_torch() -> tuple[Any, Any]:
    """(torch, transformers), or MissingDependency with the install line.

    Sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE first: the probe never fetches anything from a hub, and
    CUDA_DEVICE_ORDER=PCI_BUS_ID so torch's device index is NVML's.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    try:
        import torch
        import transformers
    except ImportError:
        raise MissingDependency(INSTALL_HINT) from None
    return torch, transformers


def _is_oom(error: BaseException, torch: Any) -> bool:
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "out of memory" in str(error))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:240]


class TorchBench:
    """`pals.probe.measure.Bench` on a Hugging Face model (see the module docstring)."""

    def __init__(self, settings: ProbeSettings, torch: Any, model: Any, config: Any, say: Callable[[str], None]):
        self.settings = settings
        self.torch = torch
        self.model = model
        self.config = config
        self.say = say
        self.device = next(model.parameters()).device
        self.graphs_wanted = settings.cuda_graphs == "auto" and self.device.type == "cuda"
        self.graph_failure: str | None = None
        """Why decode graphs were given up (None: not tried, or they work)."""
        self.decode_mode = "cudagraph" if self.graphs_wanted else "eager"
        self._generator = torch.Generator(device=self.device).manual_seed(settings.seed)
        self._clear()

    def _clear(self) -> None:
        self.batch = 0
        self.cache = self.prompt_ids = self.decode_ids = self.graph = self.graph_ids = None

    # --- building --------------------------------------------------------------

    @classmethod
    def build(cls, settings: ProbeSettings, say: Callable[[str], None] = print) -> "TorchBench":
        """The model on the device, random weights (see the module docstring).

        Raises:
            MissingDependency: torch or transformers missing.
            ConfigError: the config cannot be read by transformers, or the device is not there.
        """
        torch, transformers = require_torch()
        transformers.logging.set_verbosity_error()  # its advice on generation settings is noise here
        folder = settings.config_path if settings.config_path.is_dir() else settings.config_path.parent
        try:
            config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as error:
            raise ConfigError(f"transformers cannot read {folder}/config.json ({_first_line(error)}); give a "
                              "Hugging Face config.json of a causal LM") from None
        if settings.device == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError("torch sees no CUDA GPU (a CPU-only torch, or no driver): install a CUDA torch, or "
                                  "run with --device cpu --gpu-backend simulated for a test")
            if settings.gpu_index >= torch.cuda.device_count():
                raise ConfigError(f"--gpu-index {settings.gpu_index}: torch sees {torch.cuda.device_count()} GPU(s)")
            device = torch.device("cuda", settings.gpu_index)
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        torch.manual_seed(settings.seed)
        dtype = getattr(torch, settings.dtype)
        attention = _attention_implementation(say)
        try:
            with device:  # parameters are created on the device: no host copy of a large model
                model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                                      attn_implementation=attention)
        except ValueError as error:
            raise ConfigError(f"transformers cannot build a causal LM from {folder}/config.json "
                              f"({_first_line(error)})") from None
        except BaseException as error:
            if _is_oom(error, torch):
                raise ConfigError(f"the model's weights do not fit on {device} ({_first_line(error)}); use a smaller "
                                  "config or a GPU with more memory") from None
            raise
        model.eval()
        model.requires_grad_(False)
        return cls(settings, torch, model, config, say)

    def describe(self) -> dict[str, Any]:
        """Model facts for the host description."""
        params = sum(p.numel() for p in self.model.parameters())
        return {"config": str(self.settings.config_path), "model_type": getattr(self.model.config, "model_type", None),
                "dtype": self.settings.dtype, "parameters": params,
                "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
                "experts_implementation": getattr(self.model.config, "_experts_implementation", None),
                "decode_mode": self.decode_mode, "cuda_graph_failure": self.graph_failure}

    def free_memory_bytes(self) -> float:
        """Free device memory now (CUDA: the driver's figure; CPU: available RAM). Units: B."""
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()  # what the allocator keeps from building the model is free too
            free, _total = self.torch.cuda.mem_get_info(self.device)
            return float(free)
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))

    # --- Bench -----------------------------------------------------------------

    def prepare(self, batch: int) -> None:
        torch, s = self.torch, self.settings
        try:
            from transformers import StaticCache

            self.cache = StaticCache(config=self.model.config, max_cache_len=s.cache_tokens)
            self._check_rewindable()
            vocab = int(self.model.config.get_text_config().vocab_size)
            self.prompt_ids = torch.randint(0, vocab, (batch, s.prompt_tokens), device=self.device,
                                            generator=self._generator)
            self.decode_ids = torch.randint(0, vocab, (s.decode_steps, batch, 1), device=self.device,
                                            generator=self._generator)
            self.batch = batch
        except BaseException as error:
            self._raise_if_oom(error)
            raise

    def _check_rewindable(self) -> None:
        layers = getattr(self.cache, "layers", None)
        if not layers or not all(isinstance(getattr(layer, "cumulative_length", None), self.torch.Tensor)
                                 for layer in layers):
            import transformers

            raise ConfigError(f"transformers {transformers.__version__}'s StaticCache keeps its position elsewhere; "
                              "install the tested version: pip install 'pals[probe]'")

    def _rewind(self, length: int) -> None:
        for layer in self.cache.layers:
            layer.cumulative_length.fill_(length)

    def _forward(self, ids: Any) -> Any:
        return self.model(input_ids=ids, past_key_values=self.cache, use_cache=True, logits_to_keep=1)

    def prefill(self) -> None:
        try:
            with self.torch.inference_mode():
                self._rewind(0)
                self._forward(self.prompt_ids)
        except BaseException as error:
            self._raise_if_oom(error)
            raise

    def setup_decode(self) -> None:
        if not (self.graphs_wanted and self.graph is None):
            return
        try:
            with self.torch.inference_mode():
                self._capture()
        except BaseException as error:
            self._raise_if_oom(error)
            raise

    def decode(self) -> None:
        try:
            with self.torch.inference_mode():
                self._rewind(self.settings.prompt_tokens)
                for step in range(self.settings.decode_steps):
                    if self.graph is not None:
                        self.graph_ids.copy_(self.decode_ids[step])
                        self.graph.replay()
                    else:
                        self._forward(self.decode_ids[step])
        except BaseException as error:
            self._raise_if_oom(error)
            raise

    def _capture(self) -> None:
        """Capture one decode step (warm-up on a side stream first, as torch.cuda.graph asks)."""
        torch = self.torch
        ids = self.decode_ids[0].clone()
        try:
            stream = torch.cuda.Stream(device=self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._rewind(self.settings.prompt_tokens)
                    self._forward(ids)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            self._rewind(self.settings.prompt_tokens)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._forward(ids)
            torch.cuda.synchronize(self.device)
        except Exception as error:  # not BaseException: Ctrl-C must stop the run, not disable graphs
            if _is_oom(error, torch):
                raise
            self._give_up_graphs(error)
            return
        self.graph, self.graph_ids = graph, ids

    def _give_up_graphs(self, error: BaseException) -> None:
        self.graphs_wanted = False
        self.decode_mode = "eager"
        self.graph_failure = f"{type(error).__name__}: {_first_line(error)}"
        try:
            self.torch.cuda.synchronize(self.device)
        except Exception as broken:
            raise PalsError(f"the CUDA context broke after a failed graph capture ({_first_line(broken)}); rerun "
                            "with --cuda-graphs off") from None
        self.say(f"note: decode runs eagerly: CUDA graph capture failed ({self.graph_failure})")

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def release(self) -> None:
        self._clear()
        if self.device.type == "cuda":
            self.torch.cuda.empty_cache()

    def _raise_if_oom(self, error: BaseException) -> None:
        if _is_oom(error, self.torch):
            self.release()
            raise BenchOutOfMemory(_first_line(error)) from None


def _attention_implementation(say: Callable[[str], None]) -> str:
    """`pals_probe` (decode reads each KV head once: pals.probe.attention), or transformers' sdpa if this
    transformers cannot register it (noted: large-batch decode then copies the KV cache per query head)."""
    try:
        from pals.probe.attention import register

        return register()
    except (ImportError, AttributeError) as error:
        say(f"note: using transformers' sdpa attention ({_first_line(error)}): decode at large batch will copy "
            "the KV cache once per query head")
        return "sdpa"

