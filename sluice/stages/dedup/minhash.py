"""MinHash signatures and LSH candidates over word shingles, vectorised, with datasketch's maths and signatures.

A prompt is the set of its word k-grams (normalised text). MinHash estimates the Jaccard similarity J of two such
sets: with P permutations, each signature position agrees with probability J, so the fraction of agreeing
positions is an unbiased estimate with standard error sqrt(J(1-J)/P) (0.04 at J=0.7, P=128).

LSH splits the P positions into b bands of r rows; two prompts become candidates when any band agrees completely,
which happens with probability 1 - (1 - J^r)^b: an S-curve centred near (1/b)^(1/r). The (b, r) pair is the one
datasketch's `MinHashLSH` picks for the threshold (`_optimal_param`: equal weight on the false-positive and
false-negative areas under the curve). The near stage (`sluice.stages.dedup.near`) then verifies the candidates.

Signatures are bit-for-bit those of `datasketch.MinHash(num_perm, seed, hashfunc=lambda h: h)` (default scheme
"affine32") updated with the 32-bit shingle hashes returned by `shingle_hashes`; a test checks it. They are computed
for all rows at once instead of one Python call per shingle: a numba kernel (one pass over the shingles, rows
split across cores; numba comes with vLLM) or, without numba, numpy in chunks (permute, min-reduce per row) so
memory stays bounded whatever the number of rows. Both paths are tested against datasketch. The permutations and
the LSH (bands, rows) are datasketch's, recomputed here with numpy (importing datasketch pulls in scipy: about 1.5 s
per process), and tested against the library.
Every numba kernel of Sluice (the semantic stage's too) gets numba from `numba_module`, holding `PARALLEL_LAUNCH`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
import polars as pl

_U32 = np.uint32


@lru_cache(maxsize=16)
def optimal_bands_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's choice of (bands, rows) for this threshold (`datasketch.lsh._optimal_param` with equal weights),
    so the S-curve is the library's: the (b, r), b * r <= num_perm, minimising the area under the curve
    P(s) = 1 - (1 - s^r)^b below the threshold (false positives) plus the area above 1 - P(s) past it (false
    negatives). The curve is a polynomial of degree b * r <= num_perm in s, so Gauss-Legendre quadrature with
    num_perm / 2 + 1 nodes integrates it exactly (datasketch integrates numerically with scipy); a test checks
    the choice against datasketch over a grid of thresholds."""
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def area(lo: float, hi: float, b: np.ndarray, r: np.ndarray, negative: bool) -> np.ndarray:
        s = (hi - lo) / 2 * nodes + (hi + lo) / 2  # nodes mapped from [-1, 1] to [lo, hi]
        p = 1 - (1 - s[None, :] ** r[:, None]) ** b[:, None]
        return ((1 - p) if negative else p) @ weights * (hi - lo) / 2

    b, r = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], float).T
    error = area(0.0, threshold, b, r, False) * 0.5 + area(threshold, 1.0, b, r, True) * 0.5
    best = int(np.argmin(error))  # the first minimum, in datasketch's loop order
    return int(b[best]), int(r[best])


@lru_cache(maxsize=16)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) of datasketch's affine32 scheme (`MinHash._init_permutations`): from numpy's legacy
    RandomState(seed), a = odd 32-bit multipliers, b = 32-bit offsets; a test checks them against datasketch."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=_U32) * _U32(2) + _U32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=_U32)
    return a, b


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
    char_max_words: prompts of at most this many words are shingled by characters instead (`char_shingle`-grams
        of the normalised words joined by one space): one typo changes one word, so two of a short prompt's few
        word bigrams (J = 3/7 for a 6-word question), but only a few of its many character grams. 0: words only.
        A short and a long prompt are then never near duplicates of each other (their shingles differ in kind).
    char_shingle: k in character k-grams.
    chunk_cells: shingles x permutations per numpy chunk (uint32 cells): bounds peak memory (4 bytes per cell).
    chunk_rows: rows tokenised and hashed at a time: the word lists (the largest temporaries) stay bounded, so
        memory per row does not grow with the batch.
    workers: processes verifying candidate pairs (guards are Python); None: the cores this process may use.
    parallel_min_pairs: below this many candidate pairs, verification stays in this process (a fork costs more).
    partition_rows: rows per partition of the near stage (`sluice.stages.dedup.near`): shingles and signatures
        exist for one partition at a time; spill_dir: where signatures are spilled (None: a temporary folder).
    """

    threshold: float = 0.7
    shingle_words: int = 2
    num_perm: int = 128
    seed: int = 1
    max_words: int = 512
    char_max_words: int = 16
    char_shingle: int = 4
    chunk_cells: int = 1 << 23
    chunk_rows: int = 1 << 15
    workers: int | None = None
    parallel_min_pairs: int = 20_000
    bands_rows: tuple[int, int] | None = field(default=None)
    partition_rows: int = 1 << 16
    spill_dir: str | None = None

    def lsh_params(self) -> tuple[int, int]:
        return self.bands_rows or optimal_bands_rows(self.threshold, self.num_perm)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch applies it before permuting (wrapping uint32 arithmetic)."""
    h = h ^ (h >> _U32(16))
    h = h * _U32(0x85EBCA6B)
    h = h ^ (h >> _U32(13))
    h = h * _U32(0xC2B2AE35)
    return h ^ (h >> _U32(16))


def nfkc(texts: pl.Series) -> pl.Series:
    """Unicode NFKC form. ASCII text is already in it, so only rows with other characters (a few percent of
    prompts) go through the normaliser, which costs as much per character whatever the text."""
    non_ascii = np.flatnonzero((texts.str.len_bytes() != texts.str.len_chars()).fill_null(False).to_numpy())
    if not non_ascii.size:
        return texts
    return texts.scatter(non_ascii, texts.gather(non_ascii).str.normalize("NFKC"))


def normalised_words(texts: pl.Series, max_words: int) -> pl.Series:
    """Lists of word tokens of the normalised text (NFKC, case-folded)."""
    return nfkc(texts.fill_null("")).str.to_lowercase().str.extract_all(r"[^\W_]+").list.head(max_words)


_MULT = np.uint64(0x9E3779B97F4A7C15)


def _grams_numpy(word_hash: np.ndarray, lens: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k-gram hashes (folded to 32 bits) and grams per row, from the token hashes of consecutive rows (k[row] per
    row): a polynomial in wrapping uint64 over the k token hashes at every start position p with p + k <= row end;
    rows shorter than k get one gram of all their tokens."""
    n = len(lens)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=starts[1:])
    n_grams = np.where(lens >= k, lens - k + 1, np.minimum(lens, 1))
    off = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_grams, out=off[1:])
    row_of_gram = np.repeat(np.arange(n), n_grams)
    first_word = starts[row_of_gram] + (np.arange(off[-1]) - off[row_of_gram])
    width = np.minimum(lens[row_of_gram], k[row_of_gram])
    gram = np.zeros(off[-1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(int(k.max(initial=0))):
            take = i < width
            idx = np.where(take, first_word + i, 0)
            gram = np.where(take, gram * _MULT + (word_hash[idx] if word_hash.size else np.uint64(0)), gram)
    return (gram ^ (gram >> np.uint64(32))).astype(_U32), n_grams


PARALLEL_LAUNCH = threading.Lock()


@lru_cache(maxsize=1)
def numba_module():
    """numba (it comes with vLLM) set to its own workqueue threading layer, or None without numba.

    Its default OpenMP layer loads a second OpenMP runtime beside torch's: once a parallel kernel has run, MiniLM
    with torch on an explicit thread count slows ~20x (measured: 146 -> 8 rows/s on 2 cores) while both
    runtimes' idle threads spin. The workqueue layer leaves torch alone (156 rows/s). The layer is fixed at the
    first parallel launch, so every kernel of Sluice gets numba from here; NUMBA_THREADING_LAYER still wins.
    It takes one parallel launch at a time: callers hold `PARALLEL_LAUNCH` (Prefect may run tasks on threads)."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba ships with vllm
        return None
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"
    return numba


@lru_cache(maxsize=1)
def _compiled_grams():
    """`_grams_numpy` compiled: one pass, no per-gram index temporaries. None without numba."""
    numba = numba_module()
    if numba is None:  # pragma: no cover - numba ships with vllm; the numpy path is the fallback
        return None

    @numba.njit(cache=True, nogil=True)
    def grams(word_hash, lens, k):  # pragma: no cover - compiled
        n = len(lens)
        n_grams = np.empty(n, np.int64)
        total = 0
        for row in range(n):
            g = lens[row] - k[row] + 1 if lens[row] >= k[row] else min(lens[row], 1)
            n_grams[row] = g
            total += g
        out = np.empty(total, np.uint32)
        word = 0
        at = 0
        for row in range(n):
            width = min(lens[row], k[row])
            for p in range(n_grams[row]):
                gram = np.uint64(0)
                for i in range(width):
                    gram = gram * np.uint64(0x9E3779B97F4A7C15) + word_hash[word + p + i]
                out[at] = np.uint32((gram ^ (gram >> np.uint64(32))) & np.uint64(0xFFFFFFFF))
                at += 1
            word += lens[row]
        return out, n_grams

    return grams


def shingle_hashes(texts: Sequence[str] | pl.Series, cfg: NearConfig,
                   compiled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of each text's word k-grams, flat, with row offsets (row i owns hashes[off[i]:off[i+1]]).

    A text with fewer than k words is one shingle of all its words; an empty text has none. Texts of at most
    cfg.char_max_words words are shingled by characters instead (cfg.char_shingle-grams of the words joined by one
    space). The k-gram hash is a polynomial in wrapping uint64 over the k token hashes (polars' string hash), folded
    to 32 bits. Rows are tokenised cfg.chunk_rows at a time, so the word lists never exist for the whole batch at
    once.
    """
    series = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
    grams = (_compiled_grams() if compiled else None) or _grams_numpy
    parts, counts = [], []
    for lo in range(0, len(series), cfg.chunk_rows):
        words = normalised_words(series.slice(lo, cfg.chunk_rows), cfg.max_words)
        n_words = words.list.len().fill_null(0)
        by_char = ((n_words > 0) & (n_words <= cfg.char_max_words)).to_numpy()
        if by_char.any():  # short rows: their characters are the tokens
            words = pl.select(pl.when(pl.lit(pl.Series(by_char)))
                              .then(pl.lit(words).list.join(" ").str.split(""))
                              .otherwise(pl.lit(words))).to_series()
        lens = words.list.len().fill_null(0).to_numpy().astype(np.int64)
        k = np.where(by_char, cfg.char_shingle, cfg.shingle_words).astype(np.int64)
        word_hash = words.explode().drop_nulls().hash(seed=0x5EED).to_numpy()  # uint64 per token, in row order
        del words
        folded, n_grams = grams(word_hash, lens, k)
        parts.append(folded)
        counts.append(n_grams)
    off = np.zeros(len(series) + 1, dtype=np.int64)
    if counts:
        np.cumsum(np.concatenate(counts), out=off[1:])
    hashes = np.concatenate(parts) if len(parts) > 1 else (parts[0] if parts else np.empty(0, _U32))
    return hashes, off


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
    numba = numba_module()
    if numba is None:  # pragma: no cover - numba ships with vllm; the numpy path is the fallback
        return None

    @numba.njit(parallel=True, cache=True, nogil=True)
    def kernel(hashes, offsets, a, b, sig):  # pragma: no cover - compiled
        # every product is cast back to uint32 (numba would widen it to 64 bits): datasketch's wrapping uint32
        # arithmetic, and 32-bit lanes, so the inner loop (an unconditional min) vectorises 8 or 16 wide
        n, num_perm = sig.shape
        for row in numba.prange(n):
            out = sig[row]
            for s in range(offsets[row], offsets[row + 1]):
                h = np.uint32(hashes[s])
                h ^= h >> np.uint32(16)
                h = np.uint32(h * np.uint32(0x85EBCA6B))
                h ^= h >> np.uint32(13)
                h = np.uint32(h * np.uint32(0xC2B2AE35))
                h ^= h >> np.uint32(16)
                for p in range(num_perm):
                    out[p] = min(out[p], np.uint32(a[p] * h + b[p]))

    return kernel


def signatures(hashes: np.ndarray, offsets: np.ndarray, cfg: NearConfig, compiled: bool = True) -> np.ndarray:
    """MinHash signatures (rows x num_perm, uint32) identical to datasketch's affine32 MinHash of the same hashes.
    Rows without shingles keep datasketch's empty value (all 0xFFFFFFFF) and are never candidates."""
    a, b = permutations(cfg.num_perm, cfg.seed)
    n = len(offsets) - 1
    sig = np.full((n, cfg.num_perm), np.iinfo(_U32).max, dtype=_U32)
    kernel = _compiled_kernel() if compiled else None
    if kernel is not None:
        with PARALLEL_LAUNCH:
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


def candidate_pairs(sig: np.ndarray, block: np.ndarray, live: np.ndarray, can_be_duplicate: np.ndarray,
                    bands: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(dup, canonical) position pairs, sorted by dup then canonical, each once: for every band, each live row that
    may be a duplicate and the first live row of its bucket (same block, same band values), if that is earlier."""
    block64 = np.asarray(block).astype(np.int64).view(np.uint64)[live]
    return pairs_from_band_keys(lambda band: _band_keys(block64, sig[live, band * rows:(band + 1) * rows]),
                                live, can_be_duplicate, len(sig), bands)


def pairs_from_band_keys(keys_of_band, live: np.ndarray, can_be_duplicate: np.ndarray, n: int,
                         bands: int) -> tuple[np.ndarray, np.ndarray]:
    """`candidate_pairs` from the live rows' band keys (`keys_of_band(band)`: one uint64 per live row)."""
    codes = []
    for band in range(bands):
        first = live[_bucket_firsts(keys_of_band(band))]
        pick = (first != live) & can_be_duplicate[live]
        codes.append(live[pick] * n + first[pick])  # one int64 per pair: unique and sorted in one pass
    code = np.unique(np.concatenate(codes)) if codes else np.empty(0, np.int64)
    return code // n, code % n


@lru_cache(maxsize=1)
def _compiled_pair_kernels():
    """Agreement counts of signature pairs (no pairs x num_perm temporaries) and connected components of the
    candidate graph, compiled. None without numba."""
    numba = numba_module()
    if numba is None:  # pragma: no cover - numba ships with vllm
        return None

    @numba.njit(cache=True, nogil=True)
    def agreement(sig, a, b):  # pragma: no cover - compiled
        out = np.empty(len(a), np.float64)
        num_perm = sig.shape[1]
        for k in range(len(a)):
            same = 0
            for p in range(num_perm):
                same += sig[a[k], p] == sig[b[k], p]
            out[k] = same / num_perm
        return out

    @numba.njit(cache=True, nogil=True)
    def components(n, a, b):  # pragma: no cover - compiled
        # union-find linking the larger root under the smaller, so parent[x] <= x always and one final pass in
        # increasing order leaves every row pointing at its component's smallest row
        parent = np.arange(n)
        for k in range(len(a)):
            x, y = a[k], b[k]
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            while parent[y] != y:
                parent[y] = parent[parent[y]]
                y = parent[y]
            if x != y:
                parent[max(x, y)] = min(x, y)
        for x in range(n):
            parent[x] = parent[parent[x]]
        return parent

    return agreement, components


def agreement(sig: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 1 << 14) -> np.ndarray:
    """Fraction of equal signature positions of each pair (a[k], b[k]): the MinHash estimate of their J."""
    kernels = _compiled_pair_kernels()
    if kernels is not None:
        return kernels[0](sig, a.astype(np.int64), b.astype(np.int64))
    return np.concatenate([(sig[a[k:k + chunk]] == sig[b[k:k + chunk]]).mean(axis=1)
                           for k in range(0, len(a), chunk)] or [np.empty(0)])

