"""Near duplicates: MinHash LSH over word shingles, vectorised, with datasketch's maths and signatures.

A prompt is the set of its word k-grams (normalised text). MinHash estimates the Jaccard similarity J of two such
sets: with P permutations, each signature position agrees with probability J, so the fraction of agreeing
positions is an unbiased estimate with standard error sqrt(J(1-J)/P) (0.04 at J=0.7, P=128).

LSH splits the P positions into b bands of r rows; two prompts become candidates when any band agrees completely,
which happens with probability 1 - (1 - J^r)^b: an S-curve centred near (1/b)^(1/r). The (b, r) pair is the one
datasketch's `MinHashLSH` picks for the threshold (`_optimal_param`: equal weight on the false-positive and
false-negative areas under the curve). Candidates are then verified: estimated J >= threshold, same request
fingerprint (block), and the content guards of `sluice.guards` (numbers, polarity, entities, word order).

Signatures are bit-for-bit those of `datasketch.MinHash(num_perm, seed, hashfunc=lambda h: h)` (default scheme
"affine32") updated with the 32-bit shingle hashes returned by `shingle_hashes`; a test checks it. They are computed
for all rows at once instead of one Python call per shingle: a numba kernel (one pass over the shingles, rows
split across cores; numba comes with vLLM) or, without numba, numpy in chunks (permute, min-reduce per row) so
memory stays bounded whatever the number of rows. Both paths are tested against datasketch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
import polars as pl

from sluice.guards import TextFacts, text_facts, veto_reason

_U32 = np.uint32


@dataclass(frozen=True)
class NearConfig:
    """MinHash LSH settings for short prompts.

    threshold: Jaccard similarity of word-shingle sets at which two prompts are near duplicates. Short prompts have
        few shingles, so one changed word moves J a lot: with bigrams, one substituted word in a 6-word question
        leaves J = 4/6 = 0.67.
    shingle_words: k in word k-grams. k=2 keeps word order information (unigrams would make "a to b" == "b to a")
        without making every edit destroy k shingles.
    num_perm: MinHash permutations P; the estimate's standard error is sqrt(J(1-J)/P).
    max_words: only the first words of very long prompts are shingled (bounded cost per row); a pair still must
        pass the guards, which read the whole text.
    chunk_cells: shingles x permutations per numpy chunk (uint32 cells): bounds peak memory (4 bytes per cell).
    """

    threshold: float = 0.7
    shingle_words: int = 2
    num_perm: int = 128
    seed: int = 1
    max_words: int = 512
    chunk_cells: int = 1 << 23
    bands_rows: tuple[int, int] | None = field(default=None)

    def lsh_params(self) -> tuple[int, int]:
        return self.bands_rows or optimal_bands_rows(self.threshold, self.num_perm)


@lru_cache(maxsize=16)
def optimal_bands_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's own choice of (bands, rows) for this threshold, so the S-curve is the library's."""
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of datasketch's affine32 scheme, taken from datasketch itself."""
    from datasketch import MinHash

    a, b = MinHash(num_perm=num_perm, seed=seed).permutations
    return a.astype(_U32), b.astype(_U32)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch applies it before permuting (wrapping uint32 arithmetic)."""
    h = h ^ (h >> _U32(16))
    h = h * _U32(0x85EBCA6B)
    h = h ^ (h >> _U32(13))
    h = h * _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


def normalised_words(texts: pl.Series, max_words: int) -> pl.Series:
    """Lists of word tokens of the normalised text (NFKC, case-folded)."""
    return (
        texts.fill_null("").str.normalize("NFKC").str.to_lowercase()
        .str.extract_all(r"[^\W_]+").list.head(max_words)
    )


def shingle_hashes(texts: Sequence[str] | pl.Series, cfg: NearConfig) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each text's word k-grams, flat, with row offsets (row i owns hashes[off[i]:off[i+1]]).

    A text with fewer than k words is one shingle of all its words; an empty text has none.
    """
    series = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
    words = normalised_words(series, cfg.max_words)
    n = len(series)
    lens = words.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = words.explode().drop_nulls()
    word_hash = flat.hash(seed=0x5EED).to_numpy()  # uint64 per word, in row order
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=starts[1:])
    k = cfg.shingle_words
    # k-gram hash: a polynomial in wrapping uint64 over the k word hashes, at every start position p with
    # p + k <= row end; rows shorter than k get one gram of all their words
    n_grams = np.where(lens >= k, lens - k + 1, np.minimum(lens, 1))
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_grams, out=off[1:])
    row_of_gram = np.repeat(np.arange(n), n_grams)
    first_word = starts[row_of_gram] + (np.arange(off[-1]) - off[row_of_gram])
    width = np.minimum(lens[row_of_gram], k)
    gram = np.zeros(off[-1], dtype=np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for i in range(k):
            take = i < width
            idx = np.where(take, first_word + i, 0)
            gram = np.where(take, gram * mult + (word_hash[idx] if word_hash.size else np.uint64(0)), gram)
    folded = (gram ^ (gram >> np.uint64(32))).astype(_U32)
    return folded, off


def _signatures_numpy(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, chunk_cells: int,
                      sig: np.ndarray) -> None:
    """Pure numpy: permute a chunk of shingles into a (shingles x num_perm) matrix, min-reduce per row."""
    n, num_perm = sig.shape
    counts = np.diff(offsets)
    rows_per_chunk_cells = max(1, chunk_cells // num_perm)
    row = 0
    while row < n:
        # as many rows as fit in the chunk budget (at least one)
        end = int(np.searchsorted(offsets, offsets[row] + rows_per_chunk_cells, side="right")) - 1
        end = min(max(end, row + 1), n)
        lo, hi = offsets[row], offsets[end]
        if hi > lo:
            mixed = _fmix32(hashes[lo:hi])
            permuted = mixed[:, None] * a[None, :] + b[None, :]
            nonempty = np.nonzero(counts[row:end])[0] + row
            mins = np.minimum.reduceat(permuted, offsets[nonempty] - lo, axis=0)
            sig[nonempty] = mins
        row = end


@lru_cache(maxsize=1)
def _compiled_kernel():
    """The same maths as `_signatures_numpy`, compiled with numba when it is installed (it comes with vLLM): one
    pass over the shingles, no (shingles x num_perm) temporary, rows split across cores. None without numba."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba ships with vllm; the numpy path is the fallback
        return None

    @numba.njit(parallel=True, cache=True, nogil=True)
    def kernel(hashes, offsets, a, b, sig):  # pragma: no cover - compiled
        # numba widens uint32 products to 64 bits: mask back to 32 to wrap as datasketch's uint32 arithmetic does
        n, num_perm = sig.shape
        mask = np.uint64(0xFFFFFFFF)
        for row in numba.prange(n):
            out = sig[row]
            for s in range(offsets[row], offsets[row + 1]):
                h = np.uint64(hashes[s])
                h ^= h >> np.uint64(16)
                h = (h * np.uint64(0x85EBCA6B)) & mask
                h ^= h >> np.uint64(13)
                h = (h * np.uint64(0xC2B2AE35)) & mask
                h ^= h >> np.uint64(16)
                h32 = np.uint32(h)
                for p in range(num_perm):
                    v = np.uint32(a[p] * h32 + b[p])
                    if v < out[p]:
                        out[p] = v

    return kernel


def signatures(hashes: np.ndarray, offsets: np.ndarray, cfg: NearConfig, compiled: bool = True) -> np.ndarray:
    """MinHash signatures (rows x num_perm, uint32) identical to datasketch's affine32 MinHash of the same hashes.

    Rows without shingles keep datasketch's empty value (all 0xFFFFFFFF) and are never candidates.
    """
    a, b = permutations(cfg.num_perm, cfg.seed)
    n = len(offsets) - 1
    sig = np.full((n, cfg.num_perm), np.iinfo(_U32).max, dtype=_U32)
    kernel = _compiled_kernel() if compiled else None
    if kernel is not None:
        kernel(np.ascontiguousarray(hashes, dtype=_U32), np.ascontiguousarray(offsets, dtype=np.int64), a, b, sig)
    else:
        _signatures_numpy(hashes, offsets, a, b, cfg.chunk_cells, sig)
    return sig


def _bucket_firsts(keys: np.ndarray) -> np.ndarray:
    """For each row, the first row (lowest index) with the same key (one uint64 per row)."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def _band_keys(block: np.ndarray, band: np.ndarray) -> np.ndarray:
    """One 64-bit key per row for (block, band values): a wrapping polynomial hash; a collision (about n^2/2^65)
    only adds a candidate, which verification then rejects."""
    key = block.astype(np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        for col in range(band.shape[1]):
            key = (key ^ band[:, col].astype(np.uint64)) * mult
            key ^= key >> np.uint64(29)
    return key


@dataclass
class NearMatches:
    dup: np.ndarray  # positions of rows found to be near duplicates
    canonical: np.ndarray  # the earlier, canonical position each one reuses
    score: np.ndarray  # estimated Jaccard similarity
    vetoed: int = 0  # candidates above the threshold the guards refused
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went, for the speed benchmark


def near_duplicate_pairs(
    texts: Sequence[str],
    block: np.ndarray,
    can_be_duplicate: np.ndarray,
    can_be_canonical: np.ndarray,
    cfg: NearConfig = NearConfig(),
) -> NearMatches:
    """Greedy, in position order: each row that may be a duplicate points at an earlier canonical row whose
    signature shares an LSH band, within the same block (request fingerprint), J >= threshold, guards silent."""
    n = len(texts)
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        clock.append(time.perf_counter())
        seconds[name] = round(clock[-1] - clock[-2], 3)

    hashes, offsets = shingle_hashes(texts, cfg)
    lap("shingles")
    sig = signatures(hashes, offsets, cfg)
    lap("signatures")
    eligible = np.diff(offsets) > 0
    bands, rows = cfg.lsh_params()
    block64 = np.asarray(block).astype(np.int64).view(np.uint64)
    cand_dup: list[np.ndarray] = []
    cand_can: list[np.ndarray] = []
    live = np.flatnonzero(eligible & (can_be_duplicate | can_be_canonical))
    for band in range(bands):
        first = live[_bucket_firsts(_band_keys(block64[live], sig[live, band * rows:(band + 1) * rows]))]
        pick = (first != live) & can_be_duplicate[live]
        cand_dup.append(live[pick])
        cand_can.append(first[pick])
    if not cand_dup or not sum(len(c) for c in cand_dup):
        lap("lsh")
        return NearMatches(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), seconds=seconds)
    pairs = np.unique(np.stack([np.concatenate(cand_dup), np.concatenate(cand_can)], axis=1), axis=0)
    lap("lsh")
    est = (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(axis=1)
    pairs, est = pairs[est >= cfg.threshold], est[est >= cfg.threshold]

    # greedy resolution: a row's canonical is the canonical of its candidate; verify against that row
    canonical_of = np.arange(n)
    facts: dict[int, TextFacts] = {}

    def fact(i: int) -> TextFacts:
        if i not in facts:
            facts[i] = text_facts(texts[i])
        return facts[i]

    out_dup, out_can, out_score, vetoed = [], [], [], 0
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    for j, i, est_ji in zip(pairs[order, 0].tolist(), pairs[order, 1].tolist(), est[order].tolist()):
        if canonical_of[j] != j:
            continue  # already matched through an earlier candidate
        c = int(canonical_of[i])
        if not can_be_canonical[c] or c >= j:
            continue
        score = est_ji if c == i else float((sig[j] == sig[c]).mean())
        if score < cfg.threshold:
            continue
        if veto_reason(fact(j), fact(c)) is not None:
            vetoed += 1
            continue
        canonical_of[j] = c
        out_dup.append(j)
        out_can.append(c)
        out_score.append(score)
    lap("verify_and_guards")
    return NearMatches(np.array(out_dup, np.int64), np.array(out_can, np.int64), np.array(out_score), vetoed,
                       seconds)
