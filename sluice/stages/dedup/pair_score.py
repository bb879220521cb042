"""The semantic stage's pair score: how likely two short prompts ask the same thing, from more than their cosine.

MiniLM cosine alone is blind to what the content guards see, and the guards, as hard vetoes, throw away true
paraphrases with them (a qualifier or template guard refuses "How do I give intramuscular injection?" / "How do you
give an intramuscular injection?"-like rewordings). So the guards are split:

    hard    numbers, negation, polarity, named entity, word order: a pair they object to is never reused (they keep
            PAWS-style swaps and changed numbers / negation at zero false hits)
    soft    template, qualifier: features of the score, as are the cosine and cheap text measures

The score is a logistic model over `FEATURES` (`sluice.stats.fit_logistic`), fitted on one part of the labelled
calibration pairs (`sluice.stages.dedup.calibrate`); its threshold is chosen on the other part, so the bound on the
false-hit rate is not flattered by the pairs the model was fitted on. Only pairs the semantic stage proposes
(static cosine >= its candidate threshold) and whose MiniLM cosine reaches `PairScore.min_cosine` are scored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from sluice.stages.dedup.guards import GUARDS, STOPWORDS, TextFacts, guard_flags
from sluice.stats import fit_logistic

HARD_GUARDS = ("numbers differ", "negation differs", "polarity differs", "named entity differs", "word order differs")
SOFT_GUARDS = tuple(g for g in GUARDS if g not in HARD_GUARDS)
TEXT_FEATURES = ("word_jaccard", "char3_jaccard", "length_ratio", "content_jaccard", "content_words_differing",
                 "question_word_same", "question_word_differs", "log_words")
FEATURES = ("cosine", "cosine_squared") + TEXT_FEATURES + SOFT_GUARDS
QUESTION_WORDS = frozenset(("what", "how", "why", "which", "who", "whom", "where", "when", "is", "are", "can",
                            "should", "do", "does", "did", "will", "would", "could"))
_WORD = re.compile(r"[a-z0-9]+")


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _question_word(words: list[str]) -> str:
    return next((w for w in words[:6] if w in QUESTION_WORDS), "")


def text_features(a: str, b: str) -> list[float]:
    """`TEXT_FEATURES` of one pair: word / character 3-gram / content-word overlap, lengths, question words."""
    wa, wb = _WORD.findall(a.lower()), _WORD.findall(b.lower())
    sa, sb = set(wa), set(wb)
    ca, cb = sa - STOPWORDS, sb - STOPWORDS
    ja, jb = " ".join(wa), " ".join(wb)
    ga = {ja[i:i + 3] for i in range(max(0, len(ja) - 2))}
    gb = {jb[i:i + 3] for i in range(max(0, len(jb) - 2))}
    la, lb = len(a.split()), len(b.split())
    qa, qb = _question_word(wa), _question_word(wb)
    return [_jaccard(sa, sb), _jaccard(ga, gb), min(la, lb) / max(la, lb, 1), _jaccard(ca, cb), float(len(ca ^ cb)),
            float(qa == qb), float(bool(qa) and bool(qb) and qa != qb), math.log(max(la, lb, 1))]


def guard_bits(a: TextFacts, b: TextFacts) -> str:
    """Every guard's verdict as a string of 0/1 in `GUARDS` order (what the calibration file stores)."""
    flags = guard_flags(a, b)
    return "".join("1" if flags[g] else "0" for g in GUARDS)


def hard_veto(bits: str) -> bool:
    return any(bits[GUARDS.index(g)] == "1" for g in HARD_GUARDS)


def feature_matrix(cosine: np.ndarray, texts: Sequence[tuple[str, str]], bits: Sequence[str]) -> np.ndarray:
    """(pairs, len(FEATURES)) of pairs given their MiniLM cosine, their two texts and their `guard_bits`."""
    soft = [GUARDS.index(g) for g in SOFT_GUARDS]
    cosine = np.asarray(cosine, float)
    rows = [text_features(a, b) + [float(bt[i] == "1") for i in soft] for (a, b), bt in zip(texts, bits)]
    body = np.array(rows, float).reshape(len(rows), len(TEXT_FEATURES) + len(soft))
    return np.hstack([cosine[:, None], (cosine ** 2)[:, None], body])


@dataclass(frozen=True)
class PairScore:
    """A fitted logistic pair score: probability = sigmoid(((x - mean) / scale) . weights + bias)."""

    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    min_cosine: float = 0.80  # pairs below this MiniLM cosine are not scored (never semantic duplicates)
    fitted_on: int = 0  # labelled pairs the weights were fitted on

    def score(self, x: np.ndarray, cosine: np.ndarray) -> np.ndarray:
        """Probability per pair; -1 for pairs under `min_cosine` (or NaN cosine)."""
        x = np.asarray(x, float).reshape(-1, len(FEATURES))
        z = ((x - np.asarray(self.mean)) / np.asarray(self.scale)) @ np.asarray(self.weights) + self.bias
        with np.errstate(invalid="ignore"):
            ok = np.nan_to_num(np.asarray(cosine, float), nan=-1.0) >= self.min_cosine
        return np.where(ok, 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))), -1.0)

    def record(self) -> dict:
        return {"features": list(FEATURES), "weights": [round(w, 6) for w in self.weights],
                "bias": round(self.bias, 6), "mean": [round(m, 6) for m in self.mean],
                "scale": [round(s, 6) for s in self.scale], "min_cosine": self.min_cosine,
                "fitted_on": self.fitted_on, "hard_guards": list(HARD_GUARDS)}

    @classmethod
    def from_record(cls, r: dict) -> "PairScore":
        return cls(tuple(r["weights"]), r["bias"], tuple(r["mean"]), tuple(r["scale"]), r["min_cosine"],
                   r.get("fitted_on", 0))


def fit_pair_score(x: np.ndarray, y: np.ndarray, min_cosine: float = 0.80, l2: float = 1.0) -> PairScore:
    """Fit on labelled candidate pairs (features, label), standardised; `sluice.stats.fit_logistic`."""
    x = np.asarray(x, float)
    mean, scale = x.mean(0), x.std(0) + 1e-9
    w, b = fit_logistic((x - mean) / scale, np.asarray(y, float), l2=l2)
    return PairScore(tuple(float(v) for v in w), float(b), tuple(float(v) for v in mean),
                     tuple(float(v) for v in scale), min_cosine, int(len(y)))




def score_pairs(scorer: PairScore, canonical: Sequence[int], duplicate: Sequence[int], cosine: np.ndarray,
                text: Callable[[int], str], facts: Callable[[int], TextFacts]) -> np.ndarray:
    """The pair score of the semantic stage's pairs (row numbers; `text(i)`, `facts(i)`: a row's text and facts)."""
    pairs = list(zip(list(canonical), list(duplicate)))
    bits = [guard_bits(facts(j), facts(i)) for i, j in pairs]
    return scorer.score(feature_matrix(cosine, [(text(i), text(j)) for i, j in pairs], bits), cosine)


__all__ = ["FEATURES", "HARD_GUARDS", "PairScore", "SOFT_GUARDS", "feature_matrix", "fit_pair_score", "guard_bits",
           "hard_veto", "score_pairs", "text_features"]
