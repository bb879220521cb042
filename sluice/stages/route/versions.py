"""Whether a newly trained router should replace the promoted one, judged on held-out folds.

The candidate is cross-validated on the labels it is trained from (5 folds: each fold scored by a router trained
on the other four), and its out-of-fold AUROC for "premium needed" is compared with the promoted version's AUROC
on the same rows. The promoted version may have been trained on some of those rows, which flatters it: a
candidate is promoted only when it beats it even so (or when nothing is promoted yet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from sluice.stages.route.features import EMBED_MAX_TOKENS
from sluice.stages.route.learned import LearnedRouter, premium_needed, train_router
from sluice.stats import auroc

FOLDS = 5
SEED = 20261204


@dataclass
class Verdict:
    cv_auroc: float
    previous_auroc: float | None
    promote: bool
    reason: str
    target: str


def judge_candidate(labels: pl.DataFrame, current: LearnedRouter | None, use_embeddings: bool = False,
                    l2_text: float = 100.0, l2_embedding: float = 1000.0) -> Verdict:
    y, target = premium_needed(labels)
    positive = y > 0.5
    if labels.height < 2 * FOLDS or positive.all() or not positive.any():
        return Verdict(float("nan"), None, current is None, f"{labels.height} labels: too few to cross-validate; "
                       + ("promoted: no router yet" if current is None else "kept the promoted version"), target)
    emb = None
    if use_embeddings:  # embedded once for every fold
        from models.embeddings import embed

        emb = embed(labels["prompt"].fill_null("").to_list(), max_length=EMBED_MAX_TOKENS)
    folds = np.random.default_rng(SEED).permutation(labels.height) % FOLDS
    oof = np.zeros(labels.height)
    for k in range(FOLDS):
        tr, te = np.nonzero(folds != k)[0], np.nonzero(folds == k)[0]
        if y[tr].min() == y[tr].max():  # one outcome only in these folds: nothing to learn, no ranking
            oof[te] = 0.5
            continue
        fold_router = train_router(labels[tr.tolist()], use_embeddings=use_embeddings, l2_text=l2_text, l2_embedding=l2_embedding,
                                   embeddings=emb[tr] if emb is not None else None)
        oof[te] = fold_router.score(labels[te.tolist()]["prompt"], emb[te] if emb is not None else None)
    cv = auroc(oof, positive)
    if current is None:
        return Verdict(cv, None, True, f"promoted: no router yet (cross-validated AUROC {cv:.3f})", target)
    before = auroc(current.score(labels["prompt"], emb if current.use_embeddings and emb is not None else None),
                   positive)
    if cv > before:
        return Verdict(cv, before, True, f"promoted: held-out AUROC {cv:.3f} beats the promoted version's "
                       f"{before:.3f} on the same {labels.height} labels", target)
    return Verdict(cv, before, False, f"not promoted: held-out AUROC {cv:.3f} does not beat the promoted "
                   f"version's {before:.3f} on the same {labels.height} labels", target)
