"""The partitioned near stage (issue 19) finds exactly what the whole-batch computation finds."""

import random

import numpy as np
import polars as pl
import pytest

from sluice.stages.dedup.minhash import agreement, candidate_pairs, shingle_hashes, signatures
from sluice.stages.dedup.near import NearConfig, near_duplicate_pairs, run_locally, sign_partition, verify


def _whole_batch(texts, block, can_be_duplicate, can_be_canonical, cfg):
    """The near stage as it was before partitions: every signature in memory, every text a Python string."""
    texts = ["" if t is None else t for t in texts]
    hashes, offsets = shingle_hashes(texts, cfg)
    sig = signatures(hashes, offsets, cfg)
    live = np.flatnonzero((np.diff(offsets) > 0) & (can_be_duplicate | can_be_canonical))
    dup, can = candidate_pairs(sig, block, live, can_be_duplicate, *cfg.lsh_params())
    est = agreement(sig, dup, can)
    keep = est >= cfg.threshold
    out = verify(texts, sig, dup[keep], can[keep], est[keep], can_be_canonical, cfg)
    return out[0], out[1], out[2], out[3]


def _planted(n_base=700, seed=5):
    """Random prompts, planted exact copies, near copies (filler words the guards allow), chains of them, a
    changed number (the guards veto it), short prompts (character shingles), empty and null prompts."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(2000)]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 30))) for _ in range(n_base)]
    for _ in range(300):
        t = rng.choice(texts)
        kind = rng.randrange(5)
        if kind == 0:
            texts.append(t)
        elif kind < 3:
            texts.append(t + " " + rng.choice(["please", "thanks", "kindly"]))
        elif kind == 3:
            texts.append(t.replace(t.split()[0], t.split()[0] + "s", 1))
        else:
            texts.append(t + " 42")
    texts += ["", None, "a", "How do I bake bread?", "how do i bake bread", "How do I bake 3 breads?"]
    rng.shuffle(texts)
    return texts


@pytest.mark.parametrize("partition_rows", [1, 37, 256, 1 << 16])
@pytest.mark.parametrize("workers", [1, 2])
def test_partitions_find_exactly_what_the_whole_batch_finds(partition_rows, workers, tmp_path):
    texts = _planted()
    n = len(texts)
    rng = np.random.default_rng(1)
    block = rng.integers(0, 3, n)  # three request fingerprints: pairs across them are never candidates
    can_be_duplicate = rng.random(n) < 0.9
    can_be_canonical = rng.random(n) < 0.8
    cfg = NearConfig(threshold=0.6, workers=workers, parallel_min_pairs=0, partition_rows=partition_rows,
                     spill_dir=str(tmp_path))
    ref_dup, ref_can, ref_score, ref_vetoed = _whole_batch(texts, block, can_be_duplicate, can_be_canonical, cfg)
    found = near_duplicate_pairs(pl.Series(texts, dtype=pl.String), block, can_be_duplicate, can_be_canonical, cfg)
    assert len(ref_dup) > 50 and ref_vetoed > 0  # the fixture exercises matches and vetoes
    assert found.dup.tolist() == ref_dup.tolist()
    assert found.canonical.tolist() == ref_can.tolist()
    assert found.score.tolist() == ref_score.tolist()
    assert found.vetoed == ref_vetoed
    assert list(tmp_path.iterdir()) == []  # the spilled signatures are removed


def test_a_custom_mapper_sees_every_partition_once_and_gives_the_same_result():
    texts = _planted(300, seed=8)
    n = len(texts)
    seen = []

    def mapper(fn, items):  # what a distributed runner does: apply fn to each item, results in order
        seen.extend(p.lo for p in items)
        return list(reversed([fn(p) for p in reversed(items)]))

    args = (texts, np.zeros(n, np.int64), np.ones(n, bool), np.ones(n, bool))
    cfg = NearConfig(threshold=0.6, partition_rows=100)
    local = near_duplicate_pairs(*args, cfg, mapper=run_locally)
    custom = near_duplicate_pairs(*args, cfg, mapper=mapper)
    assert seen == list(range(0, n, 100))
    assert np.array_equal(local.dup, custom.dup) and np.array_equal(local.canonical, custom.canonical)
    assert len(local.dup) > 20


def test_sign_partition_keeps_band_keys_and_spills_the_signatures(tmp_path):
    from sluice.stages.dedup.near import NearPartition

    cfg = NearConfig()
    texts = pl.Series(["how can I lose weight fast", "how can I lose weight fast", "", "something else entirely"])
    part = sign_partition(NearPartition(0, texts, np.array([1, 1, 1, 2]), tmp_path, cfg))
    bands = cfg.lsh_params()[0]
    assert part.keys.shape == (bands, 4) and part.keys.dtype == np.uint64
    assert (part.keys[:, 0] == part.keys[:, 1]).all() and (part.keys[:, 0] != part.keys[:, 3]).all()
    assert part.has_shingles.tolist() == [True, True, False, True]
    sig = np.load(part.signatures)
    assert sig.shape == (4, cfg.num_perm) and (sig[2] == np.iinfo(np.uint32).max).all()
    hashes, off = shingle_hashes(texts, cfg)
    assert np.array_equal(sig, signatures(hashes, off, cfg))


def test_a_small_guard_facts_cache_changes_nothing(monkeypatch):
    import sluice.stages.dedup.near as near

    texts = _planted(400, seed=3)
    n = len(texts)
    args = (texts, np.zeros(n, np.int64), np.ones(n, bool), np.ones(n, bool), NearConfig(threshold=0.6))
    full = near_duplicate_pairs(*args)
    monkeypatch.setattr(near, "FACTS_CACHED", 2)  # rows' facts are evicted and recomputed all the time
    small = near_duplicate_pairs(*args)
    assert len(full.dup) > 30 and full.vetoed > 0
    assert full.dup.tolist() == small.dup.tolist() and full.canonical.tolist() == small.canonical.tolist()
    assert full.vetoed == small.vetoed
