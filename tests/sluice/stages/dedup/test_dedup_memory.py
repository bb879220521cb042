"""The bounded-memory dedup stage (issue 19) marks exactly what the stage marked before it.

dedup_before_issue19.json holds the marks of the code before the change (commit 75e8188) on the fixture below,
recorded by running this module's `record()` under that commit's tree:

    git archive 75e8188 | tar -x -C /tmp/old && PYTHONPATH=/tmp/old .venv/bin/python \
        tests/sluice/stages/dedup/test_dedup_memory.py
"""

import json
import random
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

EXPECTED = Path(__file__).with_name("dedup_before_issue19.json")


def fixture_rows() -> pa.Table:
    """Random prompts with planted exact copies (case, spacing), near copies (filler words), edits the guards veto
    (a changed number), paraphrase-like reorderings, short prompts, blanks, nulls, sampled rows, three system
    prompts and several max_tokens."""
    from sluice.stages.ingest.read import validate_prompts

    rng = random.Random(19)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8))) for _ in range(400)]

    def shape():
        return rng.choice([None, None, "Be brief.", "You are a pirate."]), rng.choice([None, None, 64, 512])

    base = [(" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))), *shape()) for _ in range(600)]
    rows = list(base)
    for _ in range(500):
        t, system, max_tokens = rng.choice(base)
        if rng.random() < 0.15:  # the same prompt under another request fingerprint: never a duplicate
            system, max_tokens = shape()
        kind = rng.randrange(6)
        if kind == 0:
            t = t.upper() if rng.random() < 0.5 else "  " + t.replace(" ", "   ")
        elif kind < 3:
            t = t + " " + rng.choice(["please", "thanks", "kindly"])
        elif kind == 3:
            t = t + " " + str(rng.randrange(100))
        elif kind == 4:
            w = t.split()
            rng.shuffle(w)
            t = " ".join(w)
        rows.append((t, system, max_tokens))
    rows += [(p, None, None) for p in ["", "   ", None, "a", "How many legs does a spider have?",
                                       "How many legs do spiders have?"]]
    rng.shuffle(rows)
    prompts, systems, max_tokens = (list(c) for c in zip(*rows))
    n = len(prompts)
    return validate_prompts(pa.table({
        "prompt": pa.array(prompts, pa.string()),
        "system": pa.array(systems, pa.string()),
        "max_tokens": pa.array(max_tokens, pa.int32()),
        "temperature": pa.array([0.7 if rng.random() < 0.05 else None for _ in range(n)], pa.float64()),
    }))


def bag_of_words(dim: int):
    """A deterministic stand-in embedder: hashed lower-cased words, L2-normalised."""

    def embed(texts):
        out = np.zeros((len(texts), dim), np.float32)
        for row, t in enumerate(texts):
            for w in (t or "").lower().split():
                out[row, zlib.crc32(w.encode()) % dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=out, where=norms > 0)

    return embed


def marks(table: pa.Table) -> list:
    df = pl.from_arrow(table).sort("row_index")
    return [list(r) for r in df.select("row_id", "status", "dup_of", "dup_kind", "dup_score").iter_rows()]


def semantic_marks(texts, block, **cfg) -> list:
    from sluice.stages.dedup.semantic import SemanticConfig, semantic_duplicate_pairs

    n = len(texts)
    found = semantic_duplicate_pairs(texts, block, np.ones(n, bool), np.ones(n, bool),
                                     SemanticConfig(threshold=0.8, candidate_threshold=0.6, **cfg),
                                     embedder=bag_of_words(64), candidate_embedder=bag_of_words(32))
    return [found.dup.tolist(), found.canonical.tolist(), [round(s, 6) for s in found.score.tolist()], found.vetoed]


def _semantic_inputs():
    table = pl.from_arrow(fixture_rows())
    texts = table["prompt"].fill_null("").to_list()
    block = table["max_tokens"].fill_null(0).to_numpy().astype(np.int64)
    return texts, block


def record() -> dict:
    from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate

    texts, block = _semantic_inputs()
    return {"exact_near": marks(deduplicate(fixture_rows(), DedupConfig(stages=("exact", "near")))),
            "semantic": semantic_marks(texts, block)}


def test_exact_and_near_marks_are_the_ones_recorded_before_the_change():
    from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate
    from sluice.stages.dedup.near import NearConfig

    expected = json.loads(EXPECTED.read_text())["exact_near"]
    kinds = [m[3] for m in expected]
    assert kinds.count("exact") > 50 and kinds.count("near") > 50  # the fixture exercises both stages
    for near in (NearConfig(), NearConfig(partition_rows=97, workers=2, parallel_min_pairs=0)):
        got = marks(deduplicate(fixture_rows(), DedupConfig(stages=("exact", "near"), near=near)))
        assert got == expected


def test_semantic_pairs_are_the_ones_recorded_before_the_change_at_any_block_size():
    expected = json.loads(EXPECTED.read_text())["semantic"]
    assert len(expected[0]) > 20 and expected[3] > 0  # matches and guard vetoes
    texts, block = _semantic_inputs()
    assert semantic_marks(texts, block) == expected
    assert semantic_marks(pl.Series(texts), block, embed_rows=37) == expected


def test_asking_for_some_columns_gives_those_columns_of_the_whole_output():
    """`sluice dedup` asks for the marks alone (the prompts are not converted back to Arrow)."""
    from sluice.contracts.columns import DUP_COLUMNS
    from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate

    keep = ["row_index", "row_id", *DUP_COLUMNS]
    for stages in (("exact",), ("exact", "near")):
        whole = deduplicate(fixture_rows(), DedupConfig(stages=stages))
        assert deduplicate(fixture_rows(), DedupConfig(stages=stages), columns=keep).equals(whole.select(keep))


def test_the_semantic_stage_over_short_prompts_alone_finds_the_same_pairs():
    """`short_prompts` nulls the prompts the stage never compares (a caller may then let them go)."""
    from sluice.stages.dedup.semantic import SemanticConfig, semantic_duplicate_pairs, short_prompts

    expected = json.loads(EXPECTED.read_text())["semantic"]
    texts, block = _semantic_inputs()
    cfg = SemanticConfig(threshold=0.8, candidate_threshold=0.6, max_words=12)
    short, n_words = short_prompts(pl.Series(texts), cfg)
    assert short.null_count() > 100 and n_words.max() > 12
    assert all(t is None or len(t.split()) <= 12 for t in short.to_list())
    n = len(texts)
    whole = semantic_duplicate_pairs(texts, block, np.ones(n, bool), np.ones(n, bool), cfg,
                                     embedder=bag_of_words(64), candidate_embedder=bag_of_words(32))
    alone = semantic_duplicate_pairs(short, block, np.ones(n, bool), np.ones(n, bool), cfg, embedder=bag_of_words(64),
                                     candidate_embedder=bag_of_words(32), n_words=n_words)
    assert len(whole.dup) > 10 and len(whole.dup) < len(expected[0])  # max_words cut some recorded pairs
    assert (alone.dup.tolist(), alone.canonical.tolist(), alone.score.tolist(), alone.vetoed) == (
        whole.dup.tolist(), whole.canonical.tolist(), whole.score.tolist(), whole.vetoed)


def test_reading_the_rows_inside_and_leaving_the_prompts_out_marks_the_same():
    """`sluice dedup` hands a reader and asks for the marks alone: the stage drops the long prompts after near."""
    from sluice.contracts.columns import DUP_COLUMNS
    from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate
    from sluice.stages.dedup.semantic import SemanticConfig

    keep = ["row_index", "row_id", *DUP_COLUMNS]
    cfg = DedupConfig(semantic=SemanticConfig(threshold=0.8, candidate_threshold=None, max_words=12))
    whole = deduplicate(fixture_rows(), cfg, embedder=bag_of_words(64))
    kinds = whole.column("dup_kind").to_pylist()
    assert kinds.count("semantic") > 5 and kinds.count("near") > 50
    assert deduplicate(fixture_rows, cfg, embedder=bag_of_words(64), columns=keep).equals(whole.select(keep))


if __name__ == "__main__":
    EXPECTED.write_text(json.dumps(record()) + "\n")
    print(f"wrote {EXPECTED}")
