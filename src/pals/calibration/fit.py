"""Fit the step physics to measured points: bounded least squares with a prior, cross-validation,
and which parameters the data did not constrain.

Residuals (`scipy.optimize.least_squares`, trust-region reflective, bounded):

- data: log(simulated / measured) / sd for every measured throughput, GPU power, TPOT, prefill power and decode
  power (TTFT only when asked: static-batch prefill timings of old engines are not what the physics is for); sd per
  quantity in `QUANTITY_SD`. Decode power (`pals probe`'s decode window) is simulated as the pure-decode steps'
  power at the point's batch and cap (`pals.calibration.simulate.decode_power_w`): it sees the memory-bound power
  terms apart from the prefill's compute-bound ones, which a static batch's mean power mixes;
- prior: (u(theta) - u(theta_0)) / sd_prior for every free parameter, u = log for scale parameters, so the
  fit is regularised toward the GPU preset's values and an unconstrained parameter stays there.

Parameters live in prior-sd units; the posterior covariance (J'J + I)^-1 of the data Jacobian J in those units
says how much the data narrowed each prior (`Identifiability`). Per-engine parameters (`per_engine`) are
fitted separately for each point's `engine` (default: its source): engine overheads of a 2023 vLLM differ from today's, while the power
physics is shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

from pals.calibration.points import CalibrationPoint
from pals.calibration.simulate import Simulated, StepModels, estimate
from pals.errors import ConfigError
from pals.sim.hardware import GpuSpec
from pals.sim.physics import Mechanisms, PhysicsParams


@dataclass(frozen=True)
class FitParameter:
    """How one `PhysicsParams` field is fitted."""

    name: str
    lower: float
    """Lower bound (in the parameter's units)."""
    upper: float
    """Upper bound."""
    prior_sd: float
    """Prior standard deviation: of log(value) when `log`, else of the value."""
    log: bool = True
    """Fit log(value) (scale parameters) rather than the value."""


FIT_PARAMETERS: dict[str, FitParameter] = {p.name: p for p in (
    FitParameter("sm_power_frac_tdp", 0.4, 1.2, 0.25),
    FitParameter("busy_floor_frac_tdp", 0.1, 0.5, 0.3),
    FitParameter("hbm_power_frac_tdp", 0.02, 0.6, 0.5),
    FitParameter("mem_sm_activity", 0.05, 0.9, 0.5),
    FitParameter("spin_power_frac", 0.05, 1.0, 0.5),
    FitParameter("eta_compute", 0.3, 0.95, 0.15),
    FitParameter("eta_memory", 0.5, 0.9, 0.08),
    FitParameter("eta_attention", 0.2, 0.9, 0.3),
    FitParameter("step_overhead_s", 1e-5, 0.05, 1.5),
    FitParameter("seq_overhead_s", 0.0, 2e-3, 3e-4, log=False),
    FitParameter("kernel_floor_s", 1e-6, 1e-4, 1.5),
    FitParameter("allreduce_latency_s", 5e-6, 3e-4, 0.5),
    FitParameter("voltage_floor", 0.6, 1.0, 0.05, log=False),
    FitParameter("voltage_knee", 0.3, 0.8, 0.1, log=False),
    FitParameter("bandwidth_knee", 0.3, 1.5, 0.2, log=False),
)}
"""Every fittable parameter with its bounds and prior sd (docs/calibration.md §14 says why each)."""

DEFAULT_FREE: tuple[str, ...] = (
    "sm_power_frac_tdp", "busy_floor_frac_tdp", "hbm_power_frac_tdp", "mem_sm_activity", "spin_power_frac",
    "eta_compute", "eta_memory", "step_overhead_s", "kernel_floor_s", "allreduce_latency_s",
    "voltage_floor", "voltage_knee", "bandwidth_knee",
)
"""Parameters `pals calibrate` fits unless told otherwise."""

QUANTITY_SD: dict[str, float] = {"throughput_tps": 0.05, "gpu_power_w": 0.05, "tpot_p50_s": 0.08, "ttft_p50_s": 0.15,
                                  "prefill_power_w": 0.08, "decode_power_w": 0.08, "relative_throughput": 0.05}
"""Expected spread of log(simulated / measured) per quantity (measurement plus model error); a residual's unit.
Decode power has the prefill's: each is one timed window's energy, and the static batch's mean power (which
both windows make up) already carries the pair at the composite's spread."""
DEFAULT_QUANTITIES: tuple[str, ...] = ("throughput_tps", "gpu_power_w", "tpot_p50_s", "prefill_power_w",
                                       "decode_power_w", "relative_throughput")


def _gpu_value(gpu: GpuSpec, params: PhysicsParams, name: str) -> float:
    value = getattr(params, name)
    if value is None:  # eta_compute / eta_memory / allreduce_latency_s: the GPU's own
        value = getattr(gpu, name)
    return float(value)


@dataclass
class _Layout:
    """Which value each entry of the normalised parameter vector z is."""

    entries: list[tuple[str | None, str]]
    """(source or None for shared, parameter name)."""
    centre: np.ndarray
    """u(theta_0) per entry."""
    specs: list[FitParameter]

    def to_value(self, k: int, z: float) -> float:
        spec = self.specs[k]
        u = self.centre[k] + z * spec.prior_sd
        return float(math.exp(u) if spec.log else u)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = [], []
        for k, spec in enumerate(self.specs):
            tr = (lambda v: math.log(v)) if spec.log else (lambda v: v)
            lo.append((tr(spec.lower) - self.centre[k]) / spec.prior_sd)
            hi.append((tr(spec.upper) - self.centre[k]) / spec.prior_sd)
        return np.array(lo), np.array(hi)


@dataclass(frozen=True)
class Residual:
    """One measured quantity beside its fitted value."""

    point: CalibrationPoint
    quantity: str
    measured: float
    simulated: float

    @property
    def error(self) -> float:
        """simulated / measured - 1."""
        return self.simulated / self.measured - 1.0


@dataclass(frozen=True)
class Identifiability:
    """How much the data narrowed one parameter's prior."""

    name: str
    value: float
    prior_value: float
    sd_ratio: float
    """Posterior sd / prior sd (1: the data say nothing; near 0: well determined)."""
    at_bound: bool

    @property
    def verdict(self) -> str:
        if self.sd_ratio < 0.5:
            return "constrained"
        if self.sd_ratio < 0.9:
            return "weakly constrained"
        return "not constrained (stays at its prior)"


@dataclass
class FitResult:
    """What `fit_physics` found."""

    gpu: GpuSpec
    params: PhysicsParams
    """The fitted physics (shared values; per-source values in `per_engine`)."""
    values: dict[str, float]
    """Fitted shared values of the free parameters."""
    per_engine: dict[str, dict[str, float]]
    """engine -> fitted per-engine values."""
    residuals: list[Residual]
    identifiability: list[Identifiability]
    degenerate: list[str]
    """Combinations of parameters the data fix only together (directions with little data information)."""
    cost: float
    nfev: int
    cv: dict[str, Any] = field(default_factory=dict)
    """Cross-validation: scheme, folds and held-out errors per quantity."""

    def params_for_engine(self, engine: str) -> PhysicsParams:
        return replace(self.params, **self.per_engine.get(engine, {}))

    def changed(self) -> dict[str, float]:
        """Shared values the data constrained (posterior sd under 0.9 of the prior's) that differ from the GPU
        preset's: what a physics file records. Unconstrained ones stay at the preset's values."""
        constrained = {i.name for i in self.identifiability if i.sd_ratio < 0.9}
        return {k: v for k, v in self.values.items() if k in constrained
                and not math.isclose(v, _gpu_value(self.gpu, self.gpu.physics, k), rel_tol=1e-9)}


class Fitter:
    """One fitting problem: points, GPU, free parameters, prior and the residual function."""

    def __init__(self, points: Sequence[CalibrationPoint], gpu: GpuSpec, *, free: Iterable[str] = DEFAULT_FREE,
                 per_engine: dict[str, Sequence[str]] | None = None, base: PhysicsParams | None = None,
                 mechanisms: Mechanisms | None = None, quantities: Sequence[str] = DEFAULT_QUANTITIES) -> None:
        self.points = list(points)
        self.gpu = gpu
        self.base = base if base is not None else gpu.physics
        self.mechanisms = mechanisms
        self.quantities = tuple(quantities)
        unknown = [q for q in self.quantities if q not in QUANTITY_SD]
        if unknown:
            raise ConfigError(f"unknown quantity {', '.join(unknown)}; choose from {', '.join(QUANTITY_SD)}")
        per_engine = {s: tuple(names) for s, names in (per_engine or {}).items()}
        for name in list(free) + [n for names in per_engine.values() for n in names]:
            if name not in FIT_PARAMETERS:
                raise ConfigError(f"cannot fit {name!r}; fittable parameters: {', '.join(FIT_PARAMETERS)}")
        sources = sorted({p.engine_key for p in self.points})
        entries: list[tuple[str | None, str]] = []
        own_everywhere = {n for n in FIT_PARAMETERS if sources and all(n in per_engine.get(s, ()) for s in sources)}
        entries += [(None, n) for n in dict.fromkeys(free) if n not in own_everywhere]
        entries += [(s, n) for s in sources for n in per_engine.get(s, ())]
        if not entries:
            raise ConfigError("nothing to fit: give --free and/or --per-engine parameters")
        specs = [FIT_PARAMETERS[n] for _, n in entries]
        centre = np.array([math.log(_gpu_value(gpu, self.base, n)) if FIT_PARAMETERS[n].log
                           else _gpu_value(gpu, self.base, n) for _, n in entries])
        self.layout = _Layout(entries, centre, specs)
        self.rows = [(i, q) for i, p in enumerate(self.points) for q in self.quantities
                     if math.isfinite(p.measured(q)) and p.measured(q) > 0]
        if not self.rows:
            raise ConfigError(f"nothing measured in the points for {', '.join(self.quantities)}; nothing to fit")

    # -- parameters -------------------------------------------------------------------------------

    def physics(self, z: np.ndarray) -> tuple[PhysicsParams, dict[str, PhysicsParams]]:
        """Shared physics and per-source physics for a parameter vector."""
        shared: dict[str, float] = {}
        own: dict[str, dict[str, float]] = {}
        for k, (source, name) in enumerate(self.layout.entries):
            value = self.layout.to_value(k, float(z[k]))
            (shared if source is None else own.setdefault(source, {}))[name] = value
        params = replace(self.base, **shared)
        return params, {s: replace(params, **v) for s, v in own.items()}

    # -- residuals --------------------------------------------------------------------------------

    def simulate(self, z: np.ndarray, indices: Sequence[int] | None = None) -> dict[int, Simulated]:
        params, per_engine = self.physics(z)
        models = StepModels(self.gpu, params, self.mechanisms)
        wanted = range(len(self.points)) if indices is None else indices
        return {i: estimate(self.points[i], models, per_engine.get(self.points[i].engine_key)) for i in wanted}

    def data_residuals(self, z: np.ndarray, rows: Sequence[tuple[int, str]] | None = None) -> np.ndarray:
        rows = self.rows if rows is None else rows
        sims = self.simulate(z, sorted({i for i, _ in rows}))
        out = np.empty(len(rows))
        for k, (i, q) in enumerate(rows):
            sim = sims[i].value(q)
            out[k] = math.log(max(sim, 1e-12) / self.points[i].measured(q)) / QUANTITY_SD[q] if math.isfinite(sim) else 0.0
        return out

    def solve(self, rows: Sequence[tuple[int, str]] | None = None, z0: np.ndarray | None = None,
              max_nfev: int = 60):
        """Least squares from `z0` (default: the prior's centre, plus a start with the kernel floors raised, which
        have no gradient until they bind); the best solution."""
        if z0 is not None:
            return self._solve_from(z0, rows, max_nfev)
        starts = [np.zeros(len(self.layout.entries))]
        floors = [k for k, (_, n) in enumerate(self.layout.entries) if n == "kernel_floor_s"]
        if floors:
            raised = np.zeros(len(self.layout.entries))
            raised[floors] = 1.3
            starts.append(raised)
        best = None
        for start in starts:
            solution = self._solve_from(start, rows, max_nfev)
            if best is None or solution.cost < best.cost:
                best = solution
        return best

    def _solve_from(self, z0: np.ndarray, rows: Sequence[tuple[int, str]] | None, max_nfev: int):
        from scipy.optimize import least_squares

        lo, hi = self.layout.bounds()
        # least_squares' first trust radius is |x0|: shift z so that x0 is far from 0 (z = 0 is the prior's centre).
        shift = 10.0
        start = np.clip(z0, lo + 1e-6, hi - 1e-6) + shift

        def residuals(x: np.ndarray) -> np.ndarray:
            z = x - shift
            return np.concatenate([self.data_residuals(z, rows), z])

        solution = least_squares(residuals, start, bounds=(lo + shift, hi + shift), method="trf", diff_step=0.002,
                                 x_scale=1.0, max_nfev=max_nfev, xtol=1e-4, ftol=1e-5)
        solution.x = solution.x - shift
        return solution


def fit_physics(points: Sequence[CalibrationPoint], gpu: GpuSpec, *, free: Iterable[str] = DEFAULT_FREE,
                per_engine: dict[str, Sequence[str]] | None = None, base: PhysicsParams | None = None,
                mechanisms: Mechanisms | None = None, quantities: Sequence[str] = DEFAULT_QUANTITIES,
                folds: int = 5, seed: int = 0, max_nfev: int = 60) -> FitResult:
    """Fit the free physics parameters of `gpu` to measured points (see the module docstring).

    Args:
        points: measured points, all of this GPU.
        gpu: the GPU; its preset physics (or `base`) is the prior's centre.
        free: parameters fitted (shared by all points).
        per_engine: engine -> parameters fitted separately for that engine's points.
        quantities: measured quantities used as residuals.
        folds: cross-validation folds (0: none). Leave-one-model-out when the points hold 3+ models,
            else k-fold over points.
        max_nfev: evaluation budget of the full fit (folds get half).

    Raises:
        ConfigError: points of another GPU, an unknown parameter, or nothing measured.
    """
    others = sorted({p.gpu for p in points if p.gpu.lower() != gpu.name.lower()})
    if others:
        raise ConfigError(f"points of {', '.join(others)} given to a fit of {gpu.name}; pass --gpu for each GPU's points")
    fitter = Fitter(points, gpu, free=free, per_engine=per_engine, base=base, mechanisms=mechanisms,
                    quantities=quantities)
    solution = fitter.solve(max_nfev=max_nfev)
    z = solution.x
    params, per_engine_params = fitter.physics(z)
    sims = fitter.simulate(z)
    residuals = [Residual(fitter.points[i], q, fitter.points[i].measured(q), sims[i].value(q)) for i, q in fitter.rows]
    n_data = len(fitter.rows)
    jac = np.asarray(solution.jac)[:n_data]
    ident, degenerate = _identifiability(fitter, z, jac)
    result = FitResult(
        gpu=gpu, params=params,
        values={n: _gpu_value(gpu, params, n) for s, n in fitter.layout.entries if s is None},
        per_engine={s: {n: getattr(p, n) for (src, n) in fitter.layout.entries if src == s}
                    for s, p in per_engine_params.items()},
        residuals=residuals, identifiability=ident, degenerate=degenerate,
        cost=float(solution.cost), nfev=int(solution.nfev),
    )
    if folds:
        result.cv = cross_validate(fitter, z, folds=folds, seed=seed, max_nfev=max(10, max_nfev // 2))
    return result


def _identifiability(fitter: Fitter, z: np.ndarray, jac: np.ndarray) -> tuple[list[Identifiability], list[str]]:
    info = jac.T @ jac
    cov = np.linalg.inv(info + np.eye(len(z)))
    lo, hi = fitter.layout.bounds()
    out = []
    names = [n if s is None else f"{n}[{s}]" for s, n in fitter.layout.entries]
    for k, name in enumerate(names):
        out.append(Identifiability(name, fitter.layout.to_value(k, z[k]), fitter.layout.to_value(k, 0.0),
                                   float(math.sqrt(max(cov[k, k], 0.0))),
                                   bool(z[k] <= lo[k] + 1e-3 or z[k] >= hi[k] - 1e-3)))
    degenerate = []
    values, vectors = np.linalg.eigh(info)
    for value, vector in zip(values, vectors.T):
        weights = [(abs(w), w, names[k]) for k, w in enumerate(vector) if abs(w) > 0.3]
        constrained_alone = [w for w in weights if out[names.index(w[2])].sd_ratio < 0.9]
        if value < 1.0 and len(weights) >= 2 and len(constrained_alone) < len(weights):
            terms = " ".join(f"{'+' if w > 0 else '-'} {abs(w):.2f}*{name}" for _, w, name in sorted(weights, reverse=True))
            degenerate.append(f"{terms.lstrip('+ ')} (data information {value:.2f} of the prior's 1)")
    return out, degenerate


def cross_validate(fitter: Fitter, z_full: np.ndarray, *, folds: int, seed: int, max_nfev: int) -> dict[str, Any]:
    """Refit without each fold (warm start from the full fit) and report held-out errors per quantity."""
    models = sorted({p.model_name for p in fitter.points})
    if len(models) >= 3:
        scheme = "leave-one-model-out"
        groups = [[k for k, (i, _) in enumerate(fitter.rows) if fitter.points[i].model_name == m] for m in models]
    else:
        scheme = f"{min(folds, len(fitter.points))}-fold over points"
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(fitter.points))
        fold_of = {int(i): n % min(folds, len(fitter.points)) for n, i in enumerate(order)}
        count = min(folds, len(fitter.points))
        groups = [[k for k, (i, _) in enumerate(fitter.rows) if fold_of[i] == f] for f in range(count)]
    held: dict[str, list[float]] = {}
    for group in groups:
        if not group or len(group) == len(fitter.rows):
            continue
        keep = [fitter.rows[k] for k in range(len(fitter.rows)) if k not in set(group)]
        solution = fitter.solve(rows=keep, z0=z_full, max_nfev=max_nfev)
        test_rows = [fitter.rows[k] for k in group]
        res = fitter.data_residuals(solution.x, test_rows)
        for (i, q), r in zip(test_rows, res):
            held.setdefault(q, []).append(math.exp(r * QUANTITY_SD[q]) - 1.0)
    fit_res = fitter.data_residuals(z_full)
    in_sample: dict[str, list[float]] = {}
    for (i, q), r in zip(fitter.rows, fit_res):
        in_sample.setdefault(q, []).append(math.exp(r * QUANTITY_SD[q]) - 1.0)
    summary = {q: {"held_out_median_abs_pct": 100 * float(np.median(np.abs(v))),
                   "held_out_max_abs_pct": 100 * float(np.max(np.abs(v))),
                   "in_sample_median_abs_pct": 100 * float(np.median(np.abs(in_sample[q])))}
               for q, v in held.items()}
    return {"scheme": scheme, "folds": len([g for g in groups if g]), "errors": summary}


TRANSFERRED_AS_FRACTIONS: tuple[str, ...] = (
    "sm_power_frac_tdp", "busy_floor_frac_tdp", "mem_sm_activity", "spin_power_frac", "voltage_floor",
    "voltage_knee", "bandwidth_knee", "eta_attention",
)
"""Power terms carried to another GPU as the same fraction of its TDP (assumption, docs/calibration.md §14)."""


def transfer_physics(fitted: PhysicsParams, source: GpuSpec, target: GpuSpec,
                     memory_energy_factor: float = 1.0) -> dict[str, float]:
    """Physics values for `target` carried over from a fit on `source` (no power measurements of `target`).

    Fractions of TDP stay (`TRANSFERRED_AS_FRACTIONS`); HBM power keeps its energy per byte, so it scales with the
    achieved bandwidth (eta_memory x spec) over TDP, times `memory_energy_factor` (e.g. GDDR6 against HBM).
    Efficiencies and engine overheads are not carried: the target keeps its own.
    """
    eta_src = fitted.eta_memory if fitted.eta_memory is not None else source.eta_memory
    watts_per_byte_s = fitted.hbm_power_frac_tdp * source.tdp_w / (eta_src * source.hbm_bandwidth_bytes_per_s)
    target_bw = target.eta_memory * target.hbm_bandwidth_bytes_per_s
    values = {name: float(getattr(fitted, name)) for name in TRANSFERRED_AS_FRACTIONS}
    values["hbm_power_frac_tdp"] = watts_per_byte_s * target_bw * memory_energy_factor / target.tdp_w
    return values
