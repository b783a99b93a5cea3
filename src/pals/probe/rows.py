"""From what the probe timed to the rows `pals calibrate` reads.

One `Measurement` per (power cap, batch): a prefill of batch x prompt tokens and a run of single-token decode
steps at that batch from a KV cache of `prompt` tokens, each timed over a window of repeats with the GPU's
energy counter read around it.

Each becomes one row of a plain calibration CSV (`pals.calibration.points`) with `batching=static`: that is
exactly what the simulator's `static_batch` estimate computes (one prefill of B x P tokens, then O - 1 decode
steps at batch B with the context growing from P), so `pals calibrate` simulates the same work that ran:

- mean_prompt_tokens = P; mean_output_tokens = O = decode_steps + 1 (the prefill yields the first token);
- ttft_p50_s = one prefill's time; tpot_p50_s = the mean decode step's time;
- throughput_tps = B x O / (prefill + decode_steps x step);
- gpu_power_w = (prefill energy + decode_steps x step energy) / (prefill + decode_steps x step): the mean power
  of that static batch, composed from the two windows as the simulator composes it;
- prefill_power_w = the prefill window's mean power; decode_power_w = the decode window's (calibrate fits both,
  the decode's against the simulator's pure-decode steps at the same batch and cap).

Extra columns (calibrate ignores them) say how each value was taken: repeats, the decode mode (CUDA graph or
eager), where energy came from (`nvml-energy`, `power-samples`, or `test-double`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from pals.core.io import atomic_write_text

COLUMNS: tuple[str, ...] = (
    "model", "gpu", "num_gpus", "tp", "ep", "power_cap_w", "batch_cap", "mean_prompt_tokens", "mean_output_tokens",
    "batching", "engine", "source", "throughput_tps", "gpu_power_w", "tpot_p50_s", "ttft_p50_s", "prefill_power_w",
    "decode_power_w", "power_read_w", "prefill_repeats", "decode_repeats", "prefill_mode", "decode_mode",
    "energy_source", "device", "note",
)
"""Columns of the probe's CSV: `pals calibrate`'s (points.py) first, through decode_power_w, then the probe's own."""
SOURCE = "pals-probe"
"""The `source` of every probe row."""


@dataclass(frozen=True)
class Measurement:
    """What one (cap, batch) point measured."""

    power_cap_w: float
    """The limit in force while measuring (read back from the GPU). Units: W."""
    batch: int
    """Sequences in the batch."""
    prompt_tokens: int
    """Prompt length of every sequence. Units: tokens."""
    decode_steps: int
    """Decode steps of one static batch. Units: steps."""
    prefill_s: float
    """One prefill of batch x prompt tokens (window time / repeats). Units: s."""
    prefill_energy_j: float
    """GPU energy of one prefill. Units: J."""
    prefill_repeats: int
    """Prefills in the timed window."""
    decode_step_s: float
    """One decode step at this batch (window time / steps run). Units: s."""
    decode_step_energy_j: float
    """GPU energy of one decode step. Units: J."""
    decode_repeats: int
    """Runs of `decode_steps` steps in the timed window."""
    decode_mode: str
    """'cudagraph' or 'eager'."""
    prefill_mode: str = "eager"
    """How the prefill ran (always eager: large prefills are GPU-bound; see docs/probe.md)."""
    power_read_w: float = math.nan
    """The backend's power reading at the end of the decode window (NVML: its ~1 s average). Units: W."""

    @property
    def output_tokens(self) -> int:
        return self.decode_steps + 1

    @property
    def static_batch_s(self) -> float:
        """One static batch: the prefill and every decode step. Units: s."""
        return self.prefill_s + self.decode_steps * self.decode_step_s

    @property
    def throughput_tps(self) -> float:
        return self.batch * self.output_tokens / self.static_batch_s

    @property
    def gpu_power_w(self) -> float:
        return (self.prefill_energy_j + self.decode_steps * self.decode_step_energy_j) / self.static_batch_s

    @property
    def prefill_power_w(self) -> float:
        return self.prefill_energy_j / self.prefill_s

    @property
    def decode_power_w(self) -> float:
        return self.decode_step_energy_j / self.decode_step_s


@dataclass(frozen=True)
class RowContext:
    """What every row of one probe run shares."""

    model: str
    """The model as calibrate resolves it (a shipped name, or a config.json path relative to the CSV)."""
    gpu: str
    """GPU preset name ('' when no preset matches: calibrate's --gpu then names it)."""
    engine: str
    """The stack measured, e.g. 'hf-transformers-5.19.0-cudagraph' (calibrate can fit overheads per engine)."""
    energy_source: str
    """'nvml-energy', 'power-samples' or 'test-double'."""
    device: str
    """'cuda' or 'cpu'."""
    note: str = ""
    """Free text carried on every row (e.g. that power comes from the GPU test double)."""


def to_row(m: Measurement, ctx: RowContext) -> dict[str, object]:
    """One calibration row (see the module docstring for the mapping)."""
    return {
        "model": ctx.model, "gpu": ctx.gpu, "num_gpus": 1, "tp": 1, "ep": 1,
        "power_cap_w": round(m.power_cap_w, 3), "batch_cap": m.batch,
        "mean_prompt_tokens": m.prompt_tokens, "mean_output_tokens": m.output_tokens,
        "batching": "static", "engine": f"{ctx.engine}-{m.decode_mode}", "source": SOURCE,
        "throughput_tps": _g(m.throughput_tps), "gpu_power_w": _g(m.gpu_power_w),
        "tpot_p50_s": _g(m.decode_step_s), "ttft_p50_s": _g(m.prefill_s), "prefill_power_w": _g(m.prefill_power_w),
        "decode_power_w": _g(m.decode_power_w), "power_read_w": _g(m.power_read_w),
        "prefill_repeats": m.prefill_repeats, "decode_repeats": m.decode_repeats,
        "prefill_mode": m.prefill_mode, "decode_mode": m.decode_mode,
        "energy_source": ctx.energy_source, "device": ctx.device, "note": ctx.note,
    }


def _g(value: float) -> str:
    """Six significant digits; empty for NaN (calibrate reads an empty cell as 'not measured')."""
    return "" if not math.isfinite(value) else f"{value:.6g}"


def csv_text(measurements: list[Measurement], ctx: RowContext) -> str:
    """The whole CSV (header and one row per measurement)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for m in measurements:
        writer.writerow(to_row(m, ctx))
    return buffer.getvalue()


def write_csv(path: str | Path, measurements: list[Measurement], ctx: RowContext) -> None:
    """Write the CSV atomically (a killed probe never leaves half a file)."""
    atomic_write_text(path, csv_text(measurements, ctx))


def results_table(measurements: list[Measurement]) -> str:
    """A fixed-width table of what was measured (printed after the run)."""
    lines = [f"{'cap W':>6} {'batch':>5} {'prefill s':>10} {'prefill W':>9} {'TPOT ms':>8} {'decode W':>8} "
             f"{'tok/s':>9} {'mean W':>7} {'decode':>9}"]
    for m in measurements:
        lines.append(f"{m.power_cap_w:>6.0f} {m.batch:>5d} {m.prefill_s:>10.4f} {m.prefill_power_w:>9.1f} "
                     f"{1e3 * m.decode_step_s:>8.2f} {m.decode_power_w:>8.1f} {m.throughput_tps:>9.1f} "
                     f"{m.gpu_power_w:>7.1f} {m.decode_mode:>9}")
    return "\n".join(lines)
