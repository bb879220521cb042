"""Choose the router kind by cross-validation: `sluice router train --kind auto`.

Every candidate is trained on four folds of the labels and scores the fifth (5 folds, the same for all), and the
kind with the best out-of-fold APGR (`training.apgr`: accuracy against premium share, RouteLLM's metric) is then
refit on every label. A candidate's own settings are chosen inside its training folds only (the kNN router's k and
weighting: nested cross-validation), so no candidate sees the rows it is scored on.

    logistic   the logistic heads (`learned.py`), "premium needed"
    knn        k nearest neighbours over MiniLM embeddings (`knn.py`), premium_ok - cheap_ok; needs embeddings
    per-tier   one quality predictor per tier (`per_tier.py`), P(premium right) - P(cheap right); needs `premium_ok`

Every candidate's score (or why it was skipped) is kept in the router's `trained_on["auto"]`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import polars as pl

from sluice.stages.route.features import EMBED_MAX_TOKENS
from sluice.stages.route.knn import KnnRouter, train_knn
from sluice.stages.route.learned import LearnedRouter, train_router
from sluice.stages.route.per_tier import PerTierRouter, train_per_tier
from sluice.stages.route.training import FOLDS, RouterError, apgr, folds, two_tier_outcomes

Router = LearnedRouter | KnnRouter | PerTierRouter
KINDS = ("logistic", "knn", "per-tier")


def trainers(labels: pl.DataFrame, use_embeddings: bool) -> dict[str, Callable[[pl.DataFrame, np.ndarray | None],
                                                                                Router] | str]:
    """kind -> a function (labels, their embeddings) -> router, or why the kind cannot train on these labels."""
    has_premium = "premium_ok" in labels.columns and labels["premium_ok"].null_count() < labels.height
    return {
        "logistic": lambda df, emb: train_router(df, use_embeddings=use_embeddings, embeddings=emb),
        "knn": (lambda df, emb: train_knn(df, embeddings=emb)) if use_embeddings
        else "needs embeddings (--no-embeddings given)",
        "per-tier": (lambda df, emb: train_per_tier(df, ["cheap", "premium"], use_embeddings, embeddings=emb))
        if has_premium else "needs `premium_ok` labels",
    }


def train(kind: str, labels: pl.DataFrame, use_embeddings: bool = True,
          embeddings: np.ndarray | None = None) -> Router:
    """Train one kind (`KINDS`), or `auto`: the kind with the best out-of-fold APGR."""
    if kind == "auto":
        return train_auto(labels, use_embeddings, embeddings)
    found = trainers(labels, use_embeddings).get(kind)
    if found is None:
        raise RouterError(f"unknown router kind {kind!r} (known: {', '.join(KINDS)}, auto)")
    if isinstance(found, str):
        raise RouterError(f"a {kind} router {found}")
    return found(labels, embeddings if use_embeddings else None)


def out_of_fold(fit: Callable[[pl.DataFrame, np.ndarray | None], Router], labels: pl.DataFrame,
                embeddings: np.ndarray | None, fold: np.ndarray) -> np.ndarray:
    """Each row's score from the candidate trained on the other folds."""
    oof = np.zeros(labels.height)
    for f in np.unique(fold):
        tr, te = np.nonzero(fold != f)[0], np.nonzero(fold == f)[0]
        router = fit(labels[tr.tolist()], None if embeddings is None else embeddings[tr])
        oof[te] = router.score(labels[te.tolist()]["prompt"], None if embeddings is None else embeddings[te])
    return oof


def train_auto(labels: pl.DataFrame, use_embeddings: bool = True, embeddings: np.ndarray | None = None) -> Router:
    cheap_ok, premium_ok = two_tier_outcomes(labels)
    if labels.height < 2 * FOLDS:
        raise RouterError(f"choosing a router by {FOLDS}-fold cross-validation needs at least {2 * FOLDS} labels "
                          f"({labels.height} rows)")
    if use_embeddings and embeddings is None:  # embedded once for every candidate and fold
        from models.embeddings import embed

        embeddings = embed(labels["prompt"].fill_null("").to_list(), max_length=EMBED_MAX_TOKENS)
    emb = embeddings if use_embeddings else None
    fold = folds(labels.height)
    candidates: dict[str, float | str] = {}
    for kind, fit in trainers(labels, use_embeddings).items():
        if isinstance(fit, str):
            candidates[kind] = fit
            continue
        try:
            candidates[kind] = round(apgr(out_of_fold(fit, labels, emb, fold), cheap_ok, premium_ok), 4)
        except RouterError as exc:  # a fold without both outcomes, say
            candidates[kind] = f"not trained: {exc}"
    scored = {k: v for k, v in candidates.items() if isinstance(v, float)}
    if not scored:
        raise RouterError("no router kind could be cross-validated on these labels: "
                          + "; ".join(f"{k}: {v}" for k, v in candidates.items()))
    chosen = max(scored, key=lambda k: scored[k])  # ties: the earlier, simpler kind
    fit = trainers(labels, use_embeddings)[chosen]
    assert not isinstance(fit, str)
    router = fit(labels, emb)
    router.trained_on["auto"] = {"chosen": chosen, "metric": f"out-of-fold APGR ({FOLDS} folds)",
                                 "candidates": candidates}
    return router
