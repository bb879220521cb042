"""Whether a newly trained router should replace the promoted one, judged on held-out folds.

The candidate is cross-validated on the labels it is trained from (5 folds: each fold scored by a router of its
kind, logistic, knn, per-tier or auto, trained on the other four), and its out-of-fold AUROC for "premium needed" is compared with the promoted version's AUROC
on the same rows. The promoted version may have been trained on some of those rows, which flatters it: a
candidate is promoted only when it beats it even so (or when nothing is promoted yet).

The nightly loop (flows/batch_run.py, tasks/learn.py):
    promoted_router   a run given no router routes with the promoted version, written once per version into a
                      cache folder named by its content (so a run's configuration, and its resume, name it exactly)
    retrain           after a run lands: once `RouterSettings.retrain_min_new_labels` labels have arrived since the
                      last version was trained, train a candidate on every label, judge it as above and register it,
                      promoted or not, with the reason; fewer new labels, or labels that cannot train a router, are
                      recorded as the reason nothing was trained. Counting from the last version, not the promoted
                      one: a rejected candidate's labels would otherwise retrain the same rejection every night.
                      The candidate is of the promoted version's kind (a promoted kNN router is retrained as kNN),
                      logistic when nothing is promoted.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from sluice.config import RouterSettings
from sluice.stages.route.choose import train as train_kind
from sluice.stages.route.features import EMBED_MAX_TOKENS
from sluice.stages.route.knn import KnnRouter
from sluice.stages.route.learned import RouterError, load_router, premium_needed, train_router
from sluice.stages.route.per_tier import PerTierRouter
from sluice.stats import auroc
from sluice.warehouse import routers as versions

FOLDS = 5
SEED = 20261204


@dataclass
class Verdict:
    cv_auroc: float
    previous_auroc: float | None
    promote: bool
    reason: str
    target: str


def kind_of(router) -> str:
    """The `sluice router train --kind` that trains a router like this one."""
    if isinstance(router, KnnRouter):
        return "knn"
    if isinstance(router, PerTierRouter):
        return "per-tier"
    return "logistic"


def _uses_embeddings(router, default: bool) -> bool:
    return bool(getattr(router, "use_embeddings", default)) if router is not None else default


def judge_candidate(labels: pl.DataFrame, current, use_embeddings: bool = False,
                    l2_text: float = 100.0, l2_embedding: float = 1000.0, kind: str = "logistic") -> Verdict:
    y, target = premium_needed(labels)
    use_embeddings = use_embeddings or kind == "knn"  # a kNN router's neighbours are embeddings'

    def fit(df: pl.DataFrame, emb):
        if kind == "logistic":
            return train_router(df, use_embeddings=use_embeddings, l2_text=l2_text, l2_embedding=l2_embedding,
                                embeddings=emb)
        return train_kind(kind, df, use_embeddings=use_embeddings, embeddings=emb)

    positive = y > 0.5
    if labels.height < 2 * FOLDS or positive.all() or not positive.any():
        return Verdict(float("nan"), None, current is None, f"{labels.height} labels: too few to cross-validate; "
                       + ("promoted: no router yet" if current is None else "kept the promoted version"), target)
    emb = None
    if use_embeddings or _uses_embeddings(current, False):  # embedded once for every fold and the promoted one
        from models.embeddings import embed

        emb = embed(labels["prompt"].fill_null("").to_list(), max_length=EMBED_MAX_TOKENS)
    folds = np.random.default_rng(SEED).permutation(labels.height) % FOLDS
    oof = np.zeros(labels.height)
    for k in range(FOLDS):
        tr, te = np.nonzero(folds != k)[0], np.nonzero(folds == k)[0]
        if y[tr].min() == y[tr].max():  # one outcome only in these folds: nothing to learn, no ranking
            oof[te] = 0.5
            continue
        fold_emb = emb if use_embeddings else None
        fold_router = fit(labels[tr.tolist()], fold_emb[tr] if fold_emb is not None else None)
        oof[te] = fold_router.score(labels[te.tolist()]["prompt"], fold_emb[te] if fold_emb is not None else None)
    cv = auroc(oof, positive)
    if current is None:
        return Verdict(cv, None, True, f"promoted: no router yet (cross-validated AUROC {cv:.3f})", target)
    before = auroc(current.score(labels["prompt"], emb if _uses_embeddings(current, True) else None), positive)
    if cv > before:
        return Verdict(cv, before, True, f"promoted: held-out AUROC {cv:.3f} beats the promoted version's "
                       f"{before:.3f} on the same {labels.height} labels", target)
    return Verdict(cv, before, False, f"not promoted: held-out AUROC {cv:.3f} does not beat the promoted "
                   f"version's {before:.3f} on the same {labels.height} labels", target)


def register_candidate(warehouse: str | Path, folder: Path, labels: pl.DataFrame, use_embeddings: bool = False,
                       l2_text: float = 100.0, l2_embedding: float = 1000.0, labels_through=None,
                       why: str = "", kind: str = "logistic") -> tuple[int, Verdict]:
    """Judge the router saved in `folder` (trained on `labels`, of `kind`) against the promoted version and keep it
    as the next version, promoted or not; `why` prefixes the recorded reason (what started the training)."""
    current = _promoted(warehouse)
    if current is None and versions.promoted_version(warehouse) is not None:  # one this Sluice cannot read
        why += f"the promoted version {versions.promoted_version(warehouse)} cannot be read; "
    verdict = judge_candidate(labels, current, use_embeddings, l2_text, l2_embedding, kind=kind)
    version = versions.register(warehouse, folder, labels=labels.height, target=verdict.target,
                                cv_auroc=verdict.cv_auroc, previous_auroc=verdict.previous_auroc,
                                promote=verdict.promote, reason=why + verdict.reason, labels_through=labels_through)
    return version, verdict


def promoted_router(warehouse: str | Path, cache_dir: Path) -> tuple[int, Path] | None:
    """The promoted version and the folder it is written to (`<cache_dir>/<content hash>/`), or None."""
    found = versions.promoted_files(warehouse)
    if found is None:
        return None
    version, files = found
    folder = cache_dir / hashlib.sha256(files.encode()).hexdigest()[:16]
    if not (folder / "router.json").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            versions.unpack_files(files, Path(tmp) / "router")
            try:  # whole or not at all: a concurrent run never reads half a router
                Path(tmp, "router").replace(folder)
            except OSError:
                if not (folder / "router.json").is_file():  # not another run's copy of the same files
                    raise
    return version, folder


def retrain(warehouse: str | Path, settings: RouterSettings, work_dir: Path, after_run: str) -> dict:
    """Train, judge and register a new router version when enough labels have arrived (module docstring).
    Returns what happened: {trained, reason, new_labels, version, promoted}."""
    new, last = versions.new_labels(warehouse)
    since = f"since version {last}" if last is not None else "(no version yet)"
    if new < settings.retrain_min_new_labels:
        return {"trained": False, "new_labels": new, "reason": f"{new} new labels {since}, under the "
                f"{settings.retrain_min_new_labels} a retraining needs (RouterSettings.retrain_min_new_labels)"}
    labels, through = versions.training_labels(warehouse)
    promoted = _promoted(warehouse)  # like for like: the candidate keeps the promoted version's kind and features
    kind = kind_of(promoted)
    use_embeddings = _uses_embeddings(promoted, settings.retrain_embeddings) or kind == "knn"
    try:
        candidate = (train_router(labels, use_embeddings=use_embeddings) if kind == "logistic"
                     else train_kind(kind, labels, use_embeddings=use_embeddings))
    except RouterError as exc:
        return {"trained": False, "new_labels": new, "reason": f"{new} new labels {since}, but not trained: {exc}"}
    candidate.trained_on.update(source="router_training", after_run=after_run)
    folder = candidate.save(work_dir)
    version, verdict = register_candidate(warehouse, folder, labels, use_embeddings, labels_through=through,
                                          why=f"after run {after_run} ({new} new labels {since}): ", kind=kind)
    return {"trained": True, "new_labels": new, "version": version, "promoted": verdict.promote,
            "reason": verdict.reason}


def _promoted(warehouse: str | Path):
    """The promoted version's router; None when there is none, or it was saved in a form this Sluice cannot read."""
    version = versions.promoted_version(warehouse)
    if version is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return load_router(versions.restore(warehouse, version, Path(tmp)))
        except RouterError:
            return None
