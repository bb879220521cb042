"""Semantic duplicates: two short prompts asking the same thing in other words share one answer.

Embeddings are all-MiniLM-L6-v2 (`sluice.embed`, L2-normalised, so cosine = dot product). Search is blocked and
exact: queries are taken a block at a time and scored against the earlier rows of the same request fingerprint,
so memory is block x rows floats (bounded by `block_cells`), never the n x n matrix. A candidate must clear the
cosine threshold and then the content guards (`sluice.guards`): cosine alone is blind to negation, numbers and
swapped names (a question and its negation score 0.83-0.99).

Only short prompts are compared (`max_words`): on long prompts a shared template dominates the mean-pooled
embedding, and MiniLM truncates at 128 word pieces anyway, so two long prompts that differ after the cut-off would
look identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from sluice.guards import TextFacts, text_facts, veto_reason
from sluice.near import NearMatches


@dataclass(frozen=True)
class SemanticConfig:
    """threshold: cosine of MiniLM embeddings. Cosine alone on QQP gives precision 0.69 at 0.80 and 0.84 at 0.92
        (bench/results/dedup_quality.md). With the guards, on the QQP tuning part: 0.88 -> precision 0.92 /
        recall 0.18, 0.92 -> 0.96 / 0.15. 0.92 is the lowest threshold reaching precision 0.95 there: a false
        hit returns a wrong answer, a miss only costs one inference.
    max_words: prompts longer than this (whitespace words) are left to the exact and near stages.
    top_k: earlier neighbours kept per query before the guards: the nearest one may be vetoed while the next
        is a true paraphrase.
    block_cells: query block x candidate rows, in float32 cells (4 bytes each): the memory bound of the search.
    """

    threshold: float = 0.92
    max_words: int = 48
    top_k: int = 4
    block_cells: int = 1 << 22


Embedder = Callable[[Sequence[str]], np.ndarray]


def _default_embedder(texts: Sequence[str]) -> np.ndarray:
    from sluice.embed import embed

    return embed(texts, max_length=128)


def semantic_duplicate_pairs(
    texts: Sequence[str],
    block: np.ndarray,
    can_be_duplicate: np.ndarray,
    can_be_canonical: np.ndarray,
    cfg: SemanticConfig = SemanticConfig(),
    embedder: Embedder | None = None,
) -> NearMatches:
    """Greedy in position order: each row that may be a duplicate points at the earlier canonical row of its block
    with the highest cosine >= threshold that the guards accept."""
    n = len(texts)
    short = np.fromiter((len(t.split()) <= cfg.max_words for t in texts), bool, n)
    dup_ok = can_be_duplicate & short
    can_ok = can_be_canonical & short
    used = np.flatnonzero(dup_ok | can_ok)
    if not dup_ok.any() or not can_ok.any():
        return NearMatches(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    emb = (embedder or _default_embedder)([texts[i] for i in used])
    vectors = np.zeros((n, emb.shape[1]), np.float32)
    vectors[used] = emb

    # candidates: for each possible duplicate, its top_k earlier neighbours in the same block above the threshold
    cand_j: list[np.ndarray] = []
    cand_i: list[np.ndarray] = []
    cand_s: list[np.ndarray] = []
    block = np.asarray(block)
    for value in np.unique(block[used]):
        members = used[block[used] == value]
        targets = members[can_ok[members]]
        queries = members[dup_ok[members]]
        if not len(targets) or not len(queries):
            continue
        step = max(1, cfg.block_cells // len(targets))
        t_vec = vectors[targets]
        for lo in range(0, len(queries), step):
            q = queries[lo:lo + step]
            sims = vectors[q] @ t_vec.T
            sims[targets[None, :] >= q[:, None]] = -1.0  # only earlier rows can be canonical
            k = min(cfg.top_k, len(targets))
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top_sims = np.take_along_axis(sims, top, axis=1)
            keep = top_sims >= cfg.threshold
            cand_j.append(np.repeat(q, k)[keep.ravel()])
            cand_i.append(targets[top].ravel()[keep.ravel()])
            cand_s.append(top_sims.ravel()[keep.ravel()])
    if not cand_j or not sum(len(c) for c in cand_j):
        return NearMatches(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    j_all, i_all, s_all = np.concatenate(cand_j), np.concatenate(cand_i), np.concatenate(cand_s)
    order = np.lexsort((-s_all, j_all))  # by duplicate position, best neighbour first

    canonical_of = np.arange(n)
    facts: dict[int, TextFacts] = {}

    def fact(i: int) -> TextFacts:
        if i not in facts:
            facts[i] = text_facts(texts[i])
        return facts[i]

    out_dup, out_can, out_score, vetoed = [], [], [], 0
    for j, i in zip(j_all[order].tolist(), i_all[order].tolist()):
        if canonical_of[j] != j:
            continue
        c = int(canonical_of[i])
        if c >= j or not can_ok[c]:
            continue
        score = float(vectors[j] @ vectors[c])
        if score < cfg.threshold:
            continue
        if veto_reason(fact(j), fact(c)) is not None:
            vetoed += 1
            continue
        canonical_of[j] = c
        out_dup.append(j)
        out_can.append(c)
        out_score.append(score)
    return NearMatches(np.array(out_dup, np.int64), np.array(out_can, np.int64), np.array(out_score), vetoed)
