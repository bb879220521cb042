"""Prompt-only routers beyond the shipped kinds, scored on issue 17's acceptance figure (all 1,319 GSM8K rows,
5-fold out-of-fold: the premium share for 95% of all-premium accuracy; target 0.50).

Every candidate reads only the question. Each is trained on the four outer training folds (the bench's folds,
seed 20260124 + 1) and scores the fifth; every setting it has (L2 strengths, kNN's k, which candidates an ensemble
averages) is chosen by cross-validation inside those four folds (`sluice.stages.route.training.folds`), never on
the fold it scores.

    logistic          the shipped logistic router (`train_router` at its defaults: text head L2 100, text +
                      embedding head L2 1000), "premium needed"
    logistic_arith    the same two heads over the text features plus `arithmetic_features` (quantities, number
                      words, operation cues, units, multi-step cues), each head's L2 chosen by inner 5-fold APGR
    knn               `train_knn` (k, weighting, text weight by its own cross-validation)
    per_tier          `train_per_tier`: P(premium right) - P(cheap right)
    rank_kinds        the mean of the percentile ranks of the three shipped kinds (logistic, knn, per_tier), no
                      choice made: the ensemble the issue's brief proposed (added here after rank_all was measured)
    rank_all          the mean of the four candidates' percentile ranks (no choice made)
    ensemble_apgr     the mean percentile rank of the subset of candidates (15 subsets) whose inner out-of-fold
                      APGR is best on the training folds
    ensemble_share    the same, the subset chosen by the inner out-of-fold share for 95% of premium accuracy (the
                      acceptance figure itself, noisier on ~1,000 rows)

Percentile ranks are taken within the rows being scored (a Sluice batch is routed whole, so ranks are available).
"""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from sluice.stages.route.features import text_features
from sluice.stages.route.knn import train_knn
from sluice.stages.route.learned import train_router
from sluice.stages.route.per_tier import train_per_tier
from sluice.stages.route.training import apgr, folds
from sluice.stats import fit_logistic

NUMBER_WORDS = (r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|"
                r"fifty|hundred|thousand|million|dozens?|half|twice|double|triple|thrice|quarter|third)\b")
# cue -> regex over the lower-cased question: the operations and bookkeeping a solution will need
ARITH_CUES = {
    "each": r"\b(each|per|every|apiece)\b",
    "multiply": r"\b(times|twice|double|doubles|triple|thrice|quadruple)\b",
    "part": r"\b(half|halves|thirds?|quarters?|fourth|fifth)\b|\d+/\d+",
    "percent": r"%|\bpercent",
    "remaining": r"\b(remaining|remainder|rest|left|leftover)\b",
    "total": r"\b(total|altogether|in all|combined|sum)\b",
    "compare": r"\b(more|less|fewer|than|older|younger|longer|shorter|taller|faster|slower)\b",
    "difference": r"\b(difference|how many more|how much more|how many fewer|how much less)\b",
    "average": r"\b(average|mean|ratio|proportion|rate)\b",
    "divide": r"\b(split|divide|divided|share|shared|equally|evenly|among)\b",
    "money": r"\$|\b(dollars?|cents?|price|costs?|paid|pays?|earns?|sells?|sold|buys?|bought)\b",
    "finance": r"\b(profit|discount|tax|interest|tip|salary|wage|fee|commission|loss|markup|sale)\b",
    "change": r"\b(increase[sd]?|decrease[sd]?|grows?|rises?|drops?|reduced?)\b",
    "time": r"\b(seconds?|minutes?|hours?|days?|weeks?|months?|years?|daily|weekly|monthly|yearly)\b",
    "length_unit": r"\b(inch|inches|feet|foot|yards?|miles?|meters?|km|kilometers?|cm|mph)\b",
    "mass_volume_unit": r"\b(pounds?|lbs?|ounces?|oz|grams?|kg|kilograms?|tons?|gallons?|liters?|quarts?|cups?)\b",
    "condition": r"\b(if|unless|instead|otherwise|assuming|suppose)\b",
    "sequence": r"\b(then|after|before|later|first|second|next|finally|again|until)\b",
    "negation": r"\b(not|no|none|without)\b|n't",
    "consume": r"\b(lost|lose|loses|spent|spends?|gave|gives?|ate|eats?|used|uses|broke)\b",
}
UNIT_FAMILIES = ("time", "length_unit", "mass_volume_unit", "money", "percent")
ARITH_FEATURES = ["log_words", "sentences", "log_words_per_sentence", "numbers", "distinct_numbers", "number_words",
                  "quantities", "log_max_number", "log_min_number", "decimals", "numbers_over_100",
                  "numbers_over_1000", "digits", "unit_families", "commas", "names",
                  *[f"n_{c}" for c in ARITH_CUES], *[f"has_{c}" for c in ARITH_CUES]]


def arithmetic_features(prompts: list[str]) -> np.ndarray:
    """(rows, len(ARITH_FEATURES)): what predicts the arithmetic load of a word problem, from its text alone."""
    rows = []
    for p in prompts:
        t = (p or "").lower()
        nums = [float(x.replace(",", "")) for x in re.findall(r"\d[\d,]*(?:\.\d+)?", p or "")]
        words = re.findall(r"[a-z']+", t)
        sentences = max(len([s for s in re.split(r"(?<=[.!?])\s+", (p or "").strip()) if s]), 1)
        cues = [len(re.findall(rx, t)) for rx in ARITH_CUES.values()]
        found = dict(zip(ARITH_CUES, cues))
        n_words = len(re.findall(NUMBER_WORDS, t))
        rows.append([
            np.log1p(len(words)), sentences, np.log1p(len(words) / sentences), len(nums), len(set(nums)), n_words,
            len(nums) + n_words, np.log10(1 + max(nums, default=0.0)), np.log10(1 + min(nums, default=0.0)),
            sum(x != int(x) for x in nums), sum(x >= 100 for x in nums), sum(x >= 1000 for x in nums),
            sum(len(str(int(x))) for x in nums), sum(found[f] > 0 for f in UNIT_FAMILIES), t.count(","),
            max(len(re.findall(r"\b[A-Z][a-z]+", p or "")) - sentences, 0),
            *cues, *[float(x > 0) for x in cues],
        ])
    return np.array(rows, dtype=np.float64).reshape(len(prompts), len(ARITH_FEATURES))


TEXT_L2 = (10.0, 100.0, 1000.0)
EMBEDDING_L2 = (300.0, 1000.0, 3000.0, 10000.0)
Fit = Callable[[np.ndarray], tuple[Callable[[np.ndarray], np.ndarray], dict]]


def _head(x: np.ndarray, y: np.ndarray, l2: float) -> Callable[[np.ndarray], np.ndarray]:
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-9] = 1.0
    w, b = fit_logistic((x - mean) / scale, y, l2=l2)
    return lambda z: 1.0 / (1.0 + np.exp(-np.clip(((z - mean) / scale) @ w + b, -30, 30)))


def percentile(s: np.ndarray) -> np.ndarray:
    """Mean rank of each score within `s`, in (0, 1] (ties share their mean rank)."""
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse] / max(len(s), 1)


def share_for_95(scores: np.ndarray, cheap: np.ndarray, premium: np.ndarray) -> float:
    """The smallest premium share (top scores first, stable order) whose accuracy reaches 95% of all-premium."""
    order = np.argsort(-scores, kind="stable")
    acc = (cheap.sum() + np.r_[0.0, np.cumsum(premium[order].astype(float) - cheap[order])]) / len(scores)
    return float(np.nonzero(acc >= 0.95 * premium.mean() - 1e-12)[0][0] / len(scores))


class Candidates:
    """The prompt-only candidates over one data set's matrices; `fits()[name](rows)` trains on those rows (its
    settings chosen inside them) and returns (score function over row indices, what it chose)."""

    def __init__(self, labels: pl.DataFrame, embeddings: np.ndarray):
        self.labels, self.emb = labels, embeddings
        self.cheap = labels["cheap_ok"].to_numpy().astype(bool)
        self.premium = labels["premium_ok"].to_numpy().astype(bool)
        self.y = (~self.cheap & self.premium).astype(np.float64)
        prompts = labels["prompt"].to_list()
        self.text = np.hstack([text_features(prompts), arithmetic_features(prompts)])
        self.full = np.hstack([self.text, embeddings.astype(np.float64)])

    def fits(self) -> dict[str, Fit]:
        return {"logistic": self.logistic, "logistic_arith": self.logistic_arith, "knn": self.knn,
                "per_tier": self.per_tier}

    def _sub(self, rows: np.ndarray) -> pl.DataFrame:
        return self.labels[rows.tolist()]

    def logistic(self, rows):
        r = train_router(self._sub(rows), embeddings=self.emb[rows])
        return (lambda te: r.score(self.labels["prompt"][te.tolist()], self.emb[te])), {}

    def knn(self, rows):
        r = train_knn(self._sub(rows), embeddings=self.emb[rows])
        return ((lambda te: r.score(self.labels["prompt"][te.tolist()], self.emb[te])),
                {"k": r.k, "weighting": r.weighting, "text_weight": r.text_weight})

    def per_tier(self, rows):
        r = train_per_tier(self._sub(rows), ["cheap", "premium"], embeddings=self.emb[rows])
        return (lambda te: r.score(self.labels["prompt"][te.tolist()], self.emb[te])), {}

    def cv_head(self, x: np.ndarray, rows: np.ndarray, grid) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
        """A logistic head over x[rows] predicting `y`, its L2 chosen from `grid` by inner 5-fold APGR inside
        `rows`: (the head, over feature rows; the L2)."""
        inner = folds(len(rows))
        xr, yr = x[rows], self.y[rows]

        def cv(l2: float) -> float:
            oof = np.zeros(len(rows))
            for f in range(inner.max() + 1):
                tr, te = inner != f, inner == f
                oof[te] = _head(xr[tr], yr[tr], l2)(xr[te])
            return apgr(oof, self.cheap[rows], self.premium[rows])

        l2 = max(grid, key=cv)
        return _head(xr, yr, l2), l2

    def logistic_arith(self, rows):
        chose = {}
        heads = []
        for name, x, grid in (("text_l2", self.text, TEXT_L2), ("embedding_l2", self.full, EMBEDDING_L2)):
            head, chose[name] = self.cv_head(x, rows, grid)
            heads.append((x, head))
        return (lambda te: np.mean([h(x[te]) for x, h in heads], axis=0)), chose

    def out_of_fold(self, fit: Fit, rows: np.ndarray, fold: np.ndarray) -> np.ndarray:
        """Scores of `rows`, each from `fit` trained on the other folds of `fold` (aligned with rows)."""
        oof = np.zeros(len(rows))
        for f in np.unique(fold):
            score, _ = fit(rows[fold != f])
            oof[fold == f] = score(rows[fold == f])
        return oof

    def ensemble(self, rows: np.ndarray) -> tuple[dict[str, Callable], dict]:
        """Every candidate trained on `rows`, and the subsets an ensemble of them would average, chosen by inner
        out-of-fold APGR and by the inner share for 95%: ({method: score function}, what was chosen)."""
        inner = folds(len(rows))
        c, p = self.cheap[rows], self.premium[rows]
        oof = {name: percentile(self.out_of_fold(fit, rows, inner)) for name, fit in self.fits().items()}
        subsets = [s for n in range(1, len(oof) + 1) for s in combinations(oof, n)]
        mean_rank = {s: np.mean([oof[k] for k in s], axis=0) for s in subsets}
        by_apgr = {s: round(apgr(v, c, p), 4) for s, v in mean_rank.items()}
        by_share = {s: share_for_95(v, c, p) for s, v in mean_rank.items()}
        pick_apgr = max(subsets, key=lambda s: (by_apgr[s], -len(s)))
        pick_share = min(subsets, key=lambda s: (by_share[s], -by_apgr[s]))
        trained = {name: fit(rows) for name, fit in self.fits().items()}

        def averaged(names) -> Callable:
            return lambda te: np.mean([percentile(trained[k][0](te)) for k in names], axis=0)

        scorers = {name: t[0] for name, t in trained.items()}
        scorers.update({"rank_kinds": averaged(("logistic", "knn", "per_tier")), "rank_all": averaged(tuple(trained)),
                        "ensemble_apgr": averaged(pick_apgr),
                        "ensemble_share": averaged(pick_share)})
        chose = {"inner_apgr": {k: round(apgr(v, c, p), 4) for k, v in oof.items()},
                 "inner_share": {k: share_for_95(v, c, p) for k, v in oof.items()},
                 "ensemble_apgr": list(pick_apgr), "ensemble_apgr_score": by_apgr[pick_apgr],
                 "ensemble_share": list(pick_share), "ensemble_share_score": by_share[pick_share],
                 **{name: t[1] for name, t in trained.items() if t[1]}}
        return scorers, chose


METHODS = ("logistic", "logistic_arith", "knn", "per_tier", "rank_kinds", "rank_all", "ensemble_apgr", "ensemble_share")


def all_rows_5fold(labels: pl.DataFrame, embeddings: np.ndarray, outer: np.ndarray) -> tuple[dict, list]:
    """Out-of-fold scores of every method on all rows (outer folds `outer`), and what each fold chose."""
    cand = Candidates(labels, embeddings)
    oof = {m: np.zeros(labels.height) for m in METHODS}
    chose = []
    for f in range(outer.max() + 1):
        tr, te = np.nonzero(outer != f)[0], np.nonzero(outer == f)[0]
        scorers, fold_chose = cand.ensemble(tr)
        for m in METHODS:
            oof[m][te] = scorers[m](te)
        chose.append(fold_chose)
    return oof, chose


def bootstrap_shares(scores: dict[str, np.ndarray], cheap: np.ndarray, premium: np.ndarray, reps: int = 1000,
                     seed: int = 0) -> dict[str, list[float]]:
    """A 90% interval of each method's share for 95% over rows resampled with replacement (the same resamples for
    every method): how far the acceptance figure moves with the rows it is measured on."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {m: [] for m in scores}
    for _ in range(reps):
        idx = rng.integers(0, len(cheap), len(cheap))
        for m, s in scores.items():
            draws[m].append(share_for_95(s[idx], cheap[idx], premium[idx]))
    return {m: [round(float(np.quantile(v, 0.05)), 4), round(float(np.quantile(v, 0.95)), 4)] for m, v in draws.items()}


def reference_difficulty(prompts: list[str], references: Path) -> dict[str, np.ndarray]:
    """Diagnostics, not routers: the GSM8K reference solution's calculator steps (`<<...>>`) and lines per
    prompt, to see how well the true step count ranks the cheap tier's failures."""
    sol = {}
    for line in references.read_text().splitlines():
        t = json.loads(line)
        sol[t["question"]] = t["answer"].split("####")[0]
    return {"reference_steps": np.array([sol[q].count("<<") for q in prompts], dtype=np.float64),
            "reference_lines": np.array([len(sol[q].strip().splitlines()) for q in prompts], dtype=np.float64)}
