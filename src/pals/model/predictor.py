"""The power-performance predictor: configuration -> (throughput, power), with uncertainty.

As in the PALS paper, two random forests (scikit-learn `RandomForestRegressor`)
map a configuration to throughput (generated tokens/s) and to summed GPU power
(W); node power comes from the system-power line (`syspower`), and tokens/J is
throughput / node power. The model only *scores discrete candidates* for the
controller.

Features (`FEATURES`, in this order):
    power_cap_w, batch_cap, tp, ep, mean_prompt_tokens, mean_output_tokens, arrival_rate_rps
A saturating load (no offered rate: requests always waiting) is encoded as
`arrival_rate_rps = SATURATING_RATE_RPS` (1e6 requests/s): far beyond any node's
capacity, so the trees group it with the highest offered loads, which is what
saturation physically is. An unknown mean prompt/output length is encoded as
`UNKNOWN_TOKENS` (-1).

Interpolation between profiled points. A forest is piecewise constant: a
held-out batch cap of 16 would get the throughput of 8 or 32, which differ
about 2x. With `detrend=True` (the default) each target is first fitted in log
space by a small least-squares surface (`pals.model.trees.Trend`: a linear spline
in log2 batch cap with a knot at every profiled batch cap, quadratic in power
cap, their product, plus linear terms for any other feature that varies in the
profile; inputs clipped to the profiled range), and the forest learns the log
residual. The spline keeps grids up to batch 1024 honest: throughput flattens
where the KV cache or the compute bound stops it, and a quadratic in log2 batch
overshot between the last grid points (12 % at 512 between 256 and 1024). The prediction is trend x exp(forest); the forest
still carries all the non-smooth structure (the cap that stops binding above
the natural draw) and the uncertainty, which is the spread across trees.

Speed: `predict_candidates` does not call `RandomForestRegressor.predict` (about
10 ms per call, mostly joblib overhead); it walks all trees at once with numpy on
arrays packed from the fitted `tree_` objects, which gives identical numbers
(tested) in well under 1 ms for 36 candidates.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pals.core.io import atomic_write_text
from pals.core.untrusted import whole_in
from pals.core.workload import WorkloadDescriptor
from pals.errors import ConfigError, ModelMismatchError, PalsError, ProfileError
from pals.model import predictor_io
from pals.model.predictor_io import MODEL_FILE_MAGIC, MODEL_FORMAT_VERSION
from pals.model.profile import Profile
from pals.model.syspower import SysPowerFit, syspower_from_profile
from pals.model.trees import PackedForest, Trend

__all__ = [
    "FEATURES",
    "SATURATING_RATE_RPS",
    "UNKNOWN_TOKENS",
    "EvaluationReport",
    "PowerPerfPredictor",
    "Prediction",
    "WorkloadDescriptor",
    "evaluate",
    "features_from_profile",
]

FEATURES = (
    "power_cap_w",
    "batch_cap",
    "tp",
    "ep",
    "mean_prompt_tokens",
    "mean_output_tokens",
    "arrival_rate_rps",
)
SATURATING_RATE_RPS = 1.0e6
"""Feature value of `arrival_rate_rps` for a saturating load. Units: requests/s."""
UNKNOWN_TOKENS = -1.0
"""Feature value of a mean prompt/output length the profile did not record."""

TARGETS = ("throughput_tps", "gpu_power_total_w")


@dataclass(frozen=True)
class Prediction:
    """Predictions for candidate configurations; every array is aligned with the candidates.

    Attributes:
        throughput_tps: Generated tokens/s of the node.
        throughput_std_tps: Spread of `throughput_tps` across the forest's trees (tokens/s).
        gpu_power_total_w: Summed GPU power of the node. Units: W.
        gpu_power_std_w: Spread of `gpu_power_total_w` across trees. Units: W.
        node_power_w: Node (wall) power from the system-power line. Units: W.
        tokens_per_joule: throughput_tps / node_power_w. Units: tokens/J.
    """

    throughput_tps: np.ndarray
    throughput_std_tps: np.ndarray
    gpu_power_total_w: np.ndarray
    gpu_power_std_w: np.ndarray
    node_power_w: np.ndarray
    tokens_per_joule: np.ndarray


def _encode_workload_columns(prompt, output, rate) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    prompt = np.asarray(prompt, dtype=np.float64)
    output = np.asarray(output, dtype=np.float64)
    rate = np.asarray(rate, dtype=np.float64)
    prompt = np.where(np.isfinite(prompt), prompt, UNKNOWN_TOKENS)
    output = np.where(np.isfinite(output), output, UNKNOWN_TOKENS)
    rate = np.where(np.isfinite(rate), rate, SATURATING_RATE_RPS)
    return prompt, output, rate


def features_from_profile(profile: Profile) -> np.ndarray:
    """The feature matrix (rows x FEATURES) of a profile, with the documented encodings."""
    prompt, output, rate = _encode_workload_columns(
        profile.column("mean_prompt_tokens"), profile.column("mean_output_tokens"), profile.column("arrival_rate_rps")
    )
    return np.column_stack(
        [
            profile.column("power_cap_w"),
            profile.column("batch_cap"),
            profile.column("tp"),
            profile.column("ep"),
            prompt,
            output,
            rate,
        ]
    )


class PowerPerfPredictor:
    """Random-forest throughput and power model of one deployment, trained from a profile.

    Args:
        n_estimators: Trees per forest.
        random_state: Seed of the forests (and of nothing else).
        min_samples_leaf: Minimum rows per leaf.
        max_features: Features considered per split (scikit-learn meaning).
        detrend: Fit a log-space trend surface first and the forest on its residual
            (see the module docstring); False gives the plain forests of the paper.

    Fitted attributes: `deployment_`, `feature_names_`, `caps_`, `batches_`, `workload_`,
    `syspower_`, `profile_hash_`, `trends_`, `feature_importances_`, and `forests_` (the
    scikit-learn forests; only after `fit`: a loaded predictor has their trees as arrays, which
    is all prediction uses).
    """

    def __init__(
        self,
        n_estimators: int = 100,
        random_state: int = 0,
        min_samples_leaf: int = 1,
        max_features: float | str | None = 1.0,
        detrend: bool = True,
    ) -> None:
        self.n_estimators = n_estimators
        self.random_state = random_state
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.detrend = detrend

    # -- fitting -----------------------------------------------------------------

    def fit(self, profile: Profile) -> "PowerPerfPredictor":
        """Train both forests (and the system-power line) on a validated profile."""
        from sklearn.ensemble import RandomForestRegressor

        if not isinstance(self.n_estimators, int) or self.n_estimators < 1:
            raise ConfigError(f"n_estimators must be a positive integer, got {self.n_estimators!r}")
        if len(profile) < 2:
            raise ProfileError(f"profile {profile.path or ''} has {len(profile)} row(s); fitting needs at least 2")
        X = features_from_profile(profile)
        self.forests_: dict[str, Any] = {}
        self.trends_: dict[str, Trend | None] = {}
        self._packed: dict[str, PackedForest] = {}
        for target in TARGETS:
            y = profile.column(target)
            if np.any(~np.isfinite(y)) or np.any(y <= 0):
                raise ProfileError(
                    f"profile {profile.path or ''} has non-positive or missing {target}; re-profile the bad points"
                )
            log_y = np.log(y)
            trend = Trend().fit(X, log_y) if self.detrend else None
            residual = log_y - trend.predict(X) if trend is not None else log_y
            forest = RandomForestRegressor(
                n_estimators=self.n_estimators,
                random_state=self.random_state,
                min_samples_leaf=self.min_samples_leaf,
                max_features=self.max_features,
            ).fit(X, residual)
            self.forests_[target] = forest
            self.trends_[target] = trend
            self._packed[target] = PackedForest.from_forest(forest)
        self.syspower_: SysPowerFit = syspower_from_profile(profile)
        self.deployment_ = dict(profile.deployment)
        self.feature_names_ = tuple(FEATURES)
        self.n_features_in_ = len(FEATURES)
        self.caps_ = np.unique(profile.column("power_cap_w"))
        self.batches_ = np.unique(profile.column("batch_cap")).astype(int)
        self.workload_ = profile.workload or _workload_from_rows(profile)
        self.profile_hash_ = profile.content_hash()
        self.feature_importances_ = {
            target: dict(zip(FEATURES, map(float, self.forests_[target].feature_importances_))) for target in TARGETS
        }
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "_packed"):
            raise ConfigError("this PowerPerfPredictor is not fitted; call fit(profile) or load a saved one")

    # -- prediction --------------------------------------------------------------

    def _target(self, target: str, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        leaves = self._packed[target].per_tree(X)  # log-space residuals, (rows, trees)
        trend = self.trends_[target]
        base = trend.predict(X) if trend is not None else np.zeros(X.shape[0])
        per_tree = np.exp(base[:, None] + leaves)
        mean = np.exp(base + leaves.mean(axis=1))
        return mean, per_tree.std(axis=1)

    def predict_features(self, X: np.ndarray) -> Prediction:
        """Predict for a feature matrix in `feature_names_` order (already encoded)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names_):
            raise ConfigError(f"expected a (n, {len(self.feature_names_)}) feature matrix, got shape {X.shape}")
        throughput, throughput_std = self._target("throughput_tps", X)
        power, power_std = self._target("gpu_power_total_w", X)
        node_w = self.syspower_.node_power_w(power)
        return Prediction(
            throughput_tps=throughput,
            throughput_std_tps=throughput_std,
            gpu_power_total_w=power,
            gpu_power_std_w=power_std,
            node_power_w=node_w,
            tokens_per_joule=throughput / node_w,
        )

    def candidate_features(
        self,
        power_cap_w,
        batch_cap,
        workload: WorkloadDescriptor | None = None,
        tp: int | None = None,
        ep: int | None = None,
    ) -> np.ndarray:
        """Feature matrix for candidates (arrays broadcast together)."""
        self._check_fitted()
        caps, batches = np.broadcast_arrays(
            np.asarray(power_cap_w, dtype=np.float64).reshape(-1), np.asarray(batch_cap, dtype=np.float64).reshape(-1)
        )
        n = caps.size
        workload = workload if workload is not None else self.workload_
        if workload is None:
            prompt = output = UNKNOWN_TOKENS
            rate = SATURATING_RATE_RPS
        else:
            prompt, output = workload.mean_prompt_tokens, workload.mean_output_tokens
            rate = SATURATING_RATE_RPS if workload.arrival_rate_rps is None else workload.arrival_rate_rps
        X = np.empty((n, len(FEATURES)), dtype=np.float64)
        X[:, 0] = caps
        X[:, 1] = batches
        X[:, 2] = self.deployment_["tp"] if tp is None else tp
        X[:, 3] = self.deployment_["ep"] if ep is None else ep
        X[:, 4] = prompt
        X[:, 5] = output
        X[:, 6] = rate
        return X

    def predict_candidates(
        self,
        power_cap_w: np.ndarray,
        batch_cap: np.ndarray,
        workload: WorkloadDescriptor | None = None,
        tp: int | None = None,
        ep: int | None = None,
    ) -> Prediction:
        """Score candidate configurations.

        Args:
            power_cap_w: Per-GPU power caps, one per candidate (broadcast with `batch_cap`). Units: W.
            batch_cap: Batch caps, one per candidate.
            workload: The live workload; None = the profile's own workload.
            tp, ep: Parallelism; None = the profiled deployment's.

        Returns:
            A `Prediction` whose arrays are aligned with the candidates.
        """
        return self.predict_features(self.candidate_features(power_cap_w, batch_cap, workload, tp, ep))

    # -- persistence -------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """What the saved file says about itself (its JSON header, also written to `<path>.json`)."""
        import sklearn

        from pals import __version__

        self._check_fitted()
        return {
            "format": "pals-predictor",
            "format_version": MODEL_FORMAT_VERSION,
            "deployment": self.deployment_,
            "feature_names": list(self.feature_names_),
            "targets": list(TARGETS),
            "profile_hash": self.profile_hash_,
            "caps_w": [float(c) for c in self.caps_],
            "batches": [int(b) for b in self.batches_],
            "workload": None if self.workload_ is None else self.workload_.to_dict(),
            "syspower": self.syspower_.to_dict(),
            "params": {
                "n_estimators": self.n_estimators,
                "random_state": self.random_state,
                "min_samples_leaf": self.min_samples_leaf,
                "max_features": self.max_features,
                "detrend": self.detrend,
            },
            "feature_importances": self.feature_importances_,
            "trend_coefficients": {
                t: None if self.trends_[t] is None else [float(c) for c in self.trends_[t].coef_] for t in TARGETS
            },
            "versions": {"sklearn": sklearn.__version__, "numpy": np.__version__, "pals": __version__},
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Save atomically: a magic line, one line of JSON metadata, a checksum, then the trees as plain arrays.

        Nothing in the file can execute code on load (see `pals.model.predictor_io`). A
        `<path>.json` copy of the metadata is written beside it for people and tools.

        Raises:
            ConfigError: `path` is a directory or cannot be written (nothing is left half-written).
        """
        out = Path(path)
        if out.is_dir():
            raise ConfigError(f"predictor output {out} is a directory; give a file name such as {out / 'model.pals'}")
        metadata = self.metadata()
        arrays: dict[str, np.ndarray] = {"caps_w": np.asarray(self.caps_, dtype=np.float64),
                                         "batches": np.asarray(self.batches_, dtype=np.int64)}
        for target in TARGETS:
            arrays.update(self._packed[target].arrays(f"{target}."))
            if self.trends_[target] is not None:
                arrays.update(self.trends_[target].arrays(f"{target}."))
        try:
            predictor_io.write_predictor_file(out, metadata, arrays)
            atomic_write_text(str(out) + ".json", json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        except OSError as error:
            raise ConfigError(
                f"cannot write predictor file {out} ({error.strerror or error}); choose a writable path"
            ) from None
        return out

    @classmethod
    def read_metadata(cls, path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
        """The metadata and the raw (unparsed) array payload of a saved predictor."""
        return predictor_io.read_container(path)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        expect_model: str | None = None,
        expect_features: Sequence[str] | None = None,
    ) -> "PowerPerfPredictor":
        """Load a saved predictor, refusing one that does not match what loads it.

        The file holds only JSON and plain numeric arrays, every index bounds-checked, so a crafted
        file cannot run code; predictions equal those of the predictor that was saved, bit for bit.
        The library versions it was saved with are recorded, not required: no scikit-learn object
        is rebuilt.

        Raises:
            ModelMismatchError: corrupt or crafted file, the former pickle format (v1), another format
                version, another feature set or another model than expected.
        """
        file = Path(path)
        fix = predictor_io.fix_for(file)
        metadata, payload = predictor_io.read_container(file)
        wanted = list(expect_features) if expect_features is not None else list(FEATURES)
        if metadata.get("feature_names") != wanted:
            raise ModelMismatchError(
                f"predictor file {file} uses features {metadata.get('feature_names')}, expected {wanted}; {fix}"
            )
        saved_model = (metadata.get("deployment") or {}).get("model") if isinstance(metadata.get("deployment"), dict) else None
        if expect_model is not None and saved_model != expect_model:
            raise ModelMismatchError(
                f"predictor file {file} is for model {saved_model!r}, not {expect_model!r}; "
                f"fit one from a {expect_model!r} profile with `pals fit PROFILE --out MODEL`"
            )
        arrays = predictor_io.read_arrays(payload, file)
        try:
            return cls._restore(metadata, arrays, file)
        except ModelMismatchError:
            raise
        except (PalsError, TypeError, ValueError, KeyError, AttributeError, OverflowError) as error:
            if isinstance(error, KeyError):
                message = f"no {error.args[0]!r} entry"
            else:
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ModelMismatchError(f"predictor file {file} has invalid metadata ({message}); {fix}") from None

    @classmethod
    def _restore(cls, metadata: dict[str, Any], arrays: dict[str, np.ndarray], file: Path) -> "PowerPerfPredictor":
        """Rebuild a predictor from a checked header and checked arrays (`load`'s second half)."""
        n_features = len(FEATURES)
        params = metadata["params"]
        detrend = params["detrend"]
        if not isinstance(detrend, bool):
            raise ValueError(f"params.detrend must be true or false, got {detrend!r}")
        predictor = cls(
            n_estimators=whole_in(params["n_estimators"], "params.n_estimators", 1, 100_000),
            random_state=params["random_state"],
            min_samples_leaf=params["min_samples_leaf"],
            max_features=params["max_features"],
            detrend=detrend,
        )
        predictor.trends_ = {}
        predictor._packed = {}
        for target in TARGETS:
            predictor._packed[target] = PackedForest(**predictor_io.check_forest(arrays, target, n_features, file))
            trend = predictor_io.check_trend(arrays, target, n_features, file) if detrend else None
            predictor.trends_[target] = None if trend is None else Trend.from_arrays(**trend)
        deployment = metadata["deployment"]
        if not isinstance(deployment, dict) or not all(isinstance(deployment.get(k), str) for k in ("model", "gpu")):
            raise ValueError("deployment must name the model and the GPU")
        predictor.deployment_ = {
            "model": deployment["model"],
            "gpu": deployment["gpu"],
            **{k: whole_in(deployment[k], f"deployment.{k}", 1, 4096) for k in ("num_gpus", "tp", "ep")},
        }
        predictor.syspower_ = SysPowerFit.from_dict(metadata["syspower"])
        predictor.feature_names_ = tuple(FEATURES)
        predictor.n_features_in_ = n_features
        predictor.caps_ = predictor_io.check_array(arrays, "caps_w", "float64", file)
        predictor.batches_ = predictor_io.check_array(arrays, "batches", "int64", file).astype(int)
        workload = metadata.get("workload")
        predictor.workload_ = None if workload is None else WorkloadDescriptor.from_dict(workload)
        profile_hash = metadata["profile_hash"]
        if not isinstance(profile_hash, str):
            raise ValueError("profile_hash must be a string")
        predictor.profile_hash_ = profile_hash
        importances = metadata.get("feature_importances") or {}
        predictor.feature_importances_ = {
            t: {name: float(importances.get(t, {}).get(name, float("nan"))) for name in FEATURES} for t in TARGETS
        }
        return predictor


def _workload_from_rows(profile: Profile) -> WorkloadDescriptor | None:
    prompt = profile.column("mean_prompt_tokens")
    output = profile.column("mean_output_tokens")
    rate = profile.column("arrival_rate_rps")
    if not (np.all(np.isfinite(prompt)) and np.all(np.isfinite(output))) or np.any(prompt <= 0) or np.any(output <= 0):
        return None
    finite_rate = rate[np.isfinite(rate)]
    return WorkloadDescriptor(
        mean_prompt_tokens=float(np.mean(prompt)),
        mean_output_tokens=float(np.mean(output)),
        arrival_rate_rps=float(np.mean(finite_rate)) if finite_rate.size == rate.size and rate.size else None,
    )


# -- held-out evaluation --------------------------------------------------------


@dataclass(frozen=True)
class EvaluationReport:
    """Held-out error of the predictor, k-fold by configuration.

    Attributes:
        mape_throughput_pct: Mean absolute percentage error of throughput on held-out configurations.
        mape_power_pct: Same for summed GPU power.
        feature_importance: Permutation importance of each feature (mean of both targets, sums to 1).
        feature_importance_by_target: The same per target.
        k: Folds used.
        n_configurations: Distinct configurations in the profile.
        syspower: The system-power fit on the whole profile.
    """

    mape_throughput_pct: float
    mape_power_pct: float
    feature_importance: dict[str, float]
    feature_importance_by_target: dict[str, dict[str, float]]
    k: int
    n_configurations: int
    syspower: SysPowerFit = field(default_factory=SysPowerFit)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mape_throughput_pct": self.mape_throughput_pct,
            "mape_power_pct": self.mape_power_pct,
            "feature_importance": self.feature_importance,
            "feature_importance_by_target": self.feature_importance_by_target,
            "k": self.k,
            "n_configurations": self.n_configurations,
            "syspower_source": self.syspower.source,
        }
        if self.syspower.source == "fitted":
            out.update(
                syspower_alpha=self.syspower.alpha,
                syspower_beta_w=self.syspower.beta_w,
                syspower_r2=self.syspower.r2,
                syspower_mae_w=self.syspower.mae_w,
            )
        return out


def _configuration_groups(X: np.ndarray) -> np.ndarray:
    """Group id per row: rows with identical features are one configuration."""
    _, groups = np.unique(X, axis=0, return_inverse=True)
    return groups.reshape(-1)


def evaluate(
    profile: Profile,
    k: int = 5,
    random_state: int = 0,
    n_estimators: int = 100,
    detrend: bool = True,
    n_repeats: int = 5,
) -> EvaluationReport:
    """k-fold cross-validation BY CONFIGURATION: every row of a configuration is held out together.

    Args:
        profile: The profile to evaluate on.
        k: Folds (reduced to the number of configurations when there are fewer).
        random_state: Seed of the fold split, the forests and the permutations.
        n_estimators: Trees per forest.
        detrend: As in `PowerPerfPredictor`.
        n_repeats: Permutations per feature for the importances.
    """
    if k < 2:
        raise ConfigError(f"k must be at least 2 folds, got {k}")
    X = features_from_profile(profile)
    groups = _configuration_groups(X)
    n_groups = int(groups.max()) + 1
    if n_groups < 2:
        raise ProfileError(f"profile {profile.path or ''} has one configuration; held-out evaluation needs at least 2")
    k = min(k, n_groups)
    rng = np.random.default_rng(random_state)
    fold_of_group = np.empty(n_groups, dtype=int)
    for fold, members in enumerate(np.array_split(rng.permutation(n_groups), k)):
        fold_of_group[members] = fold
    fold_of_row = fold_of_group[groups]

    y_t = profile.column("throughput_tps")
    y_p = profile.column("gpu_power_total_w")
    pred_t = np.empty_like(y_t)
    pred_p = np.empty_like(y_p)
    for fold in range(k):
        test = fold_of_row == fold
        train = Profile(metadata=profile.metadata, rows=[r for r, t in zip(profile.rows, test) if not t])
        model = PowerPerfPredictor(n_estimators=n_estimators, random_state=random_state, detrend=detrend).fit(train)
        prediction = model.predict_features(X[test])
        pred_t[test] = prediction.throughput_tps
        pred_p[test] = prediction.gpu_power_total_w

    full = PowerPerfPredictor(n_estimators=n_estimators, random_state=random_state, detrend=detrend).fit(profile)
    by_target = _permutation_importance(full, X, {"throughput_tps": y_t, "gpu_power_total_w": y_p}, n_repeats, rng)
    combined = {name: float(np.mean([by_target[t][name] for t in TARGETS])) for name in FEATURES}
    return EvaluationReport(
        mape_throughput_pct=_mape_pct(y_t, pred_t),
        mape_power_pct=_mape_pct(y_p, pred_p),
        feature_importance=combined,
        feature_importance_by_target=by_target,
        k=k,
        n_configurations=n_groups,
        syspower=full.syspower_,
    )


def _mape_pct(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(100.0 * np.mean(np.abs(predicted - actual) / np.abs(actual)))


def _permutation_importance(
    model: PowerPerfPredictor, X: np.ndarray, targets: dict[str, np.ndarray], n_repeats: int, rng
) -> dict[str, dict[str, float]]:
    """Rise in MAPE when one feature's column is shuffled, normalised to sum to 1 per target."""

    def errors(Xp: np.ndarray) -> dict[str, float]:
        prediction = model.predict_features(Xp)
        return {
            "throughput_tps": _mape_pct(targets["throughput_tps"], prediction.throughput_tps),
            "gpu_power_total_w": _mape_pct(targets["gpu_power_total_w"], prediction.gpu_power_total_w),
        }

    base = errors(X)
    rise = {t: np.zeros(len(FEATURES)) for t in TARGETS}
    for j in range(len(FEATURES)):
        if np.ptp(X[:, j]) == 0:
            continue  # a constant feature cannot matter in this profile
        for _ in range(n_repeats):
            Xp = X.copy()
            Xp[:, j] = rng.permutation(Xp[:, j])
            err = errors(Xp)
            for t in TARGETS:
                rise[t][j] += max(err[t] - base[t], 0.0) / n_repeats
    out: dict[str, dict[str, float]] = {}
    for t in TARGETS:
        total = rise[t].sum()
        shares = rise[t] / total if total > 0 else rise[t]
        out[t] = {name: float(share) for name, share in zip(FEATURES, shares)}
    return out
