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
Rules are tried from strict to permissive (word shingles and no semantic reuse; then character shingles; then the
cosine thresholds down the grid, with several buckets taking turns to move one step) and the search stops at the
first that fails: each rule's hits include the previous rule's, so the rate only
grows along the sequence, and this fixed-sequence test keeps the 95% level without a correction for the number of
rules tried (Learn-then-Test, Angelopoulos et al. 2021).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CALIBRATION = Path(__file__).resolve().parents[3] / "data" / "samples" / "dedup_calibration.csv.gz"
GRID = tuple(round(1.0 - 0.005 * i, 3) for i in range(41))  # 1.00 down to 0.80: strict to permissive
NEVER = 2.0  # a threshold no cosine reaches: the bucket reuses nothing semantically
LEVEL = 0.975  # one-sided: the upper end of a two-sided 95% interval


@dataclass(frozen=True)
class Rule:
    """A MiniLM cosine threshold per length bucket: prompts of <= edges[i] words (the longer of the pair) use
    thresholds[i]; the last edge is the semantic stage's max_words."""

    thresholds: tuple[float, ...]
    edges: tuple[int, ...]
    char_shingles: bool = True

    def threshold_for(self, words: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(np.asarray(self.edges), np.asarray(words), side="left"), len(self.edges) - 1)
        return np.asarray(self.thresholds, float)[at]

    def describe(self) -> str:
        lo = 0
        parts = ["near: " + ("character shingles for short prompts" if self.char_shingles else "word shingles only")]
        for edge, t in zip(self.edges, self.thresholds):
            parts.append(f"{lo + 1}-{edge} words: " + ("no semantic reuse" if t >= NEVER else f"cosine >= {t:.3f}"))
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

    def __post_init__(self) -> None:
        if self.near_chars is None:
            self.near_chars = np.zeros(len(self.label), bool)

    @classmethod
    def concat(cls, parts: list["LabelledPairs"]) -> "LabelledPairs":
        parts = [p for p in parts if len(p.label)]
        if not parts:
            return empty_pairs()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("set_name", "words", "cosine", "other_hit", "vetoed", "label")),
                   metric={k: v for p in parts for k, v in p.metric.items()},
                   near_chars=np.concatenate([p.near_chars for p in parts]))

    def hits(self, rule: Rule) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            semantic = ~self.vetoed & (self.cosine >= rule.threshold_for(self.words))
        return self.other_hit | (self.near_chars & rule.char_shingles) | semantic


def empty_pairs() -> LabelledPairs:
    return LabelledPairs(np.array([], object), np.array([], int), np.array([], float), np.array([], bool),
                         np.array([], bool), np.array([], bool))


def read_calibration(path: str | Path = CALIBRATION) -> LabelledPairs:
    """The calibration set shipped with Sluice (data/samples/dedup_calibration.csv.gz, its provenance beside it)."""
    with _open(path) as f:
        if f.readline().startswith("#"):
            rows = list(csv.DictReader(f))
        else:
            f.seek(0)
            rows = list(csv.DictReader(f))
    return LabelledPairs(
        np.array([r["set"] for r in rows], object), np.array([int(r["words"]) for r in rows]),
        np.array([float(r["cosine"]) if r["cosine"] else math.nan for r in rows]),
        np.array([r["other_hit"] == "1" for r in rows]), np.array([r["vetoed"] == "1" for r in rows]),
        np.array([r["label"] == "1" for r in rows]), metric={r["set"]: "pairs" for r in rows},
        near_chars=np.array([r["near_chars"] == "1" for r in rows]))


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

    def record(self) -> dict:
        return {"rule": {"thresholds": list(self.rule.thresholds), "edges": list(self.rule.edges),
                         "char_shingles": self.rule.char_shingles},
                "rule_text": self.rule.describe(), "max_false_hit": self.delta, "bound": round(self.bound, 5),
                "met": self.bound <= self.delta,
                "labels": self.labels, "binding_sets": self.binding_sets, "per_set": self.per_set}


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
                grid: tuple[float, ...] = GRID) -> Calibration:
    """The most permissive rule whose upper bound is <= delta on every binding set (module docstring)."""
    if not 0 < delta < 1:
        raise ValueError(f"max_false_hit must be in (0, 1), got {delta}")
    sequence = [Rule((NEVER,) * len(edges), edges, char_shingles=False), Rule((NEVER,) * len(edges), edges)]
    thresholds = [NEVER] * len(edges)
    for step in range(len(grid) * len(edges)):  # the buckets take turns to move one grid step down
        b, at = step % len(edges), step // len(edges)
        thresholds[b] = grid[at]
        sequence.append(Rule(tuple(thresholds), edges))
    rule = sequence[0]
    for trial in sequence:
        if _evaluate(pairs, trial, delta)[0] > delta:
            break
        rule = trial
    worst, per_set, binding = _evaluate(pairs, rule, delta)
    return Calibration(rule, delta, worst, int(len(pairs.label)), binding, per_set)


def calibrate(delta: float, team: LabelledPairs | None = None, edges: tuple[int, ...] = (48,),
              path: str | Path = CALIBRATION) -> Calibration:
    """The rule for delta on the shipped calibration set plus the team's own verdicts (`sluice.stages.dedup.verdicts`)."""
    return choose_rule(LabelledPairs.concat([read_calibration(path), team or empty_pairs()]), delta, edges)


def rule_from_record(record: str | dict) -> Rule:
    r = json.loads(record) if isinstance(record, str) else record
    return Rule(tuple(r["rule"]["thresholds"]), tuple(r["rule"]["edges"]), r["rule"].get("char_shingles", True))


__all__ = ["CALIBRATION", "Calibration", "LabelledPairs", "Rule", "calibrate", "choose_rule",
           "min_labels", "read_calibration", "rule_from_record", "upper_bound"]
