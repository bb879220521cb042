"""The per-tier router (MixLLM's shape): one quality predictor per tier, then the cheapest tier that clears a bar.

For each tier, cheapest first (`<tier>_ok` label columns, `training.outcomes`), a predictor estimates P(that tier
answers the prompt right): the average of two logistic heads (`heads.py`), one over the text features and one over
text features + MiniLM embedding, as the logistic router does for "premium needed". Each tier's predictor learns
from the rows where that tier's outcome is known, so tiers may be labelled on different rows (a middle tier seen
only on escalated rows, say).

Two ways to use the predictions:
    cheapest_tier   MixLLM's rule for any number of tiers: the cheapest tier whose predicted P(right) is at least
                    `bar`, else the tier predicted best
    score           a router score for the policies (`policies.py`): P(last tier right) - P(first tier right),
                    clipped to [0, 1], the accuracy the premium tier is expected to add over the cheapest, which is
                    how the budget policy reads a score. On two tiers: P(premium right) - P(cheap right).

Saved in the router folder format: `router.json` (kind "per-tier", tiers, heads) + `weights.npz` (t<i>_h<j>_*).
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
from sluice.stages.route.training import FORMAT_VERSION, RouterError, outcomes

KIND = "per-tier"


@dataclass
class PerTierRouter:
    tiers: list[str]
    use_embeddings: bool
    heads: list[list[Head]]  # per tier: the heads whose probabilities are averaged
    target: str = "per tier: P(right)"
    trained_on: dict = field(default_factory=dict)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """(rows, tiers) predicted P(right)."""
        return np.column_stack([np.mean([h.prob(x) for h in heads], axis=0) for heads in self.heads])

    def predict(self, prompts: Sequence[str] | pl.Series, embeddings: np.ndarray | None = None) -> np.ndarray:
        return self.predict_features(router_features(prompts, self.use_embeddings, embeddings))

    def score_features(self, x: np.ndarray) -> np.ndarray:
        p = self.predict_features(x)
        return np.clip(p[:, -1] - p[:, 0], 0.0, 1.0)

    def score(self, prompts: Sequence[str] | pl.Series, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Accuracy the last tier is expected to add over the first, per prompt."""
        return self.score_features(router_features(prompts, self.use_embeddings, embeddings))

    def as_scorer(self) -> "PerTierScorer":
        return PerTierScorer(self)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for t, heads in enumerate(self.heads):
            for j, h in enumerate(heads):
                arrays.update(h.arrays(f"t{t}_h{j}"))
        np.savez(folder / "weights.npz", **arrays)
        meta = {"format": FORMAT_VERSION, "kind": KIND, "tiers": self.tiers, "use_embeddings": self.use_embeddings,
                "heads": [[{"n_features": h.n_features, "l2": h.l2} for h in heads] for heads in self.heads],
                "target": self.target, "text_features": TEXT_FEATURES, "trained_on": self.trained_on}
        (folder / "router.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder


def cheapest_tier(p: np.ndarray, bar: float) -> np.ndarray:
    """Tier index per row (MixLLM's rule): the first column of `p` (cheapest first) at least `bar`, else the
    column predicted best."""
    clears = p >= bar
    return np.where(clears.any(axis=1), clears.argmax(axis=1), p.argmax(axis=1)).astype(np.int64)


@dataclass
class PerTierScorer:
    """A `PerTierRouter` as a `Scorer`: its score, and each tier's predicted P(right)."""

    router: PerTierRouter
    source = "per-tier"
    label = "gain"

    def score(self, prompts: pl.Series) -> tuple[np.ndarray, list[str]]:
        p = self.router.predict_features(router_features(prompts, self.router.use_embeddings))
        why = [" ".join(f"{t}={v:.2f}" for t, v in zip(self.router.tiers, row)) for row in p]
        return np.clip(p[:, -1] - p[:, 0], 0.0, 1.0), [f"P(right) {w}" for w in why]


def load_per_tier(meta: dict, arrays) -> PerTierRouter:
    heads = [[Head.from_arrays(arrays, f"t{t}_h{j}", int(h["n_features"]), float(h["l2"])) for j, h in enumerate(hs)]
             for t, hs in enumerate(meta["heads"])]
    return PerTierRouter(list(meta["tiers"]), bool(meta["use_embeddings"]), heads, meta.get("target", ""),
                         meta.get("trained_on", {}))


def train_per_tier(labels: pl.DataFrame, tiers: list[str] | None = None, use_embeddings: bool = True,
                   l2_text: float = 100.0, l2_embedding: float = 1000.0,
                   embeddings: np.ndarray | None = None) -> PerTierRouter:
    """Fit one quality predictor per tier on labelled prompts (`prompt` + `<tier>_ok` columns, cheapest first; or
    `tiers` naming them). The L2 strengths are the logistic router's (cross-validated on GSM8K)."""
    names, ok = outcomes(labels, tiers)
    x = router_features(labels["prompt"], use_embeddings, embeddings)
    k = len(TEXT_FEATURES)
    heads, known = [], {}
    for t, name in enumerate(names):
        rows = ~np.isnan(ok[:, t])
        if not rows.any():
            raise RouterError(f"`{name}_ok` has no known outcome to learn from")
        y = ok[rows, t]
        known[name] = {"rows": int(rows.sum()), "right": round(float(y.mean()), 4)}
        tier_heads = [Head.fit(x[rows, :k], y, l2_text)]
        if use_embeddings:
            tier_heads.append(Head.fit(x[rows], y, l2_embedding))
        heads.append(tier_heads)
    return PerTierRouter(names, use_embeddings, heads, trained_on={"rows": labels.height, "tiers": known})
