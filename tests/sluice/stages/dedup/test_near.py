import os
import random

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from sluice.stages.dedup.minhash import shingle_hashes, signatures
from sluice.stages.dedup.near import NearConfig, near_duplicate_pairs

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


@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_permutations_and_bands_rows_match_datasketch_without_importing_it(num_perm):
    from datasketch.lsh import _optimal_param

    from sluice.stages.dedup.minhash import optimal_bands_rows, permutations

    for seed in (1, 7):
        a, b = MinHash(num_perm=num_perm, seed=seed).permutations
        ours = permutations(num_perm, seed)
        assert np.array_equal(a, ours[0]) and np.array_equal(b, ours[1])
    for threshold in np.round(np.arange(0.05, 1.0, 0.05), 2):
        assert optimal_bands_rows(float(threshold), num_perm) == _optimal_param(float(threshold), num_perm, 0.5, 0.5)


def test_shingles_are_the_same_whatever_the_chunking_and_with_or_without_numba():
    texts = _corpus(300, seed=5) + ["Ｆｕｌｌ－ｗｉｄｔｈ ﬁle Café", "", "one", "snake_case words", None]
    ref_h, ref_off = shingle_hashes(texts, NearConfig(chunk_rows=10_000), compiled=False)
    for chunk_rows in (1, 7, 10_000):
        h, off = shingle_hashes(texts, NearConfig(chunk_rows=chunk_rows))
        assert np.array_equal(h, ref_h) and np.array_equal(off, ref_off)
    assert np.diff(ref_off)[-4] == np.diff(ref_off)[-1] == 0  # the empty text and None have no shingles


def test_parallel_verification_finds_what_one_process_finds():
    rng = random.Random(11)
    texts = _corpus(600, seed=9)
    for _ in range(400):  # near duplicates of near duplicates (filler words the guards allow): chains and stars
        texts.append(rng.choice(texts) + " " + rng.choice(["please", "thanks", "kindly", "ok"]))
    n = len(texts)
    args = (texts, np.zeros(n, np.int64), np.ones(n, bool), np.r_[np.ones(800, bool), np.zeros(n - 800, bool)])
    one = near_duplicate_pairs(*args, NearConfig(threshold=0.6, workers=1))
    two = near_duplicate_pairs(*args, NearConfig(threshold=0.6, workers=2, parallel_min_pairs=0))
    assert two.workers == 2 and one.workers == 1
    assert len(one.dup) > 150
    assert np.array_equal(one.dup, two.dup) and np.array_equal(one.canonical, two.canonical)
    assert np.array_equal(one.score, two.score) and one.vetoed == two.vetoed


def test_agreement_is_the_fraction_of_equal_signature_positions():
    from sluice.stages.dedup.minhash import agreement

    cfg = NearConfig()
    sig = signatures(*shingle_hashes(_corpus(50, seed=2), cfg), cfg)
    a, b = np.arange(50).repeat(50), np.tile(np.arange(50), 50)
    assert np.array_equal(agreement(sig, a, b), (sig[a] == sig[b]).mean(axis=1))


def test_parallel_kernels_use_the_workqueue_layer_and_survive_concurrent_threads():
    """numba's OpenMP layer slows torch ~20x once a kernel has run beside it; the workqueue layer that replaces it
    aborts the process on concurrent launches unless they hold PARALLEL_LAUNCH. A child process, so an abort
    fails this test instead of killing the run."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import threading
        import numpy as np
        import numba
        from sluice.stages.dedup import semantic
        from sluice.stages.dedup.minhash import shingle_hashes, signatures
        from sluice.stages.dedup.near import NearConfig
        texts = [f"text number {i} about things {i % 7}" for i in range(5000)]
        def work():
            for _ in range(5):
                signatures(*shingle_hashes(texts, NearConfig()), NearConfig())
                semantic._best_per_row(np.random.rand(200, 2000).astype(np.float32), np.full(200, 2000), 0.9, 4)
        threads = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("layer", numba.threading_layer())
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("layer workqueue")


TYPO_PAIRS = [
    ("How do I learn Python quickly?", "How do I learn Pyhton quickly?"),
    ("Is it safe to use Xiaomi mobile phones?", "Is it safe to use Xiaomi mobile phoens?"),
    ("How can I improve my English speaking skills?", "How can I improve my Englsih speaking skills?"),
    ("What do Laxmi, Saraswati, and Ganesha symbolize?", "What do Laxmi, Sarasawti, and Ganesha symbolize?"),
    ("How do I get rid of dandruff permanently?", "How do I get rid of dandruf permanently?"),
]


def _near_marks(texts, cfg):
    n = len(texts)
    found = near_duplicate_pairs(texts, np.zeros(n, np.int64), np.ones(n, bool), np.ones(n, bool), cfg)
    return dict(zip(found.dup.tolist(), found.canonical.tolist()))


def test_typo_variants_of_short_prompts_are_caught_by_the_near_stage():
    texts = [t for pair in TYPO_PAIRS for t in pair]
    marks = _near_marks(texts, NearConfig())
    assert marks == {2 * i + 1: 2 * i for i in range(len(TYPO_PAIRS))}
    # on word bigrams alone (before character shingles for short prompts), one typo hides most of them
    assert len(_near_marks(texts, NearConfig(char_max_words=0))) <= 1


def test_character_shingles_do_not_merge_short_prompts_that_differ_in_a_word():
    texts = ["What is the capital of France?", "What is the capital of Spain?",
             "How do I learn Python quickly?", "How do I learn Python slowly?",
             "Best laptop for gaming", "Best laptop for programming",
             "How many people live in Tokyo?", "How many people live in Tokio?"]  # a name changed by a letter
    assert _near_marks(texts, NearConfig()) == {}
