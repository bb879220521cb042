"""The learned router: one number per prompt, the estimated probability that the premium tier is needed.

Like RouteLLM's routers it has one job (`score`), and tiering is that score against thresholds chosen per batch
(`sluice.budget`). The model is an L2-regularised logistic regression over standardised gatekeeper features
(`sluice.router.features`), fitted with Newton's method in numpy: a few hundred features and a few thousand labels
fit in well under a second, and there is no extra dependency to install.

Labels (`train_router`): `prompt`, `cheap_ok` (the cheap tier's answer was good enough) and optionally
`premium_ok`. The target is "premium is needed": `not cheap_ok`, and when `premium_ok` is known, `not cheap_ok and
premium_ok` (a row both tiers get wrong is not worth escalating: paying premium for it buys nothing).

Saved as a folder: `router.json` (settings, feature names, training summary) + `weights.npz` (mean, scale, w, b).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from sluice.router.features import TEXT_FEATURES, router_features

FORMAT_VERSION = 1


class RouterError(ValueError):
    """Labels or a saved router that cannot be used."""


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> tuple[np.ndarray, float]:
    """Weights and bias minimising mean log-loss + l2/(2n)·|w|² (the bias is not penalised); Newton steps."""
    n, d = x.shape
    xa = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xa @ w, -30, 30)))
        grad = xa.T @ (p - y) + reg * w
        hess = (xa * (p * (1 - p))[:, None]).T @ xa + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w[:-1], float(w[-1])


@dataclass
class LearnedRouter:
    use_embeddings: bool
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    l2: float
    target: str
    trained_on: dict = field(default_factory=dict)

    @property
    def feature_names(self) -> list[str]:
        return TEXT_FEATURES + ([f"emb_{i}" for i in range(len(self.weights) - len(TEXT_FEATURES))]
                                if self.use_embeddings else [])

    def score_features(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-np.clip(z @ self.weights + self.bias, -30, 30)))

    def score(self, prompts: Sequence[str] | pl.Series, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Estimated probability, per prompt, that the premium tier is needed."""
        return self.score_features(router_features(prompts, self.use_embeddings, embeddings))

    def explain(self, x: np.ndarray, top: int = 2) -> list[str]:
        """The text features that pushed each row's score up the most (for `route_reason`)."""
        z = (x[:, : len(TEXT_FEATURES)] - self.mean[: len(TEXT_FEATURES)]) / self.scale[: len(TEXT_FEATURES)]
        contrib = z * self.weights[: len(TEXT_FEATURES)]
        order = np.argsort(-contrib, axis=1)[:, :top]
        return [",".join(TEXT_FEATURES[j] for j in row) for row in order]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "weights.npz", mean=self.mean, scale=self.scale, weights=self.weights,
                 bias=np.array([self.bias]))
        meta = {"format": FORMAT_VERSION, "kind": "logistic", "use_embeddings": self.use_embeddings,
                "l2": self.l2, "target": self.target, "text_features": TEXT_FEATURES, "trained_on": self.trained_on}
        (folder / "router.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder


def load_router(folder: str | Path) -> LearnedRouter:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "router.json").read_text())
        arrays = np.load(folder / "weights.npz")
    except (OSError, ValueError) as exc:
        raise RouterError(f"{folder}: not a saved router (router.json + weights.npz): {exc}") from exc
    if meta.get("format") != FORMAT_VERSION or meta.get("text_features") != TEXT_FEATURES:
        raise RouterError(f"{folder}: saved by an incompatible version of Sluice; retrain it")
    return LearnedRouter(
        use_embeddings=bool(meta["use_embeddings"]), mean=arrays["mean"], scale=arrays["scale"],
        weights=arrays["weights"], bias=float(arrays["bias"][0]), l2=float(meta["l2"]), target=meta["target"],
        trained_on=meta.get("trained_on", {}),
    )


def premium_needed(labels: pl.DataFrame) -> tuple[np.ndarray, str]:
    """The training target and its description (see the module docstring)."""
    for col in ("prompt", "cheap_ok"):
        if col not in labels.columns:
            raise RouterError(f"labels need a `{col}` column (have: {', '.join(labels.columns)})")
    cheap_ok = labels["cheap_ok"].cast(pl.Boolean)
    if cheap_ok.null_count():
        raise RouterError(f"`cheap_ok` has {cheap_ok.null_count()} null values")
    y = ~cheap_ok.to_numpy()
    target = "not cheap_ok"
    if "premium_ok" in labels.columns and labels["premium_ok"].null_count() < labels.height:
        premium_ok = labels["premium_ok"].cast(pl.Boolean).fill_null(True).to_numpy()
        y = y & premium_ok
        target = "not cheap_ok and premium_ok"
    return y.astype(np.float64), target


def train_router(
    labels: pl.DataFrame, use_embeddings: bool = True, l2: float = 30.0, embeddings: np.ndarray | None = None
) -> LearnedRouter:
    """Fit a router on labelled prompts. `embeddings` (row-aligned) skips re-embedding when you have them."""
    y, target = premium_needed(labels)
    if labels.height < 2 or y.min() == y.max():
        raise RouterError(f"labels need both outcomes of `{target}` to learn from ({labels.height} rows)")
    x = router_features(labels["prompt"], use_embeddings, embeddings)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    w, b = fit_logistic((x - mean) / scale, y, l2=l2)
    return LearnedRouter(
        use_embeddings=use_embeddings, mean=mean, scale=scale, weights=w, bias=b, l2=l2, target=target,
        trained_on={"rows": labels.height, "positive_share": round(float(y.mean()), 4)},
    )
