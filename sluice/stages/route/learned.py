"""The learned router: one number per prompt, the estimated probability that the premium tier is needed.

Like RouteLLM's routers it has one job (`score`), and tiering is that score against thresholds chosen per batch
(`sluice.stages.route.policies`). The model averages L2-regularised logistic regressions ("heads") over standardised gatekeeper features
(`sluice.stages.route.features`): one over the text features, one over text + MiniLM embedding. Each is fitted with
Newton's method in numpy: a few hundred features and a few thousand labels
fit in well under a second, and there is no extra dependency to install.

Labels (`train_router`): `prompt`, `cheap_ok` (the cheap tier's answer was good enough) and optionally
`premium_ok`. The target is "premium is needed": `not cheap_ok`, and when `premium_ok` is known, `not cheap_ok and
premium_ok` (a row both tiers get wrong is not worth escalating: paying premium for it buys nothing).

Saved as a folder: `router.json` (settings, feature names, training summary) + `weights.npz` (per head: mean,
scale, weights, bias).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from sluice.stages.route.features import TEXT_FEATURES, router_features
from sluice.stats import fit_logistic

FORMAT_VERSION = 2


class RouterError(ValueError):
    """Labels or a saved router that cannot be used."""


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


@dataclass
class LearnedRouter:
    """The average of its heads' probabilities: a text-feature head, plus a text + embedding head when
    `use_embeddings`. (Averaging the two beat either alone on GSM8K: bench/results/routing_quality.md.)"""

    use_embeddings: bool
    heads: list[Head]
    target: str
    trained_on: dict = field(default_factory=dict)

    def score_features(self, x: np.ndarray) -> np.ndarray:
        return np.mean([h.prob(x) for h in self.heads], axis=0)

    def score(self, prompts: Sequence[str] | pl.Series, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Estimated probability, per prompt, that the premium tier is needed."""
        return self.score_features(router_features(prompts, self.use_embeddings, embeddings))

    def explain(self, x: np.ndarray, top: int = 2) -> list[str]:
        """The text features that pushed each row's score up the most (for `route_reason`)."""
        h = self.heads[0]
        k = len(TEXT_FEATURES)
        contrib = (x[:, :k] - h.mean[:k]) / h.scale[:k] * h.weights[:k]
        order = np.argsort(-contrib, axis=1)[:, :top]
        return [",".join(TEXT_FEATURES[j] for j in row) for row in order]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for i, h in enumerate(self.heads):
            arrays.update({f"h{i}_mean": h.mean, f"h{i}_scale": h.scale, f"h{i}_weights": h.weights,
                           f"h{i}_bias": np.array([h.bias])})
        np.savez(folder / "weights.npz", **arrays)
        meta = {"format": FORMAT_VERSION, "kind": "logistic-heads", "use_embeddings": self.use_embeddings,
                "heads": [{"n_features": h.n_features, "l2": h.l2} for h in self.heads], "target": self.target,
                "text_features": TEXT_FEATURES, "trained_on": self.trained_on}
        (folder / "router.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder


@dataclass
class LearnedScorer:
    """A `LearnedRouter` as a `Scorer` (`scorers.py`): its premium probability, and the text features that pushed
    each row's score up the most."""

    router: LearnedRouter
    source = "router"
    label = "p_premium"

    def score(self, prompts: pl.Series) -> tuple[np.ndarray, list[str]]:
        x = router_features(prompts, self.router.use_embeddings)
        return self.router.score_features(x), self.router.explain(x)


def load_router(folder: str | Path) -> LearnedRouter:
    folder = Path(folder)
    try:
        meta = json.loads((folder / "router.json").read_text())
        arrays = np.load(folder / "weights.npz")
    except (OSError, ValueError) as exc:
        raise RouterError(f"{folder}: not a saved router (router.json + weights.npz): {exc}") from exc
    if meta.get("format") != FORMAT_VERSION or meta.get("text_features") != TEXT_FEATURES:
        raise RouterError(f"{folder}: saved by an incompatible version of Sluice; retrain it")
    heads = [Head(int(h["n_features"]), arrays[f"h{i}_mean"], arrays[f"h{i}_scale"], arrays[f"h{i}_weights"],
                  float(arrays[f"h{i}_bias"][0]), float(h["l2"])) for i, h in enumerate(meta["heads"])]
    return LearnedRouter(use_embeddings=bool(meta["use_embeddings"]), heads=heads, target=meta["target"],
                         trained_on=meta.get("trained_on", {}))


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
    labels: pl.DataFrame,
    use_embeddings: bool = True,
    l2_text: float = 100.0,
    l2_embedding: float = 1000.0,
    embeddings: np.ndarray | None = None,
) -> LearnedRouter:
    """Fit a router on labelled prompts. `embeddings` (row-aligned) skips re-embedding when you have them.

    The L2 strengths default to what 5-fold cross-validation chose on GSM8K's training split (the embedding head
    needs strong regularisation: 390 features, about a thousand labels)."""
    y, target = premium_needed(labels)
    if labels.height < 2 or y.min() == y.max():
        raise RouterError(f"labels need both outcomes of `{target}` to learn from ({labels.height} rows)")
    x = router_features(labels["prompt"], use_embeddings, embeddings)
    heads = [Head.fit(x[:, : len(TEXT_FEATURES)], y, l2_text)]
    if use_embeddings:
        heads.append(Head.fit(x, y, l2_embedding))
    return LearnedRouter(
        use_embeddings=use_embeddings, heads=heads, target=target,
        trained_on={"rows": labels.height, "positive_share": round(float(y.mean()), 4)},
    )
