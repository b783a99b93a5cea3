"""`pals calibrate` fits the probe's `decode_power_w` (the decode window's power) against the simulator's pure-decode
steps at the same batch and cap; a profile without the column fits as before."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from pals.calibration.fit import DEFAULT_QUANTITIES, QUANTITY_SD, fit_physics
from pals.calibration.points import CalibrationPoint, read_points
from pals.calibration.simulate import StepModels, decode_power_w, estimate
from pals.cli import main
from pals.probe.rows import Measurement, RowContext, csv_text
from pals.sim.hardware import get_gpu
from pals.sim.physics import load_physics
from pals.sim.steady import static_batch

H100 = get_gpu("H100-SXM")
MODEL = "Llama-3.1-8B"
"""The probe's dense model (shipped config)."""
TRUE_MEM_SM_ACTIVITY = 1.25 * H100.physics.mem_sm_activity
"""The 'hardware' measured: the H100 preset with the SM activity of memory-bound kernels 25 % higher."""
PROMPT, DECODE_STEPS = 512, 64
"""The probe's defaults."""
BATCHES = (1, 16, 64, 256)
CAP_W = 700.0
"""Uncapped decode at every batch: throughput and TPOT do not see the power terms, only measured power does."""


def _measurements(params) -> list[Measurement]:
    """What the probe would have measured on a GPU with `params` (its decode window, prefill and composite)."""
    models = StepModels(H100, params)
    out = []
    for batch in BATCHES:
        point = CalibrationPoint("probe", H100.name, MODEL, 1, 1, 1, CAP_W, batch, PROMPT, DECODE_STEPS + 1,
                                 batching="static")
        sim = estimate(point, models)
        out.append(Measurement(power_cap_w=CAP_W, batch=batch, prompt_tokens=PROMPT, decode_steps=DECODE_STEPS,
                               prefill_s=sim.ttft_p50_s, prefill_energy_j=sim.prefill_power_w * sim.ttft_p50_s,
                               prefill_repeats=1, decode_step_s=sim.tpot_p50_s,
                               decode_step_energy_j=sim.decode_power_w * sim.tpot_p50_s, decode_repeats=1,
                               decode_mode="cudagraph"))
    return out


def _probe_csv(tmp_path, drop=(), blank=(), name="probe.csv"):
    """A probe-shaped CSV (the probe's own row writer) of the perturbed GPU, without the columns `drop` and with
    the cells of `blank` empty (not measured)."""
    text = csv_text(_measurements(replace(H100.physics, mem_sm_activity=TRUE_MEM_SM_ACTIVITY)),
                    RowContext(MODEL, H100.name, "hf-transformers-test", "test-double", "cuda"))
    header, *rows = [line.split(",") for line in text.strip().splitlines()]
    rows = [["" if column in blank else cell for column, cell in zip(header, row)] for row in rows]
    keep = [k for k, column in enumerate(header) if column not in drop]
    path = tmp_path / name
    path.write_text("\n".join(",".join(line[k] for k in keep) for line in [header, *rows]) + "\n")
    return path


def test_the_simulated_decode_power_is_the_pure_decode_steps():
    """Equal to the energy over the time of the decode steps `static_batch` evaluates (computed apart here)."""
    model, _ = StepModels(H100, H100.physics).get(CalibrationPoint("t", H100.name, MODEL, 1, 1, 1, CAP_W, 64, PROMPT,
                                                                   DECODE_STEPS + 1))
    whole = static_batch(model, batch=64, prompt_tokens=PROMPT, output_tokens=DECODE_STEPS + 1, power_cap_w=CAP_W)
    prefill = static_batch(model, batch=64, prompt_tokens=PROMPT, output_tokens=1, power_cap_w=CAP_W)
    decode_s = DECODE_STEPS * whole.tpot_s
    decode_j = whole.gpu_power_w * (prefill.ttft_s + decode_s) - prefill.gpu_power_w * prefill.ttft_s
    assert decode_power_w(whole, DECODE_STEPS + 1) == pytest.approx(decode_j / decode_s, rel=1e-9)
    assert whole.prefill_power_w > decode_power_w(whole, DECODE_STEPS + 1)  # compute-bound prefill draws more
    assert math.isnan(decode_power_w(prefill, 1))
    # A continuous point gets it where it measured it (the static batch's decode at its batch and cap).
    continuous = CalibrationPoint("t", H100.name, MODEL, 1, 1, 1, CAP_W, 64, PROMPT, DECODE_STEPS + 1,
                                  decode_power_w=500.0)
    sim = estimate(continuous, StepModels(H100, H100.physics))
    assert sim.decode_power_w == pytest.approx(decode_power_w(whole, DECODE_STEPS + 1))
    assert math.isnan(estimate(replace(continuous, decode_power_w=math.nan), StepModels(H100, H100.physics)).decode_power_w)


def test_calibrate_recovers_the_decode_power_term_from_a_probe_profile(tmp_path, capsys):
    path = _probe_csv(tmp_path)
    assert [p.decode_power_w > 0 for p in read_points(path)] == [True] * len(BATCHES)
    out = tmp_path / "physics.json"
    assert main(["calibrate", str(path), "--gpu", H100.name, "--out", str(out), "--free", "mem_sm_activity",
                 "--folds", "0"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("decode power") >= len(BATCHES)
    # Noise-free points simulated by the same estimate: only the prior pulls (found: within 1 %).
    assert load_physics(out, H100.name).mem_sm_activity == pytest.approx(TRUE_MEM_SM_ACTIVITY, rel=0.03)


def test_decode_power_alone_constrains_what_throughput_and_tpot_cannot(tmp_path):
    """Uncapped, throughput and TPOT do not depend on the power terms: with the composite and prefill power blank,
    decode power is the only evidence of the perturbed term, and the fit finds it only through that column."""
    blank = ("gpu_power_w", "prefill_power_w")
    with_decode = read_points(_probe_csv(tmp_path, blank=blank, name="a.csv"))
    without = read_points(_probe_csv(tmp_path, blank=blank, drop=("decode_power_w",), name="b.csv"))
    found = fit_physics(with_decode, H100, free=["mem_sm_activity"], folds=0, max_nfev=30)
    assert found.values["mem_sm_activity"] == pytest.approx(TRUE_MEM_SM_ACTIVITY, rel=0.03)
    assert found.identifiability[0].verdict == "constrained"
    blind = fit_physics(without, H100, free=["mem_sm_activity"], folds=0, max_nfev=30)
    assert blind.identifiability[0].sd_ratio > 0.95 and "mem_sm_activity" not in blind.changed()
    assert blind.values["mem_sm_activity"] == pytest.approx(H100.physics.mem_sm_activity, rel=1e-3)


def test_a_profile_without_the_column_fits_as_before(tmp_path):
    """No decode_power_w column: no decode residual, and the fit is the one without the quantity at all."""
    points = read_points(_probe_csv(tmp_path, drop=("decode_power_w",)))
    assert all(math.isnan(p.decode_power_w) for p in points)
    assert "decode_power_w" in DEFAULT_QUANTITIES and "decode_power_w" in QUANTITY_SD
    free = ["mem_sm_activity", "eta_memory"]
    now = fit_physics(points, H100, free=free, folds=0, max_nfev=30)
    before = fit_physics(points, H100, free=free, folds=0, max_nfev=30,
                         quantities=[q for q in DEFAULT_QUANTITIES if q != "decode_power_w"])
    assert now.values == before.values and now.cost == before.cost
    assert {r.quantity for r in now.residuals} == {"throughput_tps", "gpu_power_w", "tpot_p50_s", "prefill_power_w"}
    # The composite still carries the decode power: the term is recovered from it (found: within 1 %).
    assert now.values["mem_sm_activity"] == pytest.approx(TRUE_MEM_SM_ACTIVITY, rel=0.05)
