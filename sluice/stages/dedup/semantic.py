"""Semantic duplicates: two short prompts asking the same thing in other words share one answer.

Two passes, so the transformer only runs on the few rows that have a candidate:

    candidates  static vectors distilled from MiniLM (`models.embeddings.static_embed`: a weighted mean of word-piece
                vectors, no transformer per row; 100k prompts in seconds). Search is blocked and exact: queries
                are taken a block at a time and scored against the earlier rows of the same request fingerprint,
                so memory is block x rows floats (bounded by `block_cells`), never the n x n matrix. Each row
                keeps its `top_k` earlier neighbours at static cosine >= `candidate_threshold`.
    decision    all-MiniLM-L6-v2 (`models.embeddings.embed`, L2-normalised, so cosine = dot product) embeds only the
                rows of candidate pairs; a pair must clear the MiniLM cosine `threshold` and then the content
                guards (`sluice.stages.dedup.guards`): cosine alone is blind to negation, numbers and swapped names (a question
                and its negation score 0.83-0.99). Under a run's calibrated rule with a learned pair score
                (`sluice.stages.dedup.pair_score`), the score decides instead of the cosine, and only the hard guards veto.

The guards run on the candidate pairs before MiniLM (they veto whatever the cosine), so MiniLM embeds only rows of
pairs the guards allow. A hit is exactly "MiniLM cosine >= threshold and guards silent", as before; the static pass
can only lose a pair whose static cosine falls below `candidate_threshold` (on the QQP tuning pairs, 1.1% of the pairs with MiniLM
cosine >= 0.92; a random pair of corpus prompts passes 0.80 about once in 2,000).

Memory (issue 19): the prompts stay one Arrow column; static vectors are made `embed_rows` rows at a time and
kept for the short rows only, MiniLM vectors for the rows of candidate pairs only (never an n x 384 matrix), and
texts are read a row at a time when the guards ask (their facts kept for recently used rows only).

Only short prompts are compared (`max_words`): on long prompts a shared template dominates the mean-pooled
embedding, and MiniLM truncates at 128 word pieces anyway, so two long prompts that differ after the cut-off would
look identical.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import polars as pl

from sluice.allocators import give_back_freed
from sluice.stages.dedup.calibrate import Rule
from sluice.stages.dedup.guards import RecentFacts, TextFacts, forget_tokens, veto_reason
from sluice.stages.dedup.minhash import PARALLEL_LAUNCH, numba_module
from sluice.stages.dedup.near import NearMatches
from sluice.stages.dedup.pair_score import guard_bits, hard_veto, score_pairs


@dataclass(frozen=True)
class SemanticConfig:
    """threshold: cosine of MiniLM embeddings. Cosine alone on the QQP report part gives precision 0.68 at 0.80 and
        0.83 at 0.92 (bench/results/dedup_quality.md, every pair). With the guards, on the whole QQP tuning part:
        0.88 -> precision 0.87 / recall 0.18, 0.92 -> 0.91 / 0.14, 0.94 -> 0.92 / 0.12; no threshold reaches 0.95
        there (the top of every ranking tried, learned ones included, holds label noise). 0.92 keeps precision
        above 0.9: a false hit returns a wrong answer, a miss only costs one inference.
    max_words: prompts longer than this (whitespace words) are left to the exact and near stages.
    top_k: earlier neighbours kept per query before the guards: the nearest one may be vetoed while the next
        is a true paraphrase.
    block_cells: query block x candidate rows, in float32 cells (4 bytes each): the memory bound of the search
        (64 MB by default).
    candidate_threshold: static (distilled) cosine a pair needs to be embedded with MiniLM at all. On the QQP
        tuning part 0.80 keeps 98.9% of the pairs with MiniLM cosine >= 0.92 (0.75: 99.6%, 0.85: 96.3%); lower
        costs MiniLM rows (a random pair of corpus prompts passes 0.80 about once in 2,000). None: skip the static
        pass and embed every short row with MiniLM (slow: MiniLM does tens to a few hundred rows/s on 2 cores).
    rule: the threshold per length bucket chosen for a false-hit rate (`sluice.stages.dedup.calibrate`, what a
        run uses); None: `threshold` for every pair.
    embed_rows: rows tokenised and given static vectors at a time (and rows whose words are counted at a time).
    """

    threshold: float = 0.92
    max_words: int = 48
    top_k: int = 4
    block_cells: int = 1 << 24
    candidate_threshold: float | None = 0.80
    rule: Rule | None = None
    embed_rows: int = 1 << 16

    def pair_thresholds(self, words_a: np.ndarray, words_b: np.ndarray) -> np.ndarray:
        """The cosine each pair needs: by the longer prompt's length bucket under `rule`, else `threshold`."""
        if self.rule is None:
            return np.full(len(words_a), self.threshold)
        return self.rule.threshold_for(np.maximum(words_a, words_b))

    def lowest_threshold(self) -> float:
        """The MiniLM cosine a pair needs before it is decided (under a learned pair score: its min_cosine)."""
        if self.rule is not None and self.rule.scorer is not None:
            return self.rule.scorer.min_cosine
        return self.threshold if self.rule is None else min(self.rule.thresholds)

    def vetoed(self, a: TextFacts, b: TextFacts) -> bool:
        """Under a learned pair score only its hard guards veto (the others are its features); else every guard."""
        if self.rule is not None and self.rule.scorer is not None:
            return hard_veto(guard_bits(a, b))
        return veto_reason(a, b) is not None


Embedder = Callable[[Sequence[str]], np.ndarray]
FACTS_CACHED = 1 << 16  # rows whose guard facts are kept while pairs are checked (`guards.RecentFacts`)
PAIRS_AT_ONCE = 1 << 14  # candidate pairs scored at once: each holds two 384-float vectors (140k pairs: 430 MB)
log = logging.getLogger(__name__)


def _default_embedder(texts: Sequence[str]) -> np.ndarray:
    from models.embeddings import embed

    return embed(texts, max_length=128)


def _default_candidate_embedder(texts: Sequence[str]) -> np.ndarray:
    from models.embeddings import static_embed

    return static_embed(texts, max_length=128)


def _best_per_row(sims: np.ndarray, limits: np.ndarray, threshold: float, top_k: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, score) of each row's best top_k cells >= threshold among its first limits[row] columns, by
    row, best first (ties: lower column first)."""
    kernel = _compiled_best_per_row()
    if kernel is not None:
        cols = np.full((len(sims), top_k), -1, np.int64)
        scores = np.zeros((len(sims), top_k), np.float32)
        with PARALLEL_LAUNCH:
            kernel(sims, limits.astype(np.int64), np.float32(threshold), cols, scores)
        r, k = np.nonzero(cols >= 0)
        return r, cols[r, k], scores[r, k]
    # above-threshold cells are few: take them sparsely, then keep the best top_k per row
    r, c = np.nonzero(sims >= threshold)
    keep = c < limits[r]
    r, c = r[keep], c[keep]
    s = sims[r, c]
    order = np.lexsort((-s, r))
    r, c, s = r[order], c[order], s[order]
    best = np.arange(len(r)) - np.searchsorted(r, r) < top_k
    return r[best], c[best], s[best]


@lru_cache(maxsize=1)
def _compiled_best_per_row():
    """`_best_per_row`'s scan compiled with numba (it comes with vLLM): one pass over the scores, rows split across
    cores, no boolean matrix or index arrays the size of the block. None without numba."""
    numba = numba_module()
    if numba is None:  # pragma: no cover - numba ships with vllm; the numpy path is the fallback
        return None

    @numba.njit(parallel=True, cache=True, nogil=True)
    def kernel(sims, limits, threshold, cols, scores):  # pragma: no cover - compiled
        top_k = cols.shape[1]
        for row in numba.prange(sims.shape[0]):
            count = 0
            for col in range(limits[row]):
                v = sims[row, col]
                if v < threshold:
                    continue
                if count < top_k:
                    pos = count
                    count += 1
                elif v > scores[row, top_k - 1]:
                    pos = top_k - 1
                else:
                    continue
                while pos > 0 and scores[row, pos - 1] < v:
                    scores[row, pos] = scores[row, pos - 1]
                    cols[row, pos] = cols[row, pos - 1]
                    pos -= 1
                scores[row, pos] = v
                cols[row, pos] = col

    return kernel


def _top_neighbours(vectors: np.ndarray, used: np.ndarray, block: np.ndarray, dup_ok: np.ndarray,
                    can_ok: np.ndarray, cfg: SemanticConfig, threshold: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each possible duplicate, its top_k earlier neighbours in the same block with cosine >= threshold:
    (duplicate, neighbour, cosine) arrays. vectors[k] is the vector of row used[k] (used sorted). Blocked: at
    most block_cells scores in memory at once."""
    cand_j: list[np.ndarray] = [np.empty(0, np.int64)]
    cand_i: list[np.ndarray] = [np.empty(0, np.int64)]
    cand_s: list[np.ndarray] = [np.empty(0, np.float32)]
    for value in np.unique(block[used]):
        members = used[block[used] == value]
        targets = members[can_ok[members]]
        queries = members[dup_ok[members]]
        if not len(targets) or not len(queries):
            continue
        step = max(1, cfg.block_cells // len(targets))
        t_vec = vectors[np.searchsorted(used, targets)]
        for lo in range(0, len(queries), step):
            q = queries[lo:lo + step]
            # only earlier rows can be canonical: targets sorted, so score just the prefix before the last query
            n_t = int(np.searchsorted(targets, q[-1]))
            if n_t == 0:
                continue
            sims = vectors[np.searchsorted(used, q)] @ t_vec[:n_t].T
            r, c, s = _best_per_row(sims, np.searchsorted(targets, q), threshold, cfg.top_k)
            cand_j.append(q[r])
            cand_i.append(targets[c])
            cand_s.append(s)
    return np.concatenate(cand_j), np.concatenate(cand_i), np.concatenate(cand_s)


def _word_counts(texts: pl.Series, chunk_rows: int) -> np.ndarray:
    """Whitespace words per text (Python's str.split, null: 0), a chunk of rows at a time."""
    out = np.zeros(len(texts), np.int64)
    for lo in range(0, len(texts), chunk_rows):
        chunk = texts.slice(lo, chunk_rows).fill_null("").to_list()
        out[lo:lo + len(chunk)] = np.fromiter((len(t.split()) for t in chunk), np.int64, len(chunk))
    return out


def short_prompts(texts: pl.Series, cfg: SemanticConfig) -> tuple[pl.Series, np.ndarray]:
    """(texts with every prompt over cfg.max_words words null, word counts of all texts): what
    `semantic_duplicate_pairs(..., n_words=)` needs, in a fresh buffer, so that a caller that no longer needs the
    long prompts can let them go (at 1M rows: 480 MB of 500, issue 19)."""
    n_words = _word_counts(texts, cfg.embed_rows)
    short = np.flatnonzero(n_words <= cfg.max_words)
    kept: list[str | None] = [None] * len(texts)
    for row, text in zip(short.tolist(), texts.gather(short).to_list()):
        kept[row] = text
    return pl.Series(texts.name, kept, dtype=pl.String), n_words


def _blocked(embed: Embedder, texts: pl.Series, rows: np.ndarray, chunk_rows: int) -> np.ndarray:
    """embed(texts of rows), chunk_rows rows at a time (the static vectors are per row, so the same at any size)."""
    parts = [embed(texts.gather(rows[lo:lo + chunk_rows]).fill_null("").to_list())
             for lo in range(0, len(rows), chunk_rows)]
    return np.concatenate(parts) if parts else embed([])


def semantic_duplicate_pairs(
    texts: Sequence[str] | pl.Series,
    block: np.ndarray,
    can_be_duplicate: np.ndarray,
    can_be_canonical: np.ndarray,
    cfg: SemanticConfig = SemanticConfig(),
    embedder: Embedder | None = None,
    candidate_embedder: Embedder | None = None,
    n_words: np.ndarray | None = None,
) -> NearMatches:
    """Greedy in position order: each row that may be a duplicate points at the earlier canonical row of its block
    with the highest cosine >= threshold that the guards accept. `n_words`: the texts' word counts, given when the
    texts are `short_prompts` (long prompts null)."""
    series = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
    n = len(series)
    n_words = _word_counts(series, cfg.embed_rows) if n_words is None else n_words
    short = n_words <= cfg.max_words
    dup_ok = can_be_duplicate & short
    can_ok = can_be_canonical & short
    used = np.flatnonzero(dup_ok | can_ok)
    if not dup_ok.any() or not can_ok.any():
        return NearMatches(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    block = np.asarray(block)

    def text(i: int) -> str:  # one row's prompt, read when asked (a dict of every candidate row's took 100s of MB)
        return series[i] or ""

    fact = RecentFacts(text, FACTS_CACHED)

    vetoed_early = 0
    if cfg.candidate_threshold is None:
        search_rows, search_threshold = used, cfg.lowest_threshold()
    else:
        # pass 1: static vectors propose candidates; only their rows go through MiniLM
        t0 = time.perf_counter()
        static = _blocked(candidate_embedder or _default_candidate_embedder, series, used, cfg.embed_rows)
        log.debug("semantic: %d static vectors in %.1f s", len(used), time.perf_counter() - t0)
        j_c, i_c, _ = _top_neighbours(static, used, block, dup_ok, can_ok, cfg, cfg.candidate_threshold)
        del static
        log.debug("semantic: %d candidate pairs after %.1f s", len(j_c), time.perf_counter() - t0)
        # the guards veto whatever the cosine: a candidate pair they refuse needs no MiniLM (changed numbers and
        # added qualifiers are most static candidates in a batch of templated or edited prompts)
        allowed = np.fromiter((not cfg.vetoed(fact(j), fact(i)) for j, i in zip(j_c.tolist(), i_c.tolist())),
                              bool, len(j_c))
        vetoed_early = int((~allowed).sum())
        j_c, i_c = j_c[allowed], i_c[allowed]
        search_rows, search_threshold = np.unique(np.concatenate([j_c, i_c])), cfg.lowest_threshold()
        log.debug("semantic: %d pairs vetoed by the guards, %d rows to embed, after %.1f s", vetoed_early,
                  len(search_rows), time.perf_counter() - t0)
        if not len(search_rows):
            return NearMatches(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
        fact.clear()  # the MiniLM pass is the stage's peak: the veto pass's facts and token caches are made again
        forget_tokens()  # for the few pairs that pass (at 1M rows: ~100 MB held through the pass, issue 19)
        give_back_freed()
    emb = (embedder or _default_embedder)(series.gather(search_rows).fill_null("").to_list())

    def vectors(rows: np.ndarray) -> np.ndarray:
        """MiniLM vectors of rows (zero for a row that was not embedded)."""
        at = np.minimum(np.searchsorted(search_rows, rows), len(search_rows) - 1)
        return np.where((search_rows[at] == rows)[:, None], emb[at], np.float32(0))

    if cfg.candidate_threshold is None:
        j_all, i_all, s_all = _top_neighbours(emb, used, block, dup_ok, can_ok, cfg, search_threshold)
    else:
        s_all = np.concatenate([np.einsum("ij,ij->i", vectors(j_c[lo:lo + PAIRS_AT_ONCE]),
                                          vectors(i_c[lo:lo + PAIRS_AT_ONCE]))
                                for lo in range(0, len(j_c), PAIRS_AT_ONCE)])
        keep = s_all >= search_threshold
        j_all, i_all, s_all = j_c[keep], i_c[keep], s_all[keep]
    scorer = cfg.rule.scorer if cfg.rule is not None else None
    if scorer is not None:  # the learned pair score decides (sluice.stages.dedup.pair_score), not the cosine
        s_all = score_pairs(scorer, i_all.tolist(), j_all.tolist(), s_all, text, fact)
    keep = s_all >= cfg.pair_thresholds(n_words[j_all], n_words[i_all])
    j_all, i_all, s_all = j_all[keep], i_all[keep], s_all[keep]
    if not len(j_all):
        return NearMatches(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    order = np.lexsort((-s_all, j_all))  # by duplicate position, best neighbour first

    canonical_of = np.arange(n)
    out_dup, out_can, out_score, vetoed = [], [], [], vetoed_early
    for j, i in zip(j_all[order].tolist(), i_all[order].tolist()):
        if canonical_of[j] != j:
            continue
        c = int(canonical_of[i])
        if c >= j or not can_ok[c]:
            continue
        v_j, v_c = vectors(np.array([j, c]))
        score = float(v_j @ v_c)  # 0 for a canonical reached only through vetoed pairs (never embedded)
        if scorer is not None:
            score = float(score_pairs(scorer, [c], [j], np.array([score]), text, fact)[0])
        if score < cfg.pair_thresholds(n_words[[j]], n_words[[c]])[0]:
            continue
        if cfg.vetoed(fact(j), fact(c)):
            vetoed += 1
            continue
        canonical_of[j] = c
        out_dup.append(j)
        out_can.append(c)
        out_score.append(score)
    return NearMatches(np.array(out_dup, np.int64), np.array(out_can, np.int64), np.array(out_score), vetoed)
