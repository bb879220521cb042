"""A logistic head: one L2-regularised logistic regression over standardised router features.

Fitted with Newton's method in numpy (`sluice.stats.fit_logistic`): a few hundred features and a few thousand
labels fit in well under a second. The logistic router (`learned.py`) averages a text-feature head and a text +
embedding head for "premium needed"; the per-tier router (`per_tier.py`) does the same for each tier's "right".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sluice.stats import fit_logistic


@dataclass
class Head:
    """One logistic regression over the first `n_features` feature columns (standardised)."""

    n_features: int
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    l2: float

    def prob(self, x: np.ndarray) -> np.ndarray:
        z = (x[:, : self.n_features] - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-np.clip(z @ self.weights + self.bias, -30, 30)))

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float) -> "Head":
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        w, b = fit_logistic((x - mean) / scale, y, l2=l2)
        return cls(x.shape[1], mean, scale, w, b, l2)

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Its arrays for `weights.npz`, names prefixed (`from_arrays` reads them back)."""
        return {f"{prefix}_mean": self.mean, f"{prefix}_scale": self.scale, f"{prefix}_weights": self.weights,
                f"{prefix}_bias": np.array([self.bias])}

    @classmethod
    def from_arrays(cls, arrays, prefix: str, n_features: int, l2: float) -> "Head":
        return cls(n_features, arrays[f"{prefix}_mean"], arrays[f"{prefix}_scale"], arrays[f"{prefix}_weights"],
                   float(arrays[f"{prefix}_bias"][0]), l2)
