"""Near duplicates: MinHash LSH over word shingles (`sluice.stages.dedup.minhash`), candidates verified.

A prompt is the set of its word k-grams (normalised text); two prompts are near duplicates when the Jaccard
similarity J of those sets, estimated by MinHash, is >= the threshold. LSH proposes candidate pairs (datasketch's
bands and rows for the threshold; the maths is explained in `sluice.stages.dedup.minhash`). Candidates are then
verified: estimated J >= threshold, same request fingerprint (block), and the content guards of
`sluice.stages.dedup.guards` (numbers, polarity, entities, word order).

Where the time goes (100k prompts, bench/dedup_speed.py): the guards on candidate pairs are most of it, because
they are Python; the candidate graph splits into small connected components, and the greedy resolution of one
component never looks at another, so components are verified in parallel worker processes (fork: the texts are
shared, not copied) when there are enough pairs to pay for the processes.

Memory stays bounded as batches grow (issue 19): rows are taken in partitions of `NearConfig.partition_rows`, and
`sign_partition` (a pure function of one `NearPartition`) shingles them, computes their signatures, writes the
signatures to a .npy file in a spill folder and returns only the partition's LSH band keys (bands x 8 bytes a row).
Candidates come from the band keys, one band at a time; verification reads back the signatures and texts of the
rows in candidate pairs only (never a Python list of every prompt). The partitions go through `mapper(fn, items)
-> list of fn(item)`, a plain in-process loop by default; a distributed runner passes its own (e.g. Dask's map and
gather), as long as its workers can write to the spill folder (`NearConfig.spill_dir`, else a temporary folder)
and the caller can read it. The result is identical to the whole-batch computation (tests/sluice/stages/dedup/
test_near_partitions.py).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from sluice.stages.dedup.guards import RecentFacts, veto_reason
from sluice.stages.dedup.minhash import PARALLEL_LAUNCH as PARALLEL_LAUNCH

# moved to sluice.stages.dedup.minhash; re-exported so `from sluice.stages.dedup.near import ...` keeps working
from sluice.stages.dedup.minhash import NearConfig as NearConfig
from sluice.stages.dedup.minhash import (
    _band_keys,
    _compiled_pair_kernels,
    agreement,
    pairs_from_band_keys,
    shingle_hashes,
    signatures,
)
from sluice.stages.dedup.minhash import nfkc as nfkc
from sluice.stages.dedup.minhash import normalised_words as normalised_words
from sluice.stages.dedup.minhash import numba_module as numba_module
from sluice.stages.dedup.minhash import optimal_bands_rows as optimal_bands_rows
from sluice.stages.dedup.minhash import permutations as permutations

FACTS_CACHED = 1 << 15  # rows whose guard facts verification keeps (`guards.RecentFacts`): at 1M rows, all took 1.2 GB


class ArrowTexts:
    """Texts of an Arrow string array as Python strings, one at a time when asked (`texts[i]`); with `rows`, the
    i-th text is the array's `rows[i]`-th (the texts of some rows without gathering them: a gather copies them)."""

    def __init__(self, array: pa.Array, rows: np.ndarray | None = None):
        self.array = array
        self.rows = rows

    def __len__(self) -> int:
        return len(self.array) if self.rows is None else len(self.rows)

    def __getitem__(self, i: int) -> str:
        return self.array[i if self.rows is None else int(self.rows[i])].as_py() or ""


@dataclass
class NearMatches:
    dup: np.ndarray  # positions of rows found to be near duplicates
    canonical: np.ndarray  # the earlier, canonical position each one reuses
    score: np.ndarray  # estimated Jaccard similarity
    vetoed: int = 0  # candidates above the threshold the guards refused
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went, for the speed benchmark
    workers: int = 1  # processes that verified the candidate pairs


def _resolve(texts: Sequence[str], sig: np.ndarray, dup: np.ndarray, can: np.ndarray, est: np.ndarray,
             can_be_canonical: np.ndarray, threshold: float) -> tuple[list[int], list[int], list[float], int]:
    """Greedy, in (dup, canonical) order: a row's canonical is the canonical of its first candidate that is itself
    allowed to be canonical, earlier, still >= threshold against it, and passes the guards."""
    canonical_of: dict[int, int] = {}  # rows already resolved as duplicates
    fact = RecentFacts(texts.__getitem__, FACTS_CACHED)

    out_dup, out_can, out_score, vetoed = [], [], [], 0
    for j, i, est_ji in zip(dup.tolist(), can.tolist(), est.tolist()):
        if j in canonical_of:
            continue  # already matched through an earlier candidate
        c = canonical_of.get(i, i)
        if c >= j or not can_be_canonical[c]:
            continue
        score = est_ji if c == i else float((sig[j] == sig[c]).mean())
        if score < threshold:
            continue
        if veto_reason(fact(j), fact(c)) is not None:
            vetoed += 1
            continue
        canonical_of[j] = c
        out_dup.append(j)
        out_can.append(c)
        out_score.append(score)
    return out_dup, out_can, out_score, vetoed


_FORKED: tuple | None = None  # what a forked verification worker reads (inherited, never pickled)


def _resolve_part(pick: np.ndarray) -> tuple[list[int], list[int], list[float], int]:
    assert _FORKED is not None
    texts, sig, dup, can, est, can_be_canonical, threshold = _FORKED
    return _resolve(texts, sig, dup[pick], can[pick], est[pick], can_be_canonical, threshold)


def _verify_workers(cfg: NearConfig, pairs: int) -> int:
    import multiprocessing

    if pairs < cfg.parallel_min_pairs or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if _compiled_pair_kernels() is None:
        return 1
    return max(1, cfg.workers or len(os.sched_getaffinity(0)))


def verify(texts: Sequence[str], sig: np.ndarray, dup: np.ndarray, can: np.ndarray, est: np.ndarray,
           can_be_canonical: np.ndarray, cfg: NearConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """`_resolve` over all candidate pairs; with several workers, over connected components of the candidate
    graph split between processes. A row's resolution only reads rows joined to it by candidate pairs, so each
    component resolves the same on its own as in the whole: the result is identical to one process's."""
    global _FORKED
    workers = _verify_workers(cfg, len(dup))
    if workers == 1:
        parts = [_resolve(texts, sig, dup, can, est, can_be_canonical, cfg.threshold)]
    else:
        import multiprocessing

        label = _compiled_pair_kernels()[1](len(sig), dup, can)[dup]  # component of each pair
        # components in label order, cut into `workers` runs of about equal pair counts
        order = np.argsort(label, kind="stable")
        sizes = np.bincount(label)
        start_of_label = np.cumsum(sizes) - sizes  # pairs before each component, in label order
        part = np.empty(len(dup), np.int64)
        part[order] = np.minimum(start_of_label[label[order]] * workers // len(dup), workers - 1)
        picks = [np.flatnonzero(part == w) for w in range(workers)]  # each part keeps (dup, can) order
        _FORKED = (texts, sig, dup, can, est, can_be_canonical, cfg.threshold)
        try:
            with multiprocessing.get_context("fork").Pool(workers - 1) as pool:
                others = pool.map_async(_resolve_part, picks[1:], chunksize=1)
                parts = [_resolve_part(picks[0]), *others.get()]
        finally:
            _FORKED = None
    out_dup = np.array([j for p in parts for j in p[0]], np.int64)
    out_can = np.array([c for p in parts for c in p[1]], np.int64)
    out_score = np.array([s for p in parts for s in p[2]], np.float64)
    order = np.argsort(out_dup, kind="stable")
    return out_dup[order], out_can[order], out_score[order], sum(p[3] for p in parts), workers


Mapper = Callable[[Callable[[Any], Any], Sequence[Any]], list]


def run_locally(fn: Callable[[Any], Any], items: Sequence[Any]) -> list:
    """The default mapper: each item in turn, in this process."""
    return [fn(x) for x in items]


@dataclass(frozen=True)
class NearPartition:
    """Rows lo..lo+len(texts)-1 of a batch: their prompts, request fingerprints and where their signatures go."""

    lo: int
    texts: pl.Series
    block: np.ndarray
    spill: Path
    cfg: NearConfig

    def __reduce__(self):
        """Sent to another process (a Dask worker), a partition goes as the path of its prompts, written beside its
        signatures (the spill folder the workers share): sent by value, 16 partitions of 35 MB of prompts at 1M
        rows went through the Dask scheduler, which grew to 18 GB and was killed (issue 19)."""
        path = self.spill / f"texts_{self.lo}.arrow"
        if not path.exists():
            part = path.with_suffix(".part")
            self.texts.to_frame().write_ipc(part)
            part.rename(path)
        return _partition_from_file, (self.lo, path, self.block, self.spill, self.cfg)


def _partition_from_file(lo: int, path: Path, block: np.ndarray, spill: Path, cfg: NearConfig) -> NearPartition:
    return NearPartition(lo, pl.read_ipc(path).to_series(0), block, spill, cfg)


@dataclass
class SignedPartition:
    lo: int
    keys: np.ndarray  # (bands, rows) uint64: the LSH bucket key of each band (request fingerprint included)
    has_shingles: np.ndarray  # rows with at least one shingle (the others are never candidates)
    signatures: Path  # (rows, num_perm) uint32, as .npy
    seconds: dict[str, float]


def sign_partition(part: NearPartition) -> SignedPartition:
    """Shingles, signatures (spilled to disk) and LSH band keys of one partition."""
    t0 = time.perf_counter()
    hashes, offsets = shingle_hashes(part.texts, part.cfg)
    t1 = time.perf_counter()
    sig = signatures(hashes, offsets, part.cfg)
    del hashes
    bands, rows = part.cfg.lsh_params()
    block64 = np.asarray(part.block).astype(np.int64).view(np.uint64)
    keys = np.stack([_band_keys(block64, sig[:, b * rows:(b + 1) * rows]) for b in range(bands)]) if len(sig) \
        else np.empty((bands, 0), np.uint64)
    path = part.spill / f"signatures_{part.lo}.npy"
    np.save(path, sig)
    return SignedPartition(part.lo, keys, np.diff(offsets) > 0, path,
                           {"shingles": t1 - t0, "signatures": time.perf_counter() - t1})


def _read_signatures(parts: list[SignedPartition], rows: np.ndarray, num_perm: int) -> np.ndarray:
    """The signatures of `rows` (sorted positions), read back one partition's file at a time."""
    out = np.empty((len(rows), num_perm), np.uint32)
    for p in parts:
        hi = p.lo + len(p.has_shingles)
        at = np.searchsorted(rows, [p.lo, hi])
        if at[1] > at[0]:
            out[at[0]:at[1]] = np.load(p.signatures, mmap_mode="r")[rows[at[0]:at[1]] - p.lo]
    return out


def near_duplicate_pairs(
    texts: Sequence[str] | pl.Series,
    block: np.ndarray,
    can_be_duplicate: np.ndarray,
    can_be_canonical: np.ndarray,
    cfg: NearConfig = NearConfig(),
    mapper: Mapper = run_locally,
) -> NearMatches:
    """Greedy, in position order: each row that may be a duplicate points at an earlier canonical row whose
    signature shares an LSH band, within the same block (request fingerprint), J >= threshold, guards silent.
    `mapper` applies `sign_partition` to the partitions (module docstring)."""
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        clock.append(time.perf_counter())
        seconds[name] = round(clock[-1] - clock[-2], 3)

    series = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
    n, block = len(series), np.asarray(block)
    if n == 0:
        return NearMatches(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), 0, seconds)
    can_be_duplicate = np.asarray(can_be_duplicate, bool)
    can_be_canonical = np.asarray(can_be_canonical, bool)
    step = cfg.partition_rows
    with tempfile.TemporaryDirectory(prefix="sluice-near-", dir=cfg.spill_dir) as spill:
        parts = mapper(sign_partition, [NearPartition(lo, series.slice(lo, step), block[lo:lo + step], Path(spill),
                                                      cfg) for lo in range(0, n, step)])
        for name in ("shingles", "signatures"):
            seconds[name] = round(sum(p.seconds[name] for p in parts), 3)
        clock.append(time.perf_counter())
        has_shingles = np.concatenate([p.has_shingles for p in parts]) if parts else np.zeros(0, bool)
        live = np.flatnonzero(has_shingles & (can_be_duplicate | can_be_canonical))
        bands = cfg.lsh_params()[0]
        dup, can = pairs_from_band_keys(lambda b: np.concatenate([p.keys[b] for p in parts])[live],
                                        live, can_be_duplicate, n, bands)
        lap("lsh")
        # from here on only the rows of candidate pairs, renumbered 0..k-1 in position order (order is kept, so
        # the greedy resolution is the same as over all rows)
        rows = np.unique(np.concatenate([dup, can]))
        sig = _read_signatures(parts, rows, cfg.num_perm)
        parts = []  # the band keys (bands x rows uint64: 112 MB at 1M) are not needed by the verification
    dup, can = np.searchsorted(rows, dup), np.searchsorted(rows, can)
    est = agreement(sig, dup, can)
    keep = est >= cfg.threshold
    dup, can, est = dup[keep], can[keep], est[keep]
    # the prompts as an Arrow string_view array share polars' buffers (no copy; a gather of the candidate rows
    # and its conversion to large_string copied their texts twice, about 500 MB at 1M rows)
    texts_of_rows = ArrowTexts(series.to_arrow(compat_level=pl.CompatLevel.newest()), rows)
    out_dup, out_can, out_score, vetoed, workers = verify(texts_of_rows, sig, dup, can, est,
                                                          can_be_canonical[rows], cfg)
    lap("verify_and_guards")
    return NearMatches(rows[out_dup], rows[out_can], out_score, vetoed, seconds, workers)
