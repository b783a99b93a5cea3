"""Calibration of the simulator's step physics to measurements, and its fidelity.

Modules, each with one job:

- `points`: measured calibration points (`CalibrationPoint`) from a `pals profile` file, a plain CSV with the
  profile's column names, or the data shipped in `pals/data/measurements`.
- `simulate`: the simulator's value at a point, from the steady-state estimates of `pals.sim.steady` (fast,
  for fitting) or from a `SimNode` run.
- `fit`: bounded least squares with a prior (`fit_physics`), cross-validation and which parameters the data
  did not constrain.

This package sits at the runtime level: it may import `pals.sim` and `pals.model`; `sim`, `model` and
`control` never import it (import-linter contract `calibration`).
"""
