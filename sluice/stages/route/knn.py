"""The kNN router: a prompt goes to premium as often as premium paid off for the labelled prompts nearest to it.

Independent re-evaluations of routers (arXiv 2505.12601; LLMRouterBench, arXiv 2601.07206) find k nearest
neighbours over a sentence embedding as good as most learned routers. Here:

    vector   the prompt's all-MiniLM-L6-v2 embedding (unit length, `models.embeddings`), followed by its
             standardised text features (`features.py`) times `text_weight`, the whole renormalised; neighbours
             are the training prompts with the highest cosine similarity
    gain     per training prompt, premium_ok - cheap_ok (`training.routing_gain`): +1 only premium got it right,
             -1 only the cheap tier did, 0 both or neither
    score    the neighbours' weighted mean gain, shrunk toward the training mean by one pseudo-neighbour:
             (sum w_i g_i + mean_gain) / (sum w_i + 1), clipped to [0, 1]. It estimates the accuracy premium adds
             over the cheap tier for this prompt, which is how the budget policy reads a score
             (`policies.expected_quality`: q_premium - q_cheap = score). Clipping only ties rows where the cheap tier
             is expected to do at least as well, the last ones any share would send to premium.
    weights  `uniform` (1), `similarity` (the cosine), or `softmax` (exp((cos - max cos) / 0.05))

k, the weighting and `text_weight` are chosen by 5-fold cross-validation on the training labels (APGR,
`training.apgr`), all candidates scored from one similarity matrix per text weight.

Saved in the router folder format: `router.json` (kind "knn", the chosen settings, every candidate's score) and
`weights.npz` (the training vectors as float16, their gains as int8, the text features' mean and scale).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl

from sluice.stages.route.features import TEXT_FEATURES, router_features
from sluice.stages.route.training import (
    FOLDS,
    FORMAT_VERSION,
    RouterError,
    apgr,
    folds,
    routing_gain,
    two_tier_outcomes,
)

KIND = "knn"
K_GRID = (5, 10, 25, 50, 100, 200)
WEIGHTINGS = ("uniform", "similarity", "softmax")
TEXT_WEIGHTS = (0.0, 0.1)
SOFTMAX_TEMPERATURE = 0.05
CHUNK = 2048  # query rows per similarity block: memory stays rows x CHUNK floats


def _vectors(x: np.ndarray, mean: np.ndarray, scale: np.ndarray, text_weight: float) -> np.ndarray:
    """Router features (text, then embedding) -> unit vectors of embedding + text_weight x standardised text."""
    k = len(TEXT_FEATURES)
    v = x[:, k:]
    if text_weight > 0:
        v = np.hstack([v, text_weight * (x[:, :k] - mean) / scale])
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _neighbours(queries: np.ndarray, train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, indices) of each query's k most similar training rows, most similar first."""
    k = min(k, len(train))
    sims, idx = [], []
    for lo in range(0, len(queries), CHUNK):
        s = queries[lo: lo + CHUNK] @ train.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.tile(np.arange(k), (len(s), 1))
        ts = np.take_along_axis(s, top, 1)
        order = np.argsort(-ts, axis=1, kind="stable")
        sims.append(np.take_along_axis(ts, order, 1))
        idx.append(np.take_along_axis(top, order, 1))
    return np.vstack(sims), np.vstack(idx)


def _weights(sims: np.ndarray, weighting: str) -> np.ndarray:
    if weighting == "uniform":
        return np.ones_like(sims)
    if weighting == "similarity":
        return np.maximum(sims, 1e-6)
    return np.exp((sims - sims[:, :1]) / SOFTMAX_TEMPERATURE)


def _mean_gain(sims: np.ndarray, gains: np.ndarray, prior: float, weighting: str) -> np.ndarray:
    w = _weights(sims, weighting)
    return ((w * gains).sum(axis=1) + prior) / (w.sum(axis=1) + 1.0)


@dataclass
class KnnRouter:
    vectors: np.ndarray  # (rows, dims) float16, unit length
    gains: np.ndarray  # (rows,) int8: premium_ok - cheap_ok
    text_mean: np.ndarray
    text_scale: np.ndarray
    k: int
    weighting: str
    text_weight: float
    target: str = "premium_ok - cheap_ok"
    trained_on: dict = field(default_factory=dict)

    use_embeddings = True  # always: the neighbours are found by embedding

    def expected_gain(self, x: np.ndarray) -> np.ndarray:
        """The neighbours' mean gain in [-1, 1] per row of router features."""
        sims, idx = _neighbours(_vectors(x, self.text_mean, self.text_scale, self.text_weight),
                                self.vectors.astype(np.float32), self.k)
        return _mean_gain(sims, self.gains[idx].astype(np.float64), float(self.gains.mean()), self.weighting)

    def score_features(self, x: np.ndarray) -> np.ndarray:
        return np.clip(self.expected_gain(x), 0.0, 1.0)

    def score(self, prompts: Sequence[str] | pl.Series, embeddings: np.ndarray | None = None) -> np.ndarray:
        """Estimated accuracy premium adds over the cheap tier, per prompt."""
        return self.score_features(router_features(prompts, True, embeddings))

    def as_scorer(self) -> "KnnScorer":
        return KnnScorer(self)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "weights.npz", vectors=self.vectors.astype(np.float16), gains=self.gains.astype(np.int8),
                 text_mean=self.text_mean, text_scale=self.text_scale)
        meta = {"format": FORMAT_VERSION, "kind": KIND, "k": self.k, "weighting": self.weighting,
                "text_weight": self.text_weight, "target": self.target, "text_features": TEXT_FEATURES,
                "trained_on": self.trained_on}
        (folder / "router.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder


@dataclass
class KnnScorer:
    """A `KnnRouter` as a `Scorer`: its score, and the neighbours' mean gain behind it."""

    router: KnnRouter
    source = "knn"
    label = "gain"

    def score(self, prompts: pl.Series) -> tuple[np.ndarray, list[str]]:
        gain = self.router.expected_gain(router_features(prompts, True))
        return np.clip(gain, 0.0, 1.0), [f"{self.router.k} neighbours, mean gain {g:+.2f}" for g in gain]


def load_knn(meta: dict, arrays) -> KnnRouter:
    return KnnRouter(arrays["vectors"], arrays["gains"], arrays["text_mean"], arrays["text_scale"], int(meta["k"]),
                     meta["weighting"], float(meta["text_weight"]), meta.get("target", "premium_ok - cheap_ok"),
                     meta.get("trained_on", {}))


def cross_validate_knn(x: np.ndarray, gains: np.ndarray, cheap_ok: np.ndarray, premium_ok: np.ndarray,
                       fold: np.ndarray) -> dict[tuple[int, str, float], float]:
    """Out-of-fold APGR of every (k, weighting, text_weight) on the grid (one neighbour search per fold and text
    weight, at the largest k; smaller k read its first columns)."""
    scores = {}
    for tw in TEXT_WEIGHTS:
        oof = {(k, w): np.zeros(len(gains)) for k, w in product(K_GRID, WEIGHTINGS)}
        for f in np.unique(fold):
            tr, te = fold != f, fold == f
            mean, scale = _standardiser(x[tr])
            sims, idx = _neighbours(_vectors(x[te], mean, scale, tw), _vectors(x[tr], mean, scale, tw), max(K_GRID))
            g, prior = gains[tr][idx], float(gains[tr].mean())
            for k, w in product(K_GRID, WEIGHTINGS):
                oof[(k, w)][te] = _mean_gain(sims[:, :k], g[:, :k], prior, w)
        for (k, w), s in oof.items():
            scores[(k, w, tw)] = apgr(np.clip(s, 0.0, 1.0), cheap_ok, premium_ok)
    return scores


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = x[:, : len(TEXT_FEATURES)]
    scale = t.std(axis=0)
    scale[scale < 1e-9] = 1.0
    return t.mean(axis=0), scale


def train_knn(labels: pl.DataFrame, embeddings: np.ndarray | None = None, k: int | None = None,
              weighting: str | None = None, text_weight: float | None = None) -> KnnRouter:
    """Fit a kNN router on labelled prompts (`prompt`, `cheap_ok`, optional `premium_ok`); settings not given are
    chosen by 5-fold cross-validation. `embeddings` (row-aligned) skips re-embedding."""
    cheap_ok, premium_ok = two_tier_outcomes(labels)
    gains = routing_gain(labels)
    if labels.height < 2 * FOLDS or gains.min() == gains.max():
        raise RouterError(f"a kNN router needs at least {2 * FOLDS} labels and rows where premium pays off and "
                          f"rows where it does not ({labels.height} rows)")
    x = router_features(labels["prompt"], True, embeddings)
    trained_on: dict = {"rows": labels.height, "mean_gain": round(float(gains.mean()), 4)}
    if k is None or weighting is None or text_weight is None:
        cv = cross_validate_knn(x, gains, cheap_ok, premium_ok, folds(labels.height))
        cv = {key: v for key, v in cv.items() if (k is None or key[0] == k) and (weighting is None or key[1] == weighting)
              and (text_weight is None or key[2] == text_weight)}
        if not cv:
            raise RouterError(f"no kNN setting on the grid matches k={k}, weighting={weighting}, "
                              f"text_weight={text_weight}")
        k, weighting, text_weight = max(cv, key=lambda key: cv[key])
        trained_on["cv_apgr"] = {f"k={a},{b},text_weight={c}": round(v, 4) for (a, b, c), v in cv.items()}
    if weighting not in WEIGHTINGS:
        raise RouterError(f"weighting must be one of {', '.join(WEIGHTINGS)}")
    mean, scale = _standardiser(x)
    return KnnRouter(_vectors(x, mean, scale, text_weight).astype(np.float16), gains.astype(np.int8), mean, scale,
                     int(k), weighting, float(text_weight), trained_on=trained_on)
