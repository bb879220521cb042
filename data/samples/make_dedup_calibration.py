"""Build data/samples/dedup_calibration.csv.gz, the labelled pairs the semantic stage's rule is chosen on
(`sluice.stages.dedup.calibrate`), from ../shared/data/pairs (see DEDUP_CALIBRATION.md beside it).

Only numbers are written, never a text: per pair, its set, its source id, the longer prompt's word count, MiniLM
cosine (empty where the semantic stage would not score the pair), whether the exact stage or the near stage on word
shingles merges it anyway, whether the near stage with character shingles for short prompts does (guards
included), whether a guard vetoes it, every guard's verdict (`guards`, 0/1 in guards.GUARDS order) and the pair
score's text measures (`sluice.stages.dedup.pair_score.TEXT_FEATURES`: word / character 3-gram / content-word
overlap, length ratio, question words; numbers computed from the texts, the texts not kept), and its label. The sets are disjoint from the parts
bench/dedup_quality.py reports on (QQP's report part, MRPC test, STS-B dev, swaps and edits of those):

    qqp_tune     QQP dev pairs with id % 5 in {0, 1}
    mrpc_train   MRPC train (paraphrase = 1)
    stsb_train   STS-B train (score >= 4.0 = 1)
    swaps        PAWS-style swaps of QQP tuning questions and MRPC train sentences (all 0)
    edits        a number changed or "not" inserted into a QQP tuning question (all 0)

The features depend on the near stage's shingles, the guards and the embedding model: rebuild the file when any
of them changes (a test holds the settings recorded in the file against the defaults).

    .venv/bin/python data/samples/make_dedup_calibration.py
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from dedup_quality import PAIRS, PairScorer, _tsv, edit_pair, qqp, swap_pair  # noqa: E402

from sluice.stages.dedup.near import NearConfig  # noqa: E402
from sluice.stages.dedup.pair_score import TEXT_FEATURES, guard_bits, text_features  # noqa: E402
from sluice.stages.dedup.semantic import SemanticConfig  # noqa: E402

OUT = ROOT / "data" / "samples" / "dedup_calibration.csv.gz"
SWAP_SOURCES, EDIT_SOURCES = 3000, 3000


def settings_record(near: NearConfig, semantic: SemanticConfig) -> dict:
    return {"near_threshold": near.threshold, "shingle_words": near.shingle_words,
            "char_max_words": near.char_max_words, "char_shingle": near.char_shingle,
            "semantic_max_words": semantic.max_words, "candidate_threshold": semantic.candidate_threshold,
            "embedding": "all-MiniLM-L6-v2, mean pooling, max_length 128"}


def calibration_sets() -> dict[str, list[tuple[str, str, str, int]]]:
    """set -> [(source id, text a, text b, label)], deterministic: the pairs the file is written from, in its row
    order (bench/dedup_quality_features.py reads them again for features the file does not carry)."""
    rng = random.Random(0)
    tune_rows = [r for r in _tsv(PAIRS / "qqp_dev.tsv") if len(r) >= 6 and r[3] and r[4] and int(r[0]) % 5 in (0, 1)]
    assert len(tune_rows) == len(qqp()[0])
    sets: dict[str, list[tuple[str, str, str, int]]] = {
        "qqp_tune": [(r[0], r[3], r[4], int(r[5])) for r in tune_rows],
        "mrpc_train": [(str(i), r[3], r[4], int(r[0])) for i, r in
                       enumerate(_tsv(PAIRS / "mrpc" / "msr_paraphrase_train.txt")[1:]) if len(r) >= 5],
        "stsb_train": [(str(i), r[5], r[6], int(float(r[4]) >= 4.0)) for i, r in
                       enumerate(_tsv(PAIRS / "stsb" / "sts-train.tsv")) if len(r) >= 7],
    }
    sources = [(p[0], p[1]) for p in sets["qqp_tune"][:SWAP_SOURCES]] + \
              [("mrpc" + p[0], p[1]) for p in sets["mrpc_train"][:1000]]
    sets["swaps"] = [(i, a, s, 0) for i, a in sources if (s := swap_pair(a, rng)) and s != a]
    sets["edits"] = [(i, a, e, 0) for i, a in [(p[0], p[1]) for p in sets["qqp_tune"][:EDIT_SOURCES]]
                     if (e := edit_pair(a, rng)) and e != a]
    return sets


def main() -> None:
    sets = calibration_sets()
    texts = list(dict.fromkeys(t for pairs in sets.values() for p in pairs for t in p[1:3]))
    near, semantic = NearConfig(), SemanticConfig()
    scorer = PairScorer(texts, near, semantic)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(OUT, "wt", newline="") as f:
        f.write("# " + json.dumps(settings_record(near, semantic)) + "\n")
        w = csv.writer(f)
        w.writerow(["set", "pair", "words", "cosine", "other_hit", "near_chars", "vetoed", "label", "guards",
                    *TEXT_FEATURES])
        for name, pairs in sets.items():
            a, b, y = scorer.arrays([(p[1], p[2], p[3]) for p in pairs])
            feats = scorer.features(a, b)
            for k, p in enumerate(pairs):
                cos = feats["cosine"][k]
                extra = ["", *[""] * len(TEXT_FEATURES)]
                if not np.isnan(cos):  # only pairs the semantic stage scores need the pair score's features
                    i, j = int(a[k]), int(b[k])
                    extra = [guard_bits(scorer.facts(j), scorer.facts(i)),
                             *(f"{v:.4g}" for v in text_features(p[1], p[2]))]
                w.writerow([name, p[0], int(feats["words"][k]), "" if np.isnan(cos) else f"{cos:.4f}",
                            int(feats["other_hit"][k]), int(feats["near_chars"][k]), int(feats["vetoed"][k]),
                            int(y[k]), *extra])
            print(f"{name}: {len(pairs)} pairs, {int(y.sum())} labelled the same request")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
