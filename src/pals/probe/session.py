"""One `pals probe` run end to end: checks, model, caps, measurements, files, tables.

Order matters for safety and for clear errors: flags are validated and torch is imported first (a missing
dependency is one line, before any hardware is touched); the GPU is opened and described; the model is built;
only then are caps written (under the guard, inside `run_probe`), and the limit is restored before any file
is written or any table printed.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from pals.calibration.points import shipped_dir
from pals.errors import ConfigError, PalsError
from pals.node.gpu import open_gpus
from pals.node.gpu_backend import NO_PERMISSION_FIX, GpuBackend
from pals.probe import host
from pals.probe.measure import EnergyMeter
from pals.probe.plan import MemoryShape, ProbeSettings, batches_that_fit, plan_caps
from pals.probe.rows import RowContext, results_table, write_csv
from pals.probe.runner import ProbeRun, run_probe
from pals.sim.hardware import get_gpu
from pals.sim.llm import get_llm
from pals.sim.physics import read_physics_file

TEST_DOUBLE_NOTE = ("GPU power and energy come from the simulated GPU TEST DOUBLE, not a measurement; timings are "
                    "of this CPU")


@dataclass(frozen=True)
class ProbeOptions:
    """Everything about a probe run that is not the measurement itself."""

    gpu_backend: str = "auto"
    """'auto', 'zeus', 'nvml' or 'simulated' (the GPU test double, with --device cpu)."""
    sim_gpu: str = "H100-SXM"
    """Test double: GPU preset it plays."""
    sim_state: str | None = None
    """Test double: its driver-state file."""
    sim_no_permission: bool = False
    """Test double: play a process that may not set power limits."""
    gpu_preset: str | None = None
    """The simulator preset of this GPU (None: from the driver's GPU name)."""
    model_name: str | None = None
    """What the CSV's model column says (None: a shipped name, or the config's folder relative to the CSV)."""
    state_path: str | None = None
    """The power-limit guard's state file (None: PALS's state dir)."""
    host_json: str | None = None
    """Where the host description goes (None: <out>.host.json)."""
    physics: str | None = None
    """Physics file for the measured-vs-simulated table (None: the preset's)."""
    compare: bool = True
    """Print the measured-vs-simulated table."""
    progress: bool = True
    """Show a progress bar."""


def check_flags(settings: ProbeSettings, options: ProbeOptions) -> None:
    """What can be checked before torch is imported or a GPU opened (one ConfigError line each)."""
    if (options.gpu_backend == "simulated") != (settings.device == "cpu"):
        raise ConfigError("--device cpu measures no GPU and goes with --gpu-backend simulated (the GPU test double), "
                          "and the test double only with --device cpu")
    if not host.config_file(settings.config_path).is_file():
        raise ConfigError(f"--config {settings.config_path}: no config.json there; give a Hugging Face config.json "
                          "(or its folder)")
    get_llm(str(host.config_file(settings.config_path)))  # the simulator must know it, or calibrate cannot use it
    if options.gpu_preset:
        get_gpu(options.gpu_preset)
    if options.physics:
        read_physics_file(options.physics)


def open_backend(settings: ProbeSettings, options: ProbeOptions) -> GpuBackend:
    """The GPU layer's backend for this run (the test double with --device cpu)."""
    if options.gpu_backend == "simulated":
        return open_gpus("simulated", sim_gpus=settings.gpu_index + 1, sim_gpu=options.sim_gpu,
                         driver_state_path=options.sim_state, settable=not options.sim_no_permission)
    gpus = open_gpus(options.gpu_backend)
    if settings.gpu_index >= gpus.count():
        raise ConfigError(f"--gpu-index {settings.gpu_index} does not exist; this host has GPUs 0-{gpus.count() - 1}")
    return gpus


def _check_same_gpu(bench: Any, gpu: dict[str, Any], say: Callable[[str], None]) -> dict[str, Any]:
    """torch's device facts; a note if its UUID is not the GPU layer's (then power is read from another GPU)."""
    if bench.device.type != "cuda":
        return {"device": "cpu", "torch": bench.torch.__version__}
    props = bench.torch.cuda.get_device_properties(bench.device)
    info = {"device": str(bench.device), "torch": bench.torch.__version__, "cuda": bench.torch.version.cuda,
            "name": props.name, "total_memory_bytes": props.total_memory,
            "multi_processor_count": props.multi_processor_count, "capability": f"{props.major}.{props.minor}"}
    torch_uuid = str(getattr(props, "uuid", "") or "")
    if torch_uuid and torch_uuid.replace("GPU-", "") not in gpu["uuid"]:
        say(f"note: torch's {bench.device} ({torch_uuid}) is not the GPU the power is read from ({gpu['uuid']}); "
            "set CUDA_VISIBLE_DEVICES to one GPU")
    return info


def run_session(settings: ProbeSettings, options: ProbeOptions, argv: list[str],
                say: Callable[[str], None] = print) -> int:
    """The whole run (see the module docstring). Returns the exit status."""
    from pals.probe.bench import TorchBench, require_torch

    t_start = time.monotonic()
    check_flags(settings, options)
    require_torch()  # one clear line when missing, before the GPU is touched
    t_import = time.monotonic()
    llm = get_llm(str(host.config_file(settings.config_path)))
    gpus = open_backend(settings, options)
    gpu = host.gpu_description(gpus, settings.gpu_index)
    preset = options.gpu_preset or gpu["preset"]
    if gpu["test_double"]:
        say(f"note: {TEST_DOUBLE_NOTE}")
    say(f"probing {llm.name} ({settings.dtype}) on GPU {settings.gpu_index}: {gpu['name']} (backend "
        f"{gpu['backend']}{', preset ' + preset if preset else ', no simulator preset matches'})")
    bench = TorchBench.build(settings, say=say)
    t_build = time.monotonic()
    torch_info = _check_same_gpu(bench, gpu, say)
    batches, memory_note = batches_that_fit(MemoryShape.from_llm(llm), settings, bench.free_memory_bytes())
    notes = [memory_note] if memory_note else []
    if memory_note:
        say(f"note: {memory_note}")
    plan = plan_caps(settings.caps_w, default_w=gpu["default_power_limit_w"], current_w=gpu["power_limit_w"],
                     range_w=tuple(gpu["power_limit_range_w"]), can_set=gpu["can_set_power_limit"],
                     why_not=NO_PERMISSION_FIX)
    say(f"model built in {t_build - t_import:.1f} s; measuring batches {', '.join(map(str, batches)) or '(none)'} at "
        f"{', '.join(f'{w:g}' for w in plan.caps_w)} W; prompt {settings.prompt_tokens} tokens, "
        f"{settings.decode_steps} decode steps, windows of >= {settings.min_window_s:g} s")
    meter = EnergyMeter(gpus, settings.gpu_index)
    ctx = RowContext(model=options.model_name or host.model_column(settings.config_path, settings.out_path,
                                                                    shipped_dir() / "models"),
                     gpu=preset or "", engine=_engine(bench), energy_source=meter.source, device=settings.device,
                     note=TEST_DOUBLE_NOTE if gpu["test_double"] else "")
    run = ProbeRun()
    bench.say = _writer(options, say)  # the bench's notes (a failed graph capture) must not tear the progress bar
    if batches:
        run = run_probe(settings, gpus, bench, plan, batches, say=bench.say, progress_bar=options.progress,
                        state_path=options.state_path, meter=meter,
                        on_measurement=lambda done: write_csv(settings.out_path, done, ctx))
    t_measure = time.monotonic()
    if run.restored_to_w is not None:
        say(f"power limit of GPU {settings.gpu_index} restored to {run.restored_to_w:g} W")
    notes += run.notes + ([f"decode graphs failed: {bench.graph_failure}"] if bench.graph_failure else [])
    if not run.measurements:
        raise PalsError("nothing was measured (" + ("; ".join(notes) or "no batch fits") + "); nothing written")
    timings = {"import_s": t_import - t_start, "build_s": t_build - t_import, "measure_s": t_measure - t_build,
               "per_cap_s": run.cap_seconds, "total_s": time.monotonic() - t_start}
    host_path = Path(options.host_json) if options.host_json else host.host_path_for(settings.out_path)
    host.write_host_description(host_path, host.host_description(
        gpu=gpu, torch_info=torch_info, model=bench.describe(), settings=_settings_dict(settings),
        caps={"planned_w": list(plan.caps_w), "measured_w": run.caps_measured_w, "restored_to_w": run.restored_to_w},
        notes=notes, timings_s=timings, argv=argv))
    _report(settings, options, run, preset, host_path, timings, say)
    return 0


def _writer(options: ProbeOptions, say: Callable[[str], None]) -> Callable[[str], None]:
    """Notes during the run: through tqdm when its bar is on (so lines do not tear the bar)."""
    if not options.progress:
        return say
    from tqdm import tqdm

    return lambda text: tqdm.write(text, file=sys.stdout)


def _engine(bench: Any) -> str:
    import transformers

    return f"hf-transformers-{transformers.__version__}" + ("-cpu" if bench.device.type == "cpu" else "")


def _settings_dict(settings: ProbeSettings) -> dict[str, Any]:
    data = asdict(settings)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


def _report(settings: ProbeSettings, options: ProbeOptions, run: ProbeRun, preset: str | None, host_path: Path,
            timings: dict[str, Any], say: Callable[[str], None]) -> None:
    say(results_table(run.measurements))
    say(f"timings: torch import {timings['import_s']:.1f} s, model build {timings['build_s']:.1f} s, measurement "
        f"{timings['measure_s']:.1f} s ({', '.join(f'{k} {v:.0f} s' for k, v in timings['per_cap_s'].items())}), "
        f"total {timings['total_s']:.1f} s")
    if options.compare and preset:
        from pals.probe.compare import compare, table_text

        try:
            physics = f"physics {options.physics}" if options.physics else "preset physics"
            say(f"measured vs simulated ({preset}, {physics}):")
            say(table_text(compare(settings.out_path, preset, options.physics)))
        except PalsError as error:
            say(f"note: no measured-vs-simulated table: {error}")
    elif options.compare:
        say("note: no measured-vs-simulated table: no simulator preset matches this GPU (pass --gpu-preset)")
    say(f"wrote {settings.out_path} ({len(run.measurements)} rows) and {host_path}")
    gpu_flag = preset or "GPU"
    say(f"next: pals calibrate {settings.out_path} --gpu {gpu_flag} --per-engine step_overhead_s,kernel_floor_s "
        "--out physics.json")
