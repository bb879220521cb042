import random

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from sluice.near import NearConfig, near_duplicate_pairs, shingle_hashes, signatures

TEXTS = ["How can I lose weight fast?", "how can I lose weight quickly", "a", "",
         "Summarise the following meeting notes in three bullet points: the team agreed to ship on Friday."]


@pytest.mark.parametrize("compiled", [True, False])  # the numba kernel and the numpy fallback
def test_signatures_are_bit_for_bit_datasketch_minhash_of_the_same_shingles(compiled):
    cfg = NearConfig(num_perm=64, seed=7, chunk_cells=64 * 3)  # tiny chunks: rows spill across chunk borders
    hashes, off = shingle_hashes(TEXTS, cfg)
    sig = signatures(hashes, off, cfg, compiled=compiled)
    for i in range(len(TEXTS)):
        m = MinHash(num_perm=64, seed=7, hashfunc=lambda h: h)
        m.update_batch(hashes[off[i]:off[i + 1]].tolist())
        assert np.array_equal(m.hashvalues, sig[i])


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.85])
def test_bands_and_rows_are_datasketch_lsh_choice(threshold):
    lsh = MinHashLSH(threshold=threshold, num_perm=128)
    assert NearConfig(threshold=threshold).lsh_params() == (lsh.b, lsh.r)


def _corpus(n, seed=0):
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))) for _ in range(n)]


def test_a_planted_near_duplicate_is_found_among_thousands_and_nothing_else():
    texts = _corpus(3000)
    original = texts[1234].split()
    texts.append(" ".join(original[:-1] + ["extra", "words"]))  # one word changed, one added at the end
    n = len(texts)
    found = near_duplicate_pairs(texts, np.zeros(n, np.int64), np.ones(n, bool), np.ones(n, bool),
                                 NearConfig(threshold=0.6))
    assert found.dup.tolist() == [n - 1] and found.canonical.tolist() == [1234]
    assert 0.6 <= found.score[0] <= 1.0


def test_candidates_agree_with_datasketch_lsh_query():
    texts = _corpus(400, seed=3)
    texts += [t + " please" for t in texts[:40]]  # a filler word: the guards let it through
    cfg = NearConfig(threshold=0.7)
    hashes, off = shingle_hashes(texts, cfg)
    sig = signatures(hashes, off, cfg)
    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    for i in range(400):
        lsh.insert(i, MinHash(num_perm=128, hashvalues=sig[i], scheme="affine32"))
    n = len(texts)
    found = near_duplicate_pairs(texts, np.zeros(n, np.int64), np.r_[np.zeros(400, bool), np.ones(40, bool)],
                                 np.r_[np.ones(400, bool), np.zeros(40, bool)], cfg)
    expected = {}
    for j in range(400, n):
        hits = [i for i in lsh.query(MinHash(num_perm=128, hashvalues=sig[j], scheme="affine32"))
                if (sig[i] == sig[j]).mean() >= 0.7]
        if hits:
            expected[j] = min(hits)
    assert dict(zip(found.dup.tolist(), found.canonical.tolist())) == expected
    assert len(expected) >= 35


def test_rows_in_different_blocks_never_match():
    texts = ["Translate this sentence into French please", "Translate this sentence into French please!"]
    found = near_duplicate_pairs(texts, np.array([1, 2]), np.ones(2, bool), np.ones(2, bool))
    assert found.dup.size == 0
