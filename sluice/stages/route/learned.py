"""The learned router: one number per prompt, the estimated probability that the premium tier is needed.

Like RouteLLM's routers it has one job (`score`), and tiering is that score against thresholds chosen per batch
(`sluice.stages.route.policies`). The model averages L2-regularised logistic regressions ("heads") over standardised gatekeeper features
(`sluice.stages.route.features`): one over the text features, one over text + MiniLM embedding. Each is fitted with
Newton's method in numpy: a few hundred features and a few thousand labels
fit in well under a second, and there is no extra dependency to install.

Labels (`train_router`): `prompt`, `cheap_ok` (the cheap tier's answer was good enough) and optionally
`premium_ok`. The target is "premium is needed": `not cheap_ok`, and when `premium_ok` is known, `not cheap_ok and
premium_ok` (a row both tiers get wrong is not worth escalating: paying premium for it buys nothing).

Saved as a folder: `router.json` (kind, settings, feature names, training summary) + `weights.npz` (per head:
mean, scale, weights, bias). `load_router` reads a folder of any kind: these logistic heads, the kNN router
(`knn.py`) or the per-tier router (`per_tier.py`); `choose.py` picks among them by cross-validation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from sluice.stages.route.features import TEXT_FEATURES, router_features
from sluice.stages.route.heads import Head
from sluice.stages.route.knn import KIND as KNN
from sluice.stages.route.knn import KnnRouter, load_knn
from sluice.stages.route.per_tier import KIND as PER_TIER
from sluice.stages.route.per_tier import PerTierRouter, load_per_tier
from sluice.stages.route.training import FORMAT_VERSION, RouterError, premium_needed

KIND = "logistic-heads"
__all__ = ["KIND", "LearnedRouter", "LearnedScorer", "RouterError", "load_router", "premium_needed", "train_router"]

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

    def as_scorer(self) -> "LearnedScorer":
        return LearnedScorer(self)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for i, h in enumerate(self.heads):
            arrays.update(h.arrays(f"h{i}"))
        np.savez(folder / "weights.npz", **arrays)
        meta = {"format": FORMAT_VERSION, "kind": KIND, "use_embeddings": self.use_embeddings,
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


def load_router(folder: str | Path) -> "LearnedRouter | KnnRouter | PerTierRouter":
    """A saved router of any kind (`router.json`'s `kind`: logistic heads, knn or per-tier)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "router.json").read_text())
        arrays = np.load(folder / "weights.npz")
    except (OSError, ValueError) as exc:
        raise RouterError(f"{folder}: not a saved router (router.json + weights.npz): {exc}") from exc
    if meta.get("format") != FORMAT_VERSION or meta.get("text_features") != TEXT_FEATURES:
        raise RouterError(f"{folder}: saved by an incompatible version of Sluice; retrain it")
    kind = meta.get("kind", KIND)
    if kind == KNN:
        return load_knn(meta, arrays)
    if kind == PER_TIER:
        return load_per_tier(meta, arrays)
    if kind != KIND:
        raise RouterError(f"{folder}: unknown router kind {kind!r} (known: {KIND}, {KNN}, {PER_TIER})")
    heads = [Head.from_arrays(arrays, f"h{i}", int(h["n_features"]), float(h["l2"])) for i, h in enumerate(meta["heads"])]
    return LearnedRouter(use_embeddings=bool(meta["use_embeddings"]), heads=heads, target=meta["target"],
                         trained_on=meta.get("trained_on", {}))


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
