"""`pals probe`: measure this GPU with a random-weight model and write a profile `pals calibrate` accepts.

argparse only; the run is `pals.probe.session.run_session`. torch and transformers are imported there, so
`pals probe --help` works without them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pals.cli._common import add_command, positive_float, positive_int

DESCRIPTION = """\
Measure prefill and decode of a RANDOM-WEIGHT model built from a Hugging Face
config.json (transformers; no weights downloaded, nothing fetched) at batch
1-256, reading the GPU's energy counter around every measurement, at several
power caps where this process may set them (saved first and restored on every
exit path; `pals restore` after a crash). Writes a profile `pals calibrate`
accepts (static-batch rows, docs/probe.md) and a JSON host description beside it,
then prints the measurements beside the simulator's estimates.

Needs torch and transformers: pip install 'pals[probe]'.

Examples:
  pals probe --config src/pals/data/measurements/models/Llama-3.1-8B --out h200-llama.csv
  pals probe --config qwen3-moe/config.json --batches 1,8,64,256 --caps 700,450 --out moe.csv
  pals probe --config tiny/config.json --device cpu --gpu-backend simulated --out t.csv   (test double)
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = add_command(subparsers, "probe", "measure this GPU (random-weight model) into a calibration profile",
                         DESCRIPTION, run)
    parser.add_argument("--config", required=True, metavar="CONFIG.json",
                        help="Hugging Face config.json (or its folder)")
    parser.add_argument("--out", required=True, metavar="profile.csv", help="profile CSV to write")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--batches", default="1,2,4,8,16,32,64,128,256", help="batch sizes (default 1,2,...,256)")
    parser.add_argument("--prompt-tokens", type=positive_int, default=512, help="prompt tokens per sequence (512)")
    parser.add_argument("--decode-steps", type=positive_int, default=64, help="decode steps per static batch (64)")
    parser.add_argument("--caps", default="auto", metavar="auto|W,W,...",
                        help="power caps; auto: 100/70/45 %% of the default limit where settable (default auto)")
    parser.add_argument("--gpu-index", type=int, default=0, help="GPU to probe (default 0)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="cuda, or cpu with --gpu-backend simulated (tests)")
    parser.add_argument("--gpu-backend", default="auto", choices=("auto", "zeus", "nvml", "simulated"),
                        help="how power and energy are read (default auto: Zeus, then raw NVML)")
    parser.add_argument("--cuda-graphs", default="auto", choices=("auto", "off"),
                        help="capture the decode step in a CUDA graph (auto: where it works, else eager)")
    parser.add_argument("--min-window-s", type=positive_float, default=1.0,
                        help="shortest timed window per measurement, s (default 1.0: NVML's averaging)")
    parser.add_argument("--settle-s", type=float, default=1.0, help="wait after a cap change, s (default 1.0)")
    parser.add_argument("--time-budget-s", type=positive_float, default=None,
                        help="start no new measurement after this long, s (default: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and tokens")
    parser.add_argument("--gpu-preset", default=None, help="simulator preset of this GPU (default: from its name)")
    parser.add_argument("--model-name", default=None, help="what the CSV's model column says (default: derived)")
    parser.add_argument("--state", default=None, metavar="PATH", help="saved-limits file (default: PALS's state dir)")
    parser.add_argument("--host-json", default=None, metavar="PATH", help="host description (default <out>.host.json)")
    parser.add_argument("--physics", default=None, metavar="physics.json",
                        help="physics file for the measured-vs-simulated table (default: the preset's)")
    parser.add_argument("--no-compare", action="store_true", help="skip the measured-vs-simulated table")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim = parser.add_argument_group("GPU test double (--gpu-backend simulated)")
    sim.add_argument("--sim-gpu", default="H100-SXM", help="preset the test double plays (default H100-SXM)")
    sim.add_argument("--sim-state", default=None, metavar="PATH", help="the test double's driver-state file")
    sim.add_argument("--sim-no-permission", action="store_true", help="the test double refuses power-limit writes")
    return parser


def run(args) -> int:
    from pals.probe.plan import ProbeSettings, parse_batches, parse_caps
    from pals.probe.session import ProbeOptions, run_session

    settings = ProbeSettings(
        config_path=Path(args.config), out_path=Path(args.out), dtype=args.dtype, batches=parse_batches(args.batches),
        prompt_tokens=args.prompt_tokens, decode_steps=args.decode_steps, caps_w=parse_caps(args.caps),
        gpu_index=args.gpu_index, device=args.device, cuda_graphs=args.cuda_graphs, min_window_s=args.min_window_s,
        settle_s=args.settle_s, time_budget_s=args.time_budget_s, seed=args.seed,
    )
    options = ProbeOptions(
        gpu_backend=args.gpu_backend, sim_gpu=args.sim_gpu, sim_state=args.sim_state,
        sim_no_permission=args.sim_no_permission, gpu_preset=args.gpu_preset, model_name=args.model_name,
        state_path=args.state, host_json=args.host_json, physics=args.physics, compare=not args.no_compare,
        progress=not args.no_progress,
    )
    return run_session(settings, options, ["pals", *sys.argv[1:]] if sys.argv else ["pals", "probe"])
