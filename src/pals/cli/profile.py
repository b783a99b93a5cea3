"""`pals profile`: measure a power cap x batch cap grid and write a profile.

The same profiler runs on the simulated node (`--node sim`, default) and on a
real vLLM node (`--node vllm --url URL`); it only talks to the `Node` protocol.
Points are written as they finish and a rerun resumes where a killed run stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import sys
from dataclasses import dataclass
from typing import Any

from pals.core.paper import PAPER_GPU
from pals.cli._common import add_command, int_list, positive_float, positive_int
from pals.errors import ConfigError
from pals.node.gpu import BACKEND_KINDS

DEFAULT_PROMPT_TOKENS = 1000.0
DEFAULT_OUTPUT_TOKENS = 200.0
VLLM_PROMPT_TOKENS = 256.0
VLLM_OUTPUT_TOKENS = 64.0
"""Mean lengths the load generator offers a real vLLM node when none are given (small test models)."""

DESCRIPTION = """\
Measure every (power cap, batch cap) point of a grid on a node and write a
profile (CSV with a '# pals-profile v1' metadata line) for `pals fit`.

For each point: apply it, wait --warmup-s or until a mean request lifetime has
passed, whichever is longer, and measure a window of --window-s or one lifetime,
whichever is longer (throughput from the generated-token counter, GPU power from
the energy counters, node power when the node reports it, TTFT/TPOT percentiles). Each finished point is saved
at once; rerunning the same command resumes (use --fresh to start over).

Examples:
  pals profile --model Mixtral-8x7B --tp 2 --out mixtral.csv
  pals profile --model OLMoE-1B-7B --rate 4 --caps 150,250,400 --batches 8,64 --out olmoe.csv
  pals profile --model config.json --gpu H100-SXM --num-gpus 1 --batches 8,64,256,1024 --out h100.csv
  pals profile --model Llama-3.1-8B.json --gpu H100-SXM --physics h100-physics.json --out h100.csv
  pals profile --node vllm --url http://localhost:8000 --out real.csv
  pals profile --node vllm --url http://localhost:8000 --gpu-backend nvml --max-output-tokens 256 --out real.csv
"""


def nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text!r}")
    return value


def positive_float_list(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated watts, got {text!r}") from None
    if not values or any(not (math.isfinite(v) and v > 0) for v in values):
        raise argparse.ArgumentTypeError(f"expected positive watts separated by commas, got {text!r}")
    return values


def positive_int_list(text: str) -> list[int]:
    values = int_list(text)
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected integers >= 1 separated by commas, got {text!r}")
    return values


def batch_cap_list(text: str) -> list[int]:
    """'8,64,256' -> [8, 64, 256]: batch caps of 1 to `MAX_BATCH_CAP`."""
    from pals.model.profiler import MAX_BATCH_CAP

    values = positive_int_list(text)
    too_large = [v for v in values if v > MAX_BATCH_CAP]
    if too_large:
        raise argparse.ArgumentTypeError(
            f"batch cap {too_large[0]} is above {MAX_BATCH_CAP}, the largest PALS supports "
            f"(vLLM's max_num_seqs on H100/H200); pass batch caps of 1-{MAX_BATCH_CAP}")
    return values


def batch_cap(text: str) -> int:
    """One batch cap of 1 to `MAX_BATCH_CAP` (--max-num-seqs)."""
    values = batch_cap_list(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"expected one integer, got {text!r}")
    return values[0]


def add_deployment_arguments(parser: argparse.ArgumentParser, model_required: bool) -> None:
    """Flags shared by `pals profile` and `pals sweep`: deployment, grid, load, timing."""
    group = parser.add_argument_group("deployment (simulated node)")
    group.add_argument(
        "--model",
        required=model_required,
        help="LLM preset (e.g. Mixtral-8x7B, OLMoE-1B-7B, Llama-2-7B) or a Hugging Face config.json path",
    )
    group.add_argument("--gpu", default=PAPER_GPU, help=f"GPU preset (default: {PAPER_GPU})")
    group.add_argument("--num-gpus", metavar="N", type=positive_int, default=4, help="GPUs in the node (default: 4)")
    group.add_argument(
        "--tp", metavar="N",
        type=positive_int,
        default=None,
        help="tensor-parallel degree per engine replica (default: the smallest of 1, 2, 4 that fits)",
    )
    group.add_argument("--ep", metavar="N", type=positive_int, default=1, help="expert-parallel degree (default: 1)")
    group.add_argument(
        "--max-num-seqs", metavar="N", type=batch_cap, default=None,
        help="the simulated engine's max_num_seqs, the largest batch cap it accepts (1-1024; default: the "
        "largest batch cap of the grid)",
    )
    group.add_argument(
        "--physics", metavar="PHYSICS.json", default=None,
        help="step physics fitted by `pals calibrate` for --gpu (default: the GPU preset's)",
    )

    grid = parser.add_argument_group("grid")
    grid.add_argument(
        "--caps", metavar="W[,W...]",
        type=positive_float_list,
        default=None,
        help="per-GPU power caps in W, comma-separated (default: 150-400 step 50, within the GPU's range)",
    )
    grid.add_argument(
        "--batches", metavar="B[,B...]",
        type=batch_cap_list,
        default=None,
        help="batch caps (max running sequences per replica, 1-1024), comma-separated (default: the paper's "
        "1,4,8,16,32,64, extended by powers of two up to the GPU's grid maximum (256 on H100/H200) while the "
        "sequences fit the KV cache)",
    )

    load = parser.add_argument_group("load")
    exclusive = load.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--rate", metavar="RPS",
        type=positive_float,
        default=None,
        help="fixed Poisson offered load in requests/s (default: saturating, requests always waiting)",
    )
    exclusive.add_argument(
        "--trace", metavar="conv|code|CSV",
        default=None,
        help="replay a request trace in a loop: conv, code (shipped Azure 2023 traces) or a CSV path",
    )
    load.add_argument(
        "--rate-scale", metavar="X",
        type=positive_float,
        default=1.0,
        help="with --trace: speed-up of the trace's arrivals (>1 = more load; default 1)",
    )
    load.add_argument(
        "--prompt-tokens", metavar="TOKENS",
        type=positive_float,
        default=None,
        help=f"mean prompt length in tokens, log-normal (default: {DEFAULT_PROMPT_TOKENS:g})",
    )
    load.add_argument(
        "--output-tokens", metavar="TOKENS",
        type=positive_float,
        default=None,
        help=f"mean output length in tokens, log-normal (default: {DEFAULT_OUTPUT_TOKENS:g})",
    )

    timing = parser.add_argument_group("timing and randomness")
    timing.add_argument(
        "--warmup-s", metavar="S", type=nonneg_float, default=10.0,
        help="settling time after each change, s (default: 10; large batch caps fill slowly: at batch 1024 "
        "allow 10 s or more)"
    )
    timing.add_argument(
        "--window-s", metavar="S", type=positive_float, default=30.0, help="measurement window per point, s (default: 30)"
    )
    timing.add_argument("--seed", metavar="SEED", type=int, default=0, help="seed of the simulated load and telemetry noise (default: 0)")
    timing.add_argument(
        "--no-noise", action="store_true", help="exact simulated telemetry (no sensor noise, no metrics lag)"
    )
    timing.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_parser(subparsers) -> None:
    parser = add_command(
        subparsers,
        "profile",
        "measure a power cap x batch cap grid and write a profile",
        DESCRIPTION,
        run,
    )
    parser.add_argument(
        "--node", choices=("sim", "vllm"), default="sim", help="node to profile: simulated (default) or real vLLM"
    )
    real = parser.add_argument_group("real vLLM node (only with --node vllm)")
    real.add_argument("--url", default=None, metavar="URL", help="the vLLM server URL, e.g. http://localhost:8000")
    real.add_argument(
        "--gpu-backend", choices=BACKEND_KINDS, default=None,
        help="how to read and set the GPUs' power: zeus, nvml, simulated (the GPU test double, preset --gpu x "
        "--num-gpus) or auto (Zeus, then raw NVML) (default: $PALS_GPU_BACKEND, else auto)",
    )
    real.add_argument(
        "--cap-channel", metavar="PATH", default=None,
        help="file through which the server's PALS scheduler reads the batch cap "
        "(default: $PALS_CAP_CHANNEL, else the path `pals serve` uses for the URL's port)",
    )
    real.add_argument(
        "--max-prompt-tokens", metavar="TOKENS", type=positive_int, default=None,
        help="clip generated prompts to this many tokens (default: half the served model's context length)",
    )
    real.add_argument(
        "--max-output-tokens", metavar="TOKENS", type=positive_int, default=None,
        help="clip requested outputs to this many tokens (default: half the served model's context length)",
    )
    add_deployment_arguments(parser, model_required=False)
    parser.add_argument("--out", required=True, metavar="PROFILE.csv", help="profile file to write (CSV); an existing one is resumed")
    parser.add_argument("--fresh", action="store_true", help="replace an existing --out instead of resuming it")


VLLM_ONLY_FLAGS = {"url": "--url", "gpu_backend": "--gpu-backend", "cap_channel": "--cap-channel",
                   "max_prompt_tokens": "--max-prompt-tokens", "max_output_tokens": "--max-output-tokens"}
"""Attributes that apply only to the real node (`pals.runtime.profiling.VllmProfilingOptions`), with their flags."""
SIM_ONLY_FLAGS = {"physics": "--physics", "max_num_seqs": "--max-num-seqs"}
"""Attributes that apply only to the simulated node (a real server has its own physics and max_num_seqs)."""


@dataclass(frozen=True)
class NodeUnderTest:
    """A node ready to profile, with what the profile records about it."""

    node: Any
    """The `Node` (simulated or real)."""
    clock: Any
    """The clock it runs on."""
    features: Any
    """The offered workload's `WorkloadDescriptor` (None: record what the node observes)."""
    metadata_extra: dict[str, Any]
    """More profile metadata (seed, load, physics, ...)."""
    grid: Any = None
    """The `ProfileGrid` to measure; None: --caps/--batches or the paper's grid within the node's ranges."""


def smallest_tp(model: str, gpu: str, num_gpus: int) -> int:
    """The smallest TP of 1, 2, 4, 8 (dividing num_gpus) at which the model fits the GPUs' memory."""
    from pals.runtime.deployment import fits_node

    for tp in (1, 2, 4, 8):
        if tp <= num_gpus and num_gpus % tp == 0 and fits_node(model, gpu, tp, num_gpus):
            return tp
    raise ConfigError(f"{model} does not fit on {num_gpus} x {gpu} at any TP; use more GPUs or a larger GPU")


def load_from_args(args, default_prompt_tokens: float, default_output_tokens: float):
    """The `LoadSpec` of --trace / --rate (else saturating), lengths log-normal around the given means."""
    from pals.runtime.load import LoadSpec, LognormalLengths

    if args.trace is not None:
        return LoadSpec(trace=args.trace, rate_scale=args.rate_scale, seed=args.seed)
    lengths = LognormalLengths(args.prompt_tokens or default_prompt_tokens, args.output_tokens or default_output_tokens)
    if args.rate is not None:
        return LoadSpec(rate_rps=args.rate, lengths=lengths, seed=args.seed)
    return LoadSpec(saturate=True, lengths=lengths, seed=args.seed)


def build_sim(args) -> NodeUnderTest:
    """The simulated node (with --physics and --max-num-seqs), its grid, workload descriptor and metadata."""
    from pals.core.workload import WorkloadDescriptor
    from pals.runtime.deployment import Deployment
    from pals.runtime.load import make_workload
    from pals.sim.node import NoiseConfig, SimNode
    from pals.sim.physics import load_physics

    if args.model is None:
        raise ConfigError("--model is required with the simulated node (e.g. --model Mixtral-8x7B)")
    tp = args.tp if args.tp is not None else smallest_tp(args.model, args.gpu, args.num_gpus)
    spec = Deployment(args.model, args.gpu, num_gpus=args.num_gpus, tp=tp, ep=args.ep).sim_spec()
    if args.physics is not None:
        spec = dataclasses.replace(spec, params=load_physics(args.physics, spec.gpu_spec))
    if args.trace is not None and (args.prompt_tokens or args.output_tokens):
        raise ConfigError("--prompt-tokens/--output-tokens do not apply to --trace (the trace has its lengths)")
    load = load_from_args(args, DEFAULT_PROMPT_TOKENS, DEFAULT_OUTPUT_TOKENS)
    workload = make_workload(load)
    descriptor = workload.descriptor
    features = WorkloadDescriptor(
        mean_prompt_tokens=float(descriptor.mean_prompt_tokens),
        mean_output_tokens=float(descriptor.mean_output_tokens),
        arrival_rate_rps=None if descriptor.arrival_rate_rps is None else float(descriptor.arrival_rate_rps),
    )
    grid = sim_grid(args, spec, features)
    largest = max(grid.batch_caps)
    max_num_seqs = args.max_num_seqs if args.max_num_seqs is not None else largest
    if max_num_seqs < largest:
        raise ConfigError(f"--max-num-seqs {max_num_seqs} is below the grid's largest batch cap {largest}; "
                          f"raise it to at least {largest} or drop the larger batch caps")
    spec = dataclasses.replace(spec, batch_cap_max=max_num_seqs)
    noise = NoiseConfig.none() if args.no_noise else NoiseConfig()
    node = SimNode(spec, workload, seed=args.seed, noise=noise)
    extra = {"seed": args.seed, "load": load.label(), "noise": "none" if args.no_noise else "default",
             "max_num_seqs": max_num_seqs, "physics": "preset" if args.physics is None else str(args.physics)}
    return NodeUnderTest(node, node.clock, features, extra, grid)


def sim_grid(args, spec, features) -> Any:
    """--caps/--batches, else the defaults for this simulated deployment.

    Caps: the paper's 150-400 W in 50 W steps, or 6 evenly spaced caps on another GPU's range
    (`paper_grid_within`). Batches: `pals.sim.grid.default_batch_grid`: the paper's 1-64, extended by
    powers of two up to the GPU's `batch_grid_max` (256 on H100/H200) while the sequences fit one
    replica's KV cache at the mean context (prompt + half the output).
    """
    from pals.model.profiler import MAX_BATCH_CAP, ProfileGrid, paper_grid_within
    from pals.sim.grid import default_batch_grid

    gpu = spec.gpu_spec
    caps = args.caps or paper_grid_within(gpu.power_limit_min_w, gpu.power_limit_max_w, MAX_BATCH_CAP).power_caps_w
    if args.batches:
        batches = args.batches
    else:
        kv_tokens = spec.step_model().kv_cache_tokens(spec.gpu_memory_utilization)
        mean_context = features.mean_prompt_tokens + features.mean_output_tokens / 2
        batches = default_batch_grid(gpu, kv_tokens, mean_context)
    return ProfileGrid(tuple(caps), tuple(batches))


def build_vllm(args) -> NodeUnderTest:
    """A real vLLM node with a load generator (`pals.runtime.profiling.connect_for_profiling`)."""
    from pals.core.workload import WorkloadDescriptor

    used = [flag for attr, flag in SIM_ONLY_FLAGS.items() if getattr(args, attr, None) is not None]
    if used:
        verb, pronoun = ("applies", "it") if len(used) == 1 else ("apply", "them")
        raise ConfigError(f"{', '.join(used)} {verb} only to the simulated node (a real server has its own "
                          f"physics and max_num_seqs, set when it starts); drop {pronoun} with --node vllm")

    if not args.url:
        raise ConfigError("--node vllm needs --url, the vLLM server's address (e.g. --url http://localhost:8000)")
    try:
        # The vLLM node support is optional: say so in one line when it cannot be imported.
        importlib.import_module("pals.node.vllm_node")
        from pals.runtime.profiling import VllmProfilingOptions, connect_for_profiling
    except ImportError as error:
        raise ConfigError(
            f"--node vllm needs the vLLM node, pals.node.vllm_node, which is not available ({error}); "
            "use --node sim or install the vLLM node support"
        ) from None
    options = VllmProfilingOptions(
        gpu_backend=args.gpu_backend, sim_gpu=args.gpu, sim_gpus=args.num_gpus, cap_channel=args.cap_channel,
        tp=args.tp or 1, max_prompt_tokens=args.max_prompt_tokens, max_output_tokens=args.max_output_tokens,
        seed=args.seed,
    )
    node = connect_for_profiling(args.url, options, load_from_args(args, VLLM_PROMPT_TOKENS, VLLM_OUTPUT_TOKENS))
    features = None
    if args.prompt_tokens and args.output_tokens:
        # The load generator is outside PALS: record what the user says it offers.
        features = WorkloadDescriptor(args.prompt_tokens, args.output_tokens, args.rate)
    return NodeUnderTest(node, node.clock, features, {"url": args.url})


def grid_from_args(args, constraints):
    """The grid from --caps/--batches, or the paper's grid within the node's ranges."""
    from pals.model.profiler import ProfileGrid, paper_grid_within

    default = paper_grid_within(constraints.power_cap_min_w, constraints.power_cap_max_w, constraints.batch_cap_max)
    return ProfileGrid(
        tuple(args.caps) if args.caps else default.power_caps_w,
        tuple(args.batches) if args.batches else default.batch_caps,
    )


def format_table(profile) -> str:
    """A fixed-width table of a profile's rows (cap, batch, throughput, power, tokens/J)."""
    header = (
        f"{'cap W':>6} {'batch':>5} {'tokens/s':>10} {'GPU W':>7} {'node W':>7} {'tok/J':>7} {'tok/J GPU':>9}"
    )
    lines = [header, "-" * len(header)]
    for row in sorted(profile.rows, key=lambda r: (r["power_cap_w"], r["batch_cap"])):
        node_w = row["node_power_w"]
        lines.append(
            f"{row['power_cap_w']:>6g} {int(row['batch_cap']):>5d} {row['throughput_tps']:>10.1f} "
            f"{row['gpu_power_w']:>7.1f} {'-' if node_w != node_w else f'{node_w:.0f}':>7} "
            f"{row['tokens_per_joule']:>7.3f} {row['tokens_per_joule_gpu']:>9.3f}"
        )
    return "\n".join(lines)


def measure_grid(args, setup: NodeUnderTest, node_kind: str, resume: bool, metadata_extra: dict[str, Any] | None = None):
    """Profile the node's grid (`setup.grid`, else --caps/--batches or the paper's within the node's ranges) into --out.

    Args:
        args: Parsed deployment, grid and timing arguments (`add_deployment_arguments`) plus --out.
        setup: What `build_sim` or `build_vllm` returns.
        node_kind: "sim" or "vllm", recorded in the profile.
        resume: Keep the points already in --out.
        metadata_extra: More metadata, over `setup.metadata_extra`.

    Returns:
        The profile written.
    """
    from pals.model.profiler import run_profile

    return run_profile(
        setup.node,
        setup.clock,
        setup.grid if setup.grid is not None else grid_from_args(args, setup.node.constraints()),
        warmup_s=args.warmup_s,
        window_s=args.window_s,
        out_path=args.out,
        resume=resume,
        progress=not args.no_progress,
        workload=setup.features,
        node_kind=node_kind,
        metadata_extra={**setup.metadata_extra, **(metadata_extra or {})},
    )


def run(args) -> int:
    if args.node == "vllm":
        setup = build_vllm(args)
    else:
        used = [flag for attr, flag in VLLM_ONLY_FLAGS.items() if getattr(args, attr, None) is not None]
        if used:
            verb, pronoun = ("applies", "it") if len(used) == 1 else ("apply", "them")
            raise ConfigError(f"{', '.join(used)} {verb} only to --node vllm; add --node vllm --url URL or drop {pronoun}")
        setup = build_sim(args)
    profile = measure_grid(args, setup, args.node, resume=not args.fresh)
    print(format_table(profile))
    print(f"wrote {len(profile)} points to {args.out}", file=sys.stderr)
    return 0
