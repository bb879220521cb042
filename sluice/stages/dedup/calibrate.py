"""The semantic stage's rule, chosen for a false-hit rate the user sets (`--max-false-hit`, delta).

A rule is whether the near stage shingles short prompts by characters (it catches typos, and merges a few more
look-alike pairs) and a MiniLM cosine threshold per prompt-length bucket (`Rule`). It is chosen on labelled pairs,
each described by what the dedup stages would see (no text is needed):

    words       the longer prompt's word count (its length bucket)
    cosine      MiniLM cosine, or NaN when the semantic stage would not score the pair (a prompt over
                `SemanticConfig.max_words`, or the static candidate pass does not propose it)
    other_hit   the exact stage, or the near stage on word shingles, merges the pair: a hit under every rule
    near_chars  the near stage with character shingles for short prompts merges it (guards included)
    vetoed      a content guard refuses the pair: never a semantic hit
    label       1: the same request (one answer serves both), 0: different requests

Under a rule, a pair is a hit when `other_hit`, or `near_chars` under a rule with character shingles, or when it is
not vetoed and its cosine reaches its bucket's threshold. Each labelled set measures one of two rates:

    pairs     (public labelled pairs, synthetic swaps and edits) false hits / labelled non-duplicate pairs: how
              often two prompts that ask different things are merged. This is the bench's false-hit rate. It is
              per pair of look-alike prompts, not per reused answer: on QQP's hard negatives about 8% of the hits
              at the old 0.92 threshold are labelled non-duplicates (1 - precision), with a false-hit rate of 0.008
    reuses    (the team's own verdicts: checked cluster members, graded duplicates) wrong reuses the rule would
              still make / all checked reuses: under a rule at least as permissive as the one the verdicts were
              gathered under, the share of reused answers that were wrong. The denominator does not move with the
              rule, so the rate only grows as the rule loosens (a share among the rule's own reuses would have a
              loose bound at strict rules, with few reuses, and stop the search there)

The chosen rule is the most permissive one whose upper 95% bound is <= delta on every set that has enough labels
to show delta at all (0 errors in n: n >= ln 0.025 / ln(1 - delta), 368 for 0.01; a smaller set is reported, not
binding). The bound is the upper end of the exact (Clopper-Pearson) two-sided 95% interval, the convention of the
rest of Sluice (the quality estimate's 95% interval): one-sided, it holds at 97.5%. When even the strictest rule
(word shingles, no semantic reuse) is over delta, the run uses it and records that delta was not met.
The learned pair score (`sluice.stages.dedup.pair_score`): when the calibration file carries each pair's features
(text measures and every guard's verdict), the semantic stage decides on a logistic score of them instead of the
cosine alone, with only the hard guards as vetoes. The score is fitted on a third of the shipped pairs (by a hash of
set and pair id: `FIT_PART`) and its threshold chosen on the other two thirds plus the team's verdicts, so the bound
holds for pairs the model was not fitted on. The team's verdicts carry the score their run gave (dup_score).
Rules are tried from strict to permissive (word shingles and no semantic reuse; then character shingles; then the
cosine thresholds down the grid, with several buckets taking turns to move one step) and the search stops at the
first that fails: each rule's hits include the previous rule's, so the rate only
grows along the sequence, and this fixed-sequence test keeps the 95% level without a correction for the number of
rules tried (Learn-then-Test, Angelopoulos et al. 2021).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sluice.stages.dedup.guards import GUARDS
from sluice.stages.dedup.pair_score import FEATURES, TEXT_FEATURES, PairScore, feature_matrix, fit_pair_score, hard_veto

CALIBRATION = Path(__file__).resolve().parents[3] / "data" / "samples" / "dedup_calibration.csv.gz"
GRID = tuple(round(1.0 - 0.005 * i, 3) for i in range(41))  # 1.00 down to 0.80: strict to permissive
NEVER = 2.0  # a threshold no cosine reaches: the bucket reuses nothing semantically
LEVEL = 0.975  # one-sided: the upper end of a two-sided 95% interval
SCORE_GRID = tuple(round(1.0 - 0.0025 * i, 4) for i in range(400))  # pair score (a probability): 1.0 down to 0.0025
FIT_PART = 3  # shipped pairs with hash(set:pair) % FIT_PART == 0 fit the pair score; the rest calibrate it


@dataclass(frozen=True)
class Rule:
    """A MiniLM cosine threshold per length bucket: prompts of <= edges[i] words (the longer of the pair) use
    thresholds[i]; the last edge is the semantic stage's max_words."""

    thresholds: tuple[float, ...]
    edges: tuple[int, ...]
    char_shingles: bool = True
    scorer: PairScore | None = None  # thresholds are on this learned pair score, not on the cosine

    def threshold_for(self, words: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(np.asarray(self.edges), np.asarray(words), side="left"), len(self.edges) - 1)
        return np.asarray(self.thresholds, float)[at]

    def describe(self) -> str:
        lo = 0
        parts = ["near: " + ("character shingles for short prompts" if self.char_shingles else "word shingles only")]
        for edge, t in zip(self.edges, self.thresholds):
            what = "pair score" if self.scorer is not None else "cosine"
            parts.append(f"{lo + 1}-{edge} words: " + ("no semantic reuse" if t >= NEVER else f"{what} >= {t:.4f}"))
            lo = edge
        return "; ".join(parts)


@dataclass
class LabelledPairs:
    """Columns of labelled pairs (module docstring), one array each, and the set each pair belongs to."""

    set_name: np.ndarray
    words: np.ndarray
    cosine: np.ndarray
    other_hit: np.ndarray
    vetoed: np.ndarray
    label: np.ndarray
    metric: dict[str, str] = field(default_factory=dict)  # set -> "pairs" | "reuses"
    near_chars: np.ndarray | None = None  # None: no pair is merged by character shingles alone
    features: np.ndarray | None = None  # (pairs, len(FEATURES)) for the pair score; NaN rows: none (team verdicts)
    hard_vetoed: np.ndarray | None = None  # a hard guard (pair_score.HARD_GUARDS) refuses the pair
    fit_part: np.ndarray | None = None  # the pair fits the pair score (and so does not calibrate it)

    def __post_init__(self) -> None:
        n = len(self.label)
        if self.near_chars is None:
            self.near_chars = np.zeros(n, bool)
        if self.features is None:
            self.features = np.full((n, len(FEATURES)), np.nan)
        if self.hard_vetoed is None:
            self.hard_vetoed = self.vetoed.copy()
        if self.fit_part is None:
            self.fit_part = np.zeros(n, bool)

    def subset(self, keep: np.ndarray) -> "LabelledPairs":
        return LabelledPairs(*(getattr(self, f)[keep] for f in _COLUMNS), metric=dict(self.metric),
                             **{f: getattr(self, f)[keep] for f in _OPTIONAL})

    def scored(self, scorer: PairScore) -> "LabelledPairs":
        """The pairs as the semantic stage sees them under `scorer`: `cosine` holds the pair score (pairs with
        features scored now; the others, the team's verdicts, keep the score their run recorded) and `vetoed` only
        the hard guards."""
        has = ~np.isnan(self.features[:, 0])
        score = np.where(has, scorer.score(np.nan_to_num(self.features), self.cosine), self.cosine)
        return LabelledPairs(self.set_name, self.words, score, self.other_hit, self.hard_vetoed, self.label,
                             dict(self.metric), self.near_chars, self.features, self.hard_vetoed, self.fit_part)

    @classmethod
    def concat(cls, parts: list["LabelledPairs"]) -> "LabelledPairs":
        parts = [p for p in parts if len(p.label)]
        if not parts:
            return empty_pairs()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _COLUMNS),
                   metric={k: v for p in parts for k, v in p.metric.items()},
                   **{f: np.concatenate([getattr(p, f) for p in parts]) for f in _OPTIONAL})

    def hits(self, rule: Rule) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            semantic = ~self.vetoed & (self.cosine >= rule.threshold_for(self.words))
        return self.other_hit | (self.near_chars & rule.char_shingles) | semantic


_COLUMNS = ("set_name", "words", "cosine", "other_hit", "vetoed", "label")
_OPTIONAL = ("near_chars", "features", "hard_vetoed", "fit_part")


def empty_pairs() -> LabelledPairs:
    return LabelledPairs(np.array([], object), np.array([], int), np.array([], float), np.array([], bool),
                         np.array([], bool), np.array([], bool))


def read_calibration(path: str | Path = CALIBRATION) -> LabelledPairs:
    """The calibration set shipped with Sluice (data/samples/dedup_calibration.csv.gz, its provenance beside it).
    With its `guards` and text-feature columns, each pair also gets the pair score's features."""
    with _open(path) as f:
        if f.readline().startswith("#"):
            rows = list(csv.DictReader(f))
        else:
            f.seek(0)
            rows = list(csv.DictReader(f))
    cosine = np.array([float(r["cosine"]) if r["cosine"] else math.nan for r in rows])
    extra = {}
    if rows and "guards" in rows[0]:
        bits = [r["guards"] or "0" * len(GUARDS) for r in rows]
        x = feature_matrix(np.nan_to_num(cosine), [("", "")] * len(rows), bits)
        x[:, 2:2 + len(TEXT_FEATURES)] = [[float(r[c] or "nan") for c in TEXT_FEATURES] for r in rows]
        x[np.isnan(cosine)] = np.nan  # not scored by the semantic stage: no features
        extra = {"features": x, "hard_vetoed": np.array([hard_veto(b) for b in bits]),
                 "fit_part": np.array([int(hashlib.sha1(f"{r['set']}:{r['pair']}".encode()).hexdigest(), 16)
                                       % FIT_PART == 0 for r in rows])}
    return LabelledPairs(
        np.array([r["set"] for r in rows], object), np.array([int(r["words"]) for r in rows]), cosine,
        np.array([r["other_hit"] == "1" for r in rows]), np.array([r["vetoed"] == "1" for r in rows]),
        np.array([r["label"] == "1" for r in rows]), metric={r["set"]: "pairs" for r in rows},
        near_chars=np.array([r["near_chars"] == "1" for r in rows]), **extra)


def _open(path: str | Path):
    return gzip.open(path, "rt", newline="") if str(path).endswith(".gz") else open(path, newline="")


def calibration_settings(path: str | Path = CALIBRATION) -> dict:
    """The dedup settings the shipped features were computed with (its first line)."""
    with _open(path) as f:
        first = f.readline()
    return json.loads(first[1:]) if first.startswith("#") else {}


def min_labels(delta: float) -> int:
    """The fewest labels with which 0 errors bound the rate at <= delta: fewer cannot show delta at all."""
    return math.ceil(math.log(1 - LEVEL) / math.log(1 - delta))


def _binomial_cdf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0 if k < n else 1.0
    lp, lq = math.log(p), math.log1p(-p)
    return min(1.0, sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp
                                 + (n - i) * lq) for i in range(k + 1)))


def upper_bound(errors: int, n: int, level: float = LEVEL) -> float:
    """The exact (Clopper-Pearson) upper confidence bound on a binomial rate, one-sided at `level`: the p at which
    seeing at most `errors` in n has probability 1 - level. NaN when n == 0."""
    if n == 0:
        return math.nan
    if errors >= n:
        return 1.0
    lo, hi = errors / n, 1.0
    for _ in range(60):  # bisection: the CDF falls as p grows
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _binomial_cdf(errors, n, mid) > 1 - level else (lo, mid)
    return hi


def set_rate(pairs: LabelledPairs, hit: np.ndarray, name: str) -> tuple[int, int]:
    """(errors, n) of one set under a rule's hits: false hits of its n non-duplicates, or wrong reuses the rule
    would still make of its n checked reuses."""
    mine = pairs.set_name == name
    if pairs.metric.get(name, "pairs") == "reuses":
        return int((mine & hit & ~pairs.label).sum()), int(mine.sum())
    return int((mine & hit & ~pairs.label).sum()), int((mine & ~pairs.label).sum())


@dataclass
class Calibration:
    """What the run records: the chosen rule, delta, the binding bound and the labels it rests on."""

    rule: Rule
    delta: float
    bound: float  # the highest upper 95% bound among binding sets under the chosen rule
    labels: int  # labelled pairs considered (all sets)
    binding_sets: list[str]
    per_set: dict[str, dict]  # set -> errors, n, rate, upper, recall (pairs sets), binding
    fit_labels: int = 0  # of `labels`, those that fitted the pair score (not used for the bound)

    def record(self) -> dict:
        scorer = self.rule.scorer.record() if self.rule.scorer is not None else None
        return {"rule": {"thresholds": list(self.rule.thresholds), "edges": list(self.rule.edges),
                         "char_shingles": self.rule.char_shingles, "scorer": scorer},
                "rule_text": self.rule.describe(), "max_false_hit": self.delta, "bound": round(self.bound, 5),
                "met": self.bound <= self.delta,
                "labels": self.labels, "fit_labels": self.fit_labels, "binding_sets": self.binding_sets, "per_set": self.per_set}


def _evaluate(pairs: LabelledPairs, rule: Rule, delta: float) -> tuple[float, dict[str, dict], list[str]]:
    hit = pairs.hits(rule)
    need = min_labels(delta)
    worst, per_set, binding = 0.0, {}, []
    for name in sorted(set(pairs.set_name.tolist())):
        errors, n = set_rate(pairs, hit, name)
        upper = upper_bound(errors, n)
        mine = pairs.set_name == name
        pos = int((mine & pairs.label).sum())
        binds = n >= need
        per_set[name] = {"metric": pairs.metric.get(name, "pairs"), "errors": errors, "n": n,
                         "rate": round(errors / n, 5) if n else None, "upper": round(upper, 5) if n else None,
                         "recall": round(int((mine & pairs.label & hit).sum()) / pos, 4) if pos else None,
                         "binding": binds}
        if binds:
            binding.append(name)
            worst = max(worst, upper)
    return worst, per_set, binding


def choose_rule(pairs: LabelledPairs, delta: float, edges: tuple[int, ...] = (48,),
                grid: tuple[float, ...] | None = None, scorer: PairScore | None = None) -> Calibration:
    """The most permissive rule whose upper bound is <= delta on every binding set (module docstring). With a
    `scorer`, thresholds are on its pair score, and the pairs it was fitted on (`fit_part`) are left out."""
    if not 0 < delta < 1:
        raise ValueError(f"max_false_hit must be in (0, 1), got {delta}")
    labels = int(len(pairs.label))
    if scorer is not None:
        pairs = pairs.subset(~pairs.fit_part).scored(scorer)
    grid = grid or (GRID if scorer is None else SCORE_GRID)
    sequence = [Rule((NEVER,) * len(edges), edges, False, scorer), Rule((NEVER,) * len(edges), edges, True, scorer)]
    thresholds = [NEVER] * len(edges)
    for step in range(len(grid) * len(edges)):  # the buckets take turns to move one grid step down
        b, at = step % len(edges), step // len(edges)
        thresholds[b] = grid[at]
        sequence.append(Rule(tuple(thresholds), edges, True, scorer))
    rule = sequence[0]
    for trial in sequence:
        if _evaluate(pairs, trial, delta)[0] > delta:
            break
        rule = trial
    worst, per_set, binding = _evaluate(pairs, rule, delta)
    return Calibration(rule, delta, worst, labels, binding, per_set, labels - int(len(pairs.label)))


def fit_scorer(pairs: LabelledPairs, min_cosine: float = 0.80) -> PairScore | None:
    """The pair score fitted on the fit part's candidate pairs (scored by the semantic stage, cosine >= min_cosine,
    no hard veto); None when the pairs carry no features."""
    fit = pairs.fit_part & ~np.isnan(pairs.features[:, 0]) & ~pairs.hard_vetoed
    with np.errstate(invalid="ignore"):
        fit &= pairs.cosine >= min_cosine
    if fit.sum() < 50 or len(set(pairs.label[fit].tolist())) < 2:
        return None
    return fit_pair_score(pairs.features[fit], pairs.label[fit], min_cosine)


def calibrate(delta: float, team: LabelledPairs | None = None, edges: tuple[int, ...] = (48,),
              path: str | Path = CALIBRATION, learned: bool = True) -> Calibration:
    """The rule for delta on the shipped calibration set plus the team's own verdicts (`sluice.stages.dedup.verdicts`):
    on the learned pair score when the shipped set carries features (and `learned`), else on the cosine."""
    shipped = read_calibration(path)
    scorer = fit_scorer(shipped) if learned else None
    return choose_rule(LabelledPairs.concat([shipped, team or empty_pairs()]), delta, edges, scorer=scorer)


def rule_from_record(record: str | dict) -> Rule:
    r = json.loads(record) if isinstance(record, str) else record
    scorer = r["rule"].get("scorer")
    return Rule(tuple(r["rule"]["thresholds"]), tuple(r["rule"]["edges"]), r["rule"].get("char_shingles", True),
                PairScore.from_record(scorer) if scorer else None)


__all__ = ["CALIBRATION", "Calibration", "LabelledPairs", "Rule", "calibrate", "choose_rule", "fit_scorer",
           "min_labels", "read_calibration", "rule_from_record", "upper_bound"]
