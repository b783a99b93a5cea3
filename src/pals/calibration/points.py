"""Measured points to calibrate against: one configuration, its workload and what was measured.

Input formats (`read_points`):

- a profile as `pals profile` writes it (read through `pals.model.profile.read_profile`);
- a plain CSV with the profile's column names. Required columns: num_gpus, tp, power_cap_w, batch_cap,
  mean_prompt_tokens, mean_output_tokens, throughput_tps, gpu_power_w (a cell may be empty where that
  quantity was not measured, but each row needs at least one measured value), and `model` unless
  `--model` is given. Optional: gpu, ep, tpot_p50_s, ttft_p50_s, source (default: the file's name),
  batching (`continuous`, the default: vLLM under a saturating load; or `static`: one prefill of
  batch x prompt tokens, then decode), engine (the serving stack, for engine parameters fitted per engine;
  default: the source), prefill_power_w (static batches: power during the prefill), decode_power_w (power while
  only decoding at the batch: a static batch's decode steps, as `pals probe` measures them), relative_throughput with
  relative_to_cap_w (throughput over that of the same configuration at another cap: cap tables),
  max_num_batched_tokens, note.

`model` is a preset name, a Hugging Face id of one, a config.json path (relative paths are taken from the
CSV's folder), or a model shipped with the calibration data (`pals/data/measurements/models/NAME`).
Throughput is output tokens/s of the whole deployment (num_gpus GPUs); gpu_power_w is the mean per GPU.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

from pals.errors import ConfigError
from pals.sim.llm import LlmSpec, get_llm

REQUIRED_COLUMNS = ("num_gpus", "tp", "power_cap_w", "batch_cap", "mean_prompt_tokens", "mean_output_tokens",
                    "throughput_tps", "gpu_power_w")
MEASURED = ("throughput_tps", "gpu_power_w", "tpot_p50_s", "ttft_p50_s", "prefill_power_w", "decode_power_w",
            "relative_throughput")
"""The measured quantities a point may carry (NaN: not measured)."""
BATCHING = ("continuous", "static")


@dataclass(frozen=True)
class CalibrationPoint:
    """One measured configuration."""

    source: str
    """Where the measurement comes from (a short key; shipped sources are described in sources.md)."""
    gpu: str
    """GPU preset name."""
    model: str
    """Model as given (preset, config path or shipped model name)."""
    num_gpus: int
    """GPUs of the deployment (replicas = num_gpus / tp)."""
    tp: int
    """Tensor-parallel degree."""
    ep: int
    """Expert-parallel degree."""
    power_cap_w: float
    """Power limit per GPU. Units: W."""
    batch_cap: int
    """Batch cap (max running sequences per replica), or the static batch."""
    prompt_tokens: float
    """Mean prompt length. Units: tokens."""
    output_tokens: float
    """Mean output length. Units: tokens."""
    batching: str = "continuous"
    """'continuous' (vLLM under a saturating load) or 'static' (one prefill, then decode)."""
    engine: str = ""
    """The serving stack measured (e.g. 'vllm-2023-eager'); engine overheads can be fitted per engine. Empty: the
    source's name."""
    max_num_batched_tokens: int | None = None
    """Per-step token budget (None: vLLM's default on the GPU)."""
    throughput_tps: float = math.nan
    """Measured output tokens/s of the deployment (NaN: not measured). Units: tokens/s."""
    gpu_power_w: float = math.nan
    """Measured mean power per GPU. Units: W."""
    tpot_p50_s: float = math.nan
    """Measured median time per output token. Units: s."""
    ttft_p50_s: float = math.nan
    """Measured median time to first token. Units: s."""
    prefill_power_w: float = math.nan
    """Static batches: measured mean power per GPU during the prefill. Units: W."""
    decode_power_w: float = math.nan
    """Measured mean power per GPU while only decoding at `batch_cap` sequences (a static batch's decode steps: the
    probe's decode window). Units: W."""
    relative_throughput: float = math.nan
    """Throughput at this cap over the throughput of the same configuration at `relative_to_cap_w` (cap tables)."""
    relative_to_cap_w: float = math.nan
    """The reference cap of `relative_throughput`. Units: W."""
    note: str = ""
    """Free text (how the value was derived)."""
    base_dir: str = ""
    """Folder relative model paths are resolved against."""

    @property
    def engine_key(self) -> str:
        """What engine-specific parameters are keyed by: `engine`, or the source when empty."""
        return self.engine or self.source

    def measured(self, quantity: str) -> float:
        return float(getattr(self, quantity))

    @property
    def label(self) -> str:
        """A short description for tables."""
        return (f"{self.model_name} TP{self.tp} {self.power_cap_w:g} W b{self.batch_cap} "
                f"{self.prompt_tokens:g}/{self.output_tokens:g}" + (" static" if self.batching == "static" else ""))

    @property
    def model_name(self) -> str:
        return Path(self.model).name if ("/" in self.model or "\\" in self.model) else self.model

    def llm(self) -> LlmSpec:
        """The model's architecture (see the module docstring for what `model` may be)."""
        return resolve_model(self.model, self.base_dir)


def shipped_dir() -> Path:
    """The folder of the calibration data shipped with pals."""
    return Path(str(resources.files("pals") / "data" / "measurements"))


def resolve_model(model: str, base_dir: str = "") -> LlmSpec:
    """A preset, a config.json path (relative to `base_dir` too), or a shipped model.

    Raises:
        ConfigError: none of these (the message lists where it looked).
    """
    try:
        return get_llm(model)
    except ConfigError as first:
        candidates = [Path(base_dir) / model] if base_dir else []
        candidates.append(shipped_dir() / "models" / model)
        for path in candidates:
            if path.exists():
                return get_llm(str(path))
        raise ConfigError(f"{first}; nor is it a shipped calibration model "
                          f"({', '.join(sorted(p.name for p in (shipped_dir() / 'models').iterdir()))})") from None


def _cell(row: dict[str, Any], name: str, file: Path, line: int, kind: type = float, required: bool = True) -> Any:
    raw = row.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()) or (isinstance(raw, float) and math.isnan(raw)):
        if required:
            raise ConfigError(f"{file} line {line}: column {name} is empty; fill it in")
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{file} line {line}: column {name} holds {raw!r}, not a number; fix it") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{file} line {line}: column {name} must be a finite number >= 0, got {raw!r}")
    if kind is int:
        if value != int(value) or value < 1:
            raise ConfigError(f"{file} line {line}: column {name} must be a positive integer, got {raw!r}")
        return int(value)
    return value


def point_from_row(row: dict[str, Any], file: Path, line: int, *, gpu: str | None, model: str | None,
                   source: str) -> CalibrationPoint:
    """One validated point from a CSV/profile row (one clear error naming the file, line and column)."""
    row_model = model or (str(row.get("model") or "").strip() or None)
    if row_model is None:
        raise ConfigError(f"{file} line {line}: no model (a `model` column or --model is needed)")
    row_gpu = gpu or (str(row.get("gpu") or "").strip() or None)
    if row_gpu is None:
        raise ConfigError(f"{file} line {line}: no GPU (a `gpu` column or --gpu is needed)")
    batching = str(row.get("batching") or "continuous").strip() or "continuous"
    if batching not in BATCHING:
        raise ConfigError(f"{file} line {line}: batching {batching!r} must be one of {', '.join(BATCHING)}")
    rate = _cell(row, "arrival_rate_rps", file, line, required=False)
    if rate is not None:
        raise ConfigError(f"{file} line {line} was measured under an offered load ({rate:g} requests/s); calibration "
                          "needs saturating-load points: profile without --rate")
    values = {name: _cell(row, name, file, line, required=False) for name in MEASURED}
    if all(v is None for v in values.values()):
        raise ConfigError(f"{file} line {line}: nothing measured ({', '.join(MEASURED)} are all empty); fill one in "
                          "or drop the row")
    num_gpus, tp = _cell(row, "num_gpus", file, line, int), _cell(row, "tp", file, line, int)
    if num_gpus % tp:
        raise ConfigError(f"{file} line {line}: num_gpus {num_gpus} is not a multiple of tp {tp}")
    budget = _cell(row, "max_num_batched_tokens", file, line, int, required=False)
    reference = _cell(row, "relative_to_cap_w", file, line, required=False)
    if (reference is None) != (values["relative_throughput"] is None):
        raise ConfigError(f"{file} line {line}: relative_throughput and relative_to_cap_w go together; fill both or "
                          "neither")
    return CalibrationPoint(
        source=str(row.get("source") or source).strip() or source,
        gpu=row_gpu,
        model=row_model,
        num_gpus=num_gpus,
        tp=tp,
        ep=_cell(row, "ep", file, line, int, required=False) or 1,
        power_cap_w=_cell(row, "power_cap_w", file, line),
        batch_cap=_cell(row, "batch_cap", file, line, int),
        prompt_tokens=max(1.0, _cell(row, "mean_prompt_tokens", file, line)),
        output_tokens=max(1.0, _cell(row, "mean_output_tokens", file, line)),
        batching=batching,
        engine=str(row.get("engine") or "").strip(),
        max_num_batched_tokens=budget,
        relative_to_cap_w=math.nan if reference is None else reference,
        note=str(row.get("note") or ""),
        base_dir=str(file.parent),
        **{k: (math.nan if v is None else v) for k, v in values.items()},
    )


def read_points(path: str | Path, *, gpu: str | None = None, model: str | None = None) -> list[CalibrationPoint]:
    """Measured points from a profile or a plain CSV (see the module docstring).

    Args:
        path: the file.
        gpu: GPU preset for rows without a `gpu` column (and instead of the profile's).
        model: model for every row (overrides the `model` column).

    Raises:
        ConfigError: a missing file, a missing column, a bad cell (one line naming the file, line and column).
    """
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"measurements file {file} does not exist; pass a profile (`pals profile --out`) or a CSV")
    with file.open(encoding="utf-8") as handle:
        first = handle.readline()
    if first.startswith("# pals-profile"):
        from pals.model.profile import read_profile

        profile = read_profile(file)
        rows: Iterable[tuple[int, dict[str, Any]]] = ((i + 3, dict(r)) for i, r in enumerate(profile.rows))
        gpu = gpu or profile.gpu
        workload = profile.workload
        defaults = {"mean_prompt_tokens": getattr(workload, "mean_prompt_tokens", None),
                    "mean_output_tokens": getattr(workload, "mean_output_tokens", None)}
        rows = [(line, {**{k: v for k, v in defaults.items() if v is not None}, **_finite(row)}) for line, row in rows]
    else:
        with file.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            needed = list(REQUIRED_COLUMNS) + ([] if model else ["model"])
            missing = [c for c in needed if c not in header]
            if missing:
                raise ConfigError(f"{file} lacks column(s) {', '.join(missing)}; the CSV needs "
                                  f"{', '.join(needed)} (profile column names)")
            rows = [(i + 2, row) for i, row in enumerate(reader)]
    points = [point_from_row(row, file, line, gpu=gpu, model=model, source=file.stem) for line, row in rows]
    if not points:
        raise ConfigError(f"{file} has no rows; measure some points first")
    return points


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """A profile row with NaN cells dropped (so the workload defaults fill them)."""
    return {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}


def shipped_points(gpu: str | None = None) -> list[CalibrationPoint]:
    """The calibration points shipped with pals (every CSV in `pals/data/measurements`), optionally one GPU's."""
    points: list[CalibrationPoint] = []
    for file in sorted(shipped_dir().glob("*.csv")):
        points += read_points(file)
    if gpu is not None:
        from pals.sim.hardware import get_gpu

        name = get_gpu(gpu).name
        points = [p for p in points if p.gpu.lower() == name.lower()]
    return points
