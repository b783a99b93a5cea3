"""The predictor's trees and trend surfaces as plain arrays: what prediction walks and what the file keeps.

`PackedForest` flattens every tree of a fitted scikit-learn forest into index and value arrays and
walks them all at once with numpy (about 10x faster than `RandomForestRegressor.predict`, with
identical numbers); `Trend` is the least-squares log-space surface the forest corrects. Both are
built either from a fit or from a predictor file's arrays (`pals.model.predictor_io`), so a loaded
predictor predicts exactly what the fitted one did.
"""

from __future__ import annotations

import numpy as np


class Trend:
    """Least-squares log-space surface that the forest corrects (see the predictor's module docstring).

    Columns: the hat functions of a linear spline in log2 batch cap with a knot at every profiled batch
    cap (they sum to 1, so they carry the intercept), the power cap scaled to 0-1 (c) and c squared, the
    product log2(batch) x c, and one linear column per other feature that varies in the profile; every
    input clipped to the profiled range. The spline follows throughput where it flattens (KV-cache or
    compute bound at batch 256-1024); the former quadratic in log2 batch overshot there (12 % at batch
    512 between measured 256 and 1024 on an H100).
    """

    MAX_KNOTS = 64
    """Most knots a trend has: a profile with more distinct batch caps gets 64 spread evenly over them."""

    def __init__(self) -> None:
        self.low_: np.ndarray | None = None
        self.high_: np.ndarray | None = None
        self.knots_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None

    def _design(self, X: np.ndarray) -> np.ndarray:
        Xc = np.clip(X, self.low_, self.high_)
        lb = np.log2(np.maximum(Xc[:, 1], 1.0))
        span = np.where(self.high_ > self.low_, self.high_ - self.low_, 1.0)
        c = (Xc[:, 0] - self.low_[0]) / span[0]
        unit = np.eye(self.knots_.size)
        columns = [np.interp(lb, self.knots_, unit[i]) for i in range(self.knots_.size)]
        columns += [c, c * c, lb * c]
        for j in range(2, X.shape[1]):
            if self.high_[j] > self.low_[j]:
                columns.append((Xc[:, j] - self.low_[j]) / span[j])
        return np.column_stack(columns)

    @staticmethod
    def n_terms(low: np.ndarray, high: np.ndarray, n_knots: int) -> int:
        """Coefficients of a trend with this clipping range and this many knots."""
        return n_knots + 3 + int(np.sum(high[2:] > low[2:]))

    def fit(self, X: np.ndarray, log_y: np.ndarray) -> "Trend":
        self.low_ = X.min(axis=0)
        self.high_ = X.max(axis=0)
        knots = np.log2(np.unique(np.maximum(X[:, 1], 1.0)))
        if knots.size > self.MAX_KNOTS:  # keep the ends, spread the rest
            knots = knots[np.round(np.linspace(0, knots.size - 1, self.MAX_KNOTS)).astype(int)]
        self.knots_ = knots
        design = self._design(X)
        self.coef_, *_ = np.linalg.lstsq(design, log_y, rcond=None)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._design(X) @ self.coef_

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """What the predictor file keeps of this surface (exact float64 values)."""
        return {prefix + "trend_low": self.low_, prefix + "trend_high": self.high_,
                prefix + "trend_knots": self.knots_, prefix + "trend_coef": self.coef_}

    @classmethod
    def from_arrays(cls, low: np.ndarray, high: np.ndarray, knots: np.ndarray, coef: np.ndarray) -> "Trend":
        trend = cls()
        trend.low_, trend.high_, trend.knots_, trend.coef_ = low, high, knots, coef
        return trend


class PackedForest:
    """All trees of a fitted forest in flat arrays, walked at once with numpy.

    Leaves point to themselves, so walking `max_depth` steps from the roots lands
    every (row, tree) pair on its leaf. Comparisons are done on float32 inputs, as
    scikit-learn's trees do, so results equal `forest.predict` exactly.
    """

    def __init__(self, feature, threshold, left, right, value, roots, depth: int) -> None:
        self.feature = np.asarray(feature).astype(np.intp)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self.left = np.asarray(left).astype(np.intp)
        self.right = np.asarray(right).astype(np.intp)
        self.value = np.asarray(value, dtype=np.float64)
        self.roots = np.asarray(roots).astype(np.intp)
        self.depth = int(depth)

    @classmethod
    def from_forest(cls, forest) -> "PackedForest":
        """Pack a fitted `RandomForestRegressor`."""
        features, thresholds, lefts, rights, values, roots = [], [], [], [], [], []
        offset = 0
        depth = 0
        for estimator in forest.estimators_:
            tree = estimator.tree_
            n = tree.node_count
            leaf = tree.children_left == -1
            idx = np.arange(n)
            features.append(np.where(leaf, 0, tree.feature))
            thresholds.append(np.where(leaf, np.inf, tree.threshold))
            lefts.append(np.where(leaf, idx, tree.children_left) + offset)
            rights.append(np.where(leaf, idx, tree.children_right) + offset)
            values.append(tree.value[:, 0, 0])
            roots.append(offset)
            offset += n
            depth = max(depth, int(tree.max_depth))
        return cls(np.concatenate(features), np.concatenate(thresholds).astype(np.float64), np.concatenate(lefts),
                   np.concatenate(rights), np.concatenate(values).astype(np.float64), np.asarray(roots), depth)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """What the predictor file keeps of these trees (int64 indices, float64 values)."""
        return {
            prefix + "feature": self.feature.astype(np.int64),
            prefix + "threshold": self.threshold,
            prefix + "left": self.left.astype(np.int64),
            prefix + "right": self.right.astype(np.int64),
            prefix + "value": self.value,
            prefix + "roots": self.roots.astype(np.int64),
            prefix + "depth": np.asarray(self.depth, dtype=np.int64),
        }

    def per_tree(self, X: np.ndarray) -> np.ndarray:
        """Leaf values, shape (rows, trees)."""
        X32 = np.ascontiguousarray(X, dtype=np.float32).astype(np.float64)
        rows = np.arange(X32.shape[0])[:, None]
        node = np.broadcast_to(self.roots, (X32.shape[0], self.roots.size)).copy()
        for _ in range(self.depth):
            go_left = X32[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return self.value[node]
