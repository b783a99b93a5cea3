"""Probe measurements -> calibration rows: the mapping, the CSV, and that `pals calibrate` reads them as the
static batches they are."""

import csv
import math
from pathlib import Path

import pytest

from pals.calibration.points import read_points
from pals.calibration.simulate import StepModels, estimate
from pals.cli import main
from pals.probe.host import model_column, preset_for_gpu_name
from pals.probe.rows import COLUMNS, Measurement, RowContext, csv_text, results_table, to_row, write_csv
from pals.sim.hardware import get_gpu

MODELS = Path(__file__).resolve().parents[2] / "src" / "pals" / "data" / "measurements" / "models"
CTX = RowContext(model="Llama-3.1-8B", gpu="H200", engine="hf-transformers-5.19.0", energy_source="nvml-energy",
                 device="cuda")


def _m(batch: int = 8, cap_w: float = 700.0, **kw) -> Measurement:
    values = dict(power_cap_w=cap_w, batch=batch, prompt_tokens=512, decode_steps=64, prefill_s=0.1,
                  prefill_energy_j=60.0, prefill_repeats=10, decode_step_s=0.005, decode_step_energy_j=2.0,
                  decode_repeats=4, decode_mode="cudagraph", power_read_w=455.0)
    values.update(kw)
    return Measurement(**values)


def test_a_measurement_is_one_static_batch():
    row = to_row(_m(), CTX)
    # One static batch: a 0.1 s prefill (600 W) and 64 steps of 5 ms (400 W) = 0.42 s, 8 x 65 tokens.
    assert row["batching"] == "static" and row["batch_cap"] == 8
    assert row["mean_prompt_tokens"] == 512 and row["mean_output_tokens"] == 65
    assert float(row["throughput_tps"]) == pytest.approx(8 * 65 / 0.42, rel=1e-5)
    assert float(row["gpu_power_w"]) == pytest.approx((60.0 + 64 * 2.0) / 0.42, rel=1e-5)
    assert float(row["prefill_power_w"]) == pytest.approx(600.0)
    assert float(row["decode_power_w"]) == pytest.approx(400.0)
    assert float(row["tpot_p50_s"]) == pytest.approx(0.005) and float(row["ttft_p50_s"]) == pytest.approx(0.1)
    assert row["engine"] == "hf-transformers-5.19.0-cudagraph" and row["source"] == "pals-probe"


def test_an_unmeasured_value_is_an_empty_cell():
    row = to_row(_m(power_read_w=math.nan), CTX)
    assert row["power_read_w"] == ""


def test_csv_has_every_column_and_a_row_per_measurement(tmp_path):
    path = tmp_path / "p.csv"
    write_csv(path, [_m(1), _m(256)], CTX)
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(COLUMNS) and [r["batch_cap"] for r in rows] == ["1", "256"]
    assert csv_text([_m()], CTX).count("\n") == 2
    assert "cudagraph" in results_table([_m()])


def test_calibrate_reads_probe_rows_as_static_batches_and_simulates_them(tmp_path):
    path = tmp_path / "p.csv"
    write_csv(path, [_m(1), _m(64, cap_w=490.0)], CTX)
    points = read_points(path)
    assert [p.batching for p in points] == ["static", "static"]
    assert points[1].power_cap_w == 490.0 and points[1].output_tokens == 65
    assert points[0].prefill_power_w == pytest.approx(600.0) and points[0].engine == "hf-transformers-5.19.0-cudagraph"
    assert points[0].llm().name == "Llama-3.1-8B-Instruct"  # the shipped config, by name
    h200 = get_gpu("H200")
    sim = estimate(points[1], StepModels(h200, h200.physics))
    assert sim.ttft_p50_s > 0 and sim.prefill_power_w <= 490.0 + 1e-6 and sim.tpot_p50_s > 0


def test_pals_calibrate_fits_a_probe_profile(tmp_path, capsys):
    """A probe CSV goes straight into `pals calibrate` (the values here are made up: plumbing only)."""
    path = tmp_path / "p.csv"
    rows = [_m(b, cap, prefill_s=0.012 * b, prefill_energy_j=0.012 * b * 650, decode_step_s=0.0045 + 0.00003 * b,
               decode_step_energy_j=(0.0045 + 0.00003 * b) * (420 + b)) for cap in (700.0, 400.0) for b in (1, 16, 128)]
    write_csv(path, rows, CTX)
    out = tmp_path / "physics.json"
    assert main(["calibrate", str(path), "--gpu", "H200", "--out", str(out), "--folds", "0", "--max-evals", "10",
                 "--quiet", "--per-engine", "step_overhead_s"]) == 0
    assert out.is_file() and "pals-probe" in capsys.readouterr().out


@pytest.mark.parametrize("name,preset", [("NVIDIA H200", "H200"), ("NVIDIA H100 80GB HBM3", "H100-SXM"),
                                         ("NVIDIA H100 PCIe", None), ("NVIDIA H100 NVL", None),
                                         ("NVIDIA H200 NVL", None), ("NVIDIA GH200 480GB", None), ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
                                         ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"), ("NVIDIA L40S", "L40S"),
                                         ("H200 (simulated test double)", "H200"), ("Tesla T4", None)])
def test_gpu_names_map_to_presets(name, preset):
    assert preset_for_gpu_name(name) == preset


def test_model_column_is_a_shipped_name_or_a_path_relative_to_the_csv(tmp_path):
    assert model_column(MODELS / "Qwen3-30B-A3B" / "config.json", tmp_path / "out.csv", MODELS) == "Qwen3-30B-A3B"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text("{}")
    assert model_column(tmp_path / "cfg", tmp_path / "runs" / "out.csv", MODELS) == "../cfg"
