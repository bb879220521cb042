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
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from sluice.stages.dedup.guards import TextFacts, text_facts, veto_reason
from sluice.stages.dedup.minhash import PARALLEL_LAUNCH as PARALLEL_LAUNCH

# moved to sluice.stages.dedup.minhash; re-exported so `from sluice.stages.dedup.near import ...` keeps working
from sluice.stages.dedup.minhash import NearConfig as NearConfig
from sluice.stages.dedup.minhash import _compiled_pair_kernels, agreement, candidate_pairs, shingle_hashes, signatures
from sluice.stages.dedup.minhash import nfkc as nfkc
from sluice.stages.dedup.minhash import normalised_words as normalised_words
from sluice.stages.dedup.minhash import numba_module as numba_module
from sluice.stages.dedup.minhash import optimal_bands_rows as optimal_bands_rows
from sluice.stages.dedup.minhash import permutations as permutations


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
    facts: dict[int, TextFacts] = {}

    def fact(i: int) -> TextFacts:
        if i not in facts:
            facts[i] = text_facts(texts[i])
        return facts[i]

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


def near_duplicate_pairs(
    texts: Sequence[str],
    block: np.ndarray,
    can_be_duplicate: np.ndarray,
    can_be_canonical: np.ndarray,
    cfg: NearConfig = NearConfig(),
) -> NearMatches:
    """Greedy, in position order: each row that may be a duplicate points at an earlier canonical row whose
    signature shares an LSH band, within the same block (request fingerprint), J >= threshold, guards silent."""
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        clock.append(time.perf_counter())
        seconds[name] = round(clock[-1] - clock[-2], 3)

    can_be_duplicate = np.asarray(can_be_duplicate, bool)
    can_be_canonical = np.asarray(can_be_canonical, bool)
    hashes, offsets = shingle_hashes(texts, cfg)
    lap("shingles")
    sig = signatures(hashes, offsets, cfg)
    del hashes
    lap("signatures")
    live = np.flatnonzero((np.diff(offsets) > 0) & (can_be_duplicate | can_be_canonical))
    dup, can = candidate_pairs(sig, block, live, can_be_duplicate, *cfg.lsh_params())
    lap("lsh")
    est = agreement(sig, dup, can)
    keep = est >= cfg.threshold
    dup, can, est = dup[keep], can[keep], est[keep]
    out_dup, out_can, out_score, vetoed, workers = verify(texts, sig, dup, can, est, can_be_canonical, cfg)
    lap("verify_and_guards")
    return NearMatches(out_dup, out_can, out_score, vetoed, seconds, workers)
