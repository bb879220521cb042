"""The kNN router: its neighbours decide the score, it round-trips through its folder, and its k and weighting are
chosen by cross-validation. Embeddings are synthetic unit vectors passed in (no MiniLM needed)."""

import json

import numpy as np
import polars as pl
import pytest

from sluice.stages.route.features import TEXT_FEATURES, router_features
from sluice.stages.route.knn import K_GRID, TEXT_WEIGHTS, WEIGHTINGS, KnnRouter, train_knn
from sluice.stages.route.learned import RouterError, load_router
from sluice.stages.route.scorers import scorer_for


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_the_nearest_labelled_prompts_decide_the_score():
    # three training prompts on three orthogonal axes; a query on an axis has that prompt as nearest neighbour
    emb = np.eye(3, 384)
    labels = pl.DataFrame({"prompt": ["a", "b", "c"], "cheap_ok": [False, True, True],
                           "premium_ok": [True, True, False]})  # gains +1, 0, -1
    router = train_knn(pl.concat([labels] * 4), embeddings=np.vstack([emb] * 4), k=4, weighting="uniform",
                       text_weight=0.0)
    x = router_features(["q"] * 3, True, emb)
    # the 4 copies of the query's own prompt are its 4 neighbours; one pseudo-neighbour at the mean gain (0)
    np.testing.assert_allclose(router.expected_gain(x), [4 / 5, 0.0, -4 / 5], atol=1e-6)
    np.testing.assert_allclose(router.score_features(x), [0.8, 0.0, 0.0], atol=1e-6)  # clipped to [0, 1]
    # halfway between a and b, k = 8: four +1 and four 0 neighbours
    mid = train_knn(pl.concat([labels] * 4), embeddings=np.vstack([emb] * 4), k=8, weighting="uniform",
                    text_weight=0.0)
    assert mid.expected_gain(router_features(["q"], True, unit(emb[0] + emb[1])[None]))[0] == pytest.approx(4 / 9)


def test_similarity_weighting_favours_the_closer_neighbour():
    emb = unit(np.array([[1.0, 0.0], [0.0, 1.0]]) @ np.eye(2, 384))
    labels = pl.DataFrame({"prompt": ["a", "b"] * 5, "cheap_ok": [False, True] * 5, "premium_ok": [True] * 10})
    query = router_features(["q"], True, unit(np.array([0.9, 0.3]) @ np.eye(2, 384))[None])
    by = {w: train_knn(labels, embeddings=np.vstack([emb] * 5), k=10, weighting=w, text_weight=0.0)
          .expected_gain(query)[0] for w in WEIGHTINGS}
    assert by["uniform"] == pytest.approx((5 + 0.5) / 11)
    assert by["uniform"] < by["similarity"] < by["softmax"] < 1.0


def test_save_and_load_round_trip_in_the_router_folder_format(tmp_path):
    rng = np.random.default_rng(1)
    emb = unit(rng.normal(size=(40, 384)))
    labels = pl.DataFrame({"prompt": [f"question {i} about {'x' * (i % 7)}" for i in range(40)],
                           "cheap_ok": rng.random(40) < 0.5, "premium_ok": rng.random(40) < 0.9})
    router = train_knn(labels, embeddings=emb)
    folder = router.save(tmp_path / "knn")
    meta = json.loads((folder / "router.json").read_text())
    assert meta["kind"] == "knn" and meta["k"] == router.k and meta["text_features"] == TEXT_FEATURES
    assert len(meta["trained_on"]["cv_apgr"]) == len(K_GRID) * len(WEIGHTINGS) * len(TEXT_WEIGHTS)
    stored = np.load(folder / "weights.npz")
    assert stored["vectors"].dtype == np.float16 and stored["vectors"].shape[0] == 40
    assert stored["gains"].dtype == np.int8
    again = load_router(folder)
    assert isinstance(again, KnnRouter) and again.use_embeddings
    assert (again.k, again.weighting, again.text_weight) == (router.k, router.weighting, router.text_weight)
    queries = [f"another question {i}" for i in range(6)]
    q_emb = unit(rng.normal(size=(6, 384)))
    np.testing.assert_array_equal(again.score(queries, q_emb), router.score(queries, q_emb))
    assert scorer_for(again).source == "knn"


def same_words(pays: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"prompt": ["same words"] * len(pays), "cheap_ok": ~pays, "premium_ok": [True] * len(pays)})


def test_cross_validation_picks_k_from_the_labels():
    # 40 tight clusters of 6 prompts, each paying off or not: only the nearest 5 stay inside a prompt's cluster
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(40, 384)))
    cluster = np.repeat(np.arange(40), 6)
    emb = unit(centres[cluster] + 0.02 * rng.normal(size=(240, 384)))
    router = train_knn(same_words((rng.random(40) < 0.5)[cluster]), embeddings=emb)
    cv = router.trained_on["cv_apgr"]
    assert max(cv, key=cv.get) == f"k={router.k},{router.weighting},text_weight={router.text_weight}"
    assert router.k == 5
    uniform = [cv[f"k={k},uniform,text_weight=0.0"] for k in K_GRID]
    assert uniform == sorted(uniform, reverse=True)

    # a smooth chance of paying off around a circle, P = 0.5 + 0.4 sin(angle): one label says little, many
    # neighbours average the noise away
    theta = rng.uniform(0, 2 * np.pi, 300)
    a, b = unit(rng.normal(size=(2, 384)))
    emb = unit(np.outer(np.cos(theta), a) + np.outer(np.sin(theta), b))
    router = train_knn(same_words(rng.random(300) < 0.5 + 0.4 * np.sin(theta)), embeddings=emb)
    cv = router.trained_on["cv_apgr"]
    assert router.k >= 50 and cv["k=5,uniform,text_weight=0.0"] == min(cv.values())


def test_labels_a_knn_router_cannot_learn_from_are_refused():
    emb = unit(np.random.default_rng(3).normal(size=(12, 384)))
    same = pl.DataFrame({"prompt": ["p"] * 12, "cheap_ok": [True] * 12})
    with pytest.raises(RouterError, match="premium pays off"):
        train_knn(same, embeddings=emb)
    with pytest.raises(RouterError, match="cheap_ok"):
        train_knn(pl.DataFrame({"prompt": ["p"] * 12}), embeddings=emb)
