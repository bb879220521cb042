"""The per-tier router (a quality predictor per tier, the cheapest tier that clears the bar), the shared APGR score,
and choosing the router kind by cross-validation. Embeddings are synthetic unit vectors passed in."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from sluice.stages.route.choose import train, train_auto
from sluice.stages.route.knn import KnnRouter
from sluice.stages.route.learned import LearnedRouter, RouterError, load_router
from sluice.stages.route.per_tier import PerTierRouter, cheapest_tier, train_per_tier
from sluice.stages.route.training import apgr
from tests.support.routing_prompts import EASY, HARD


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_apgr_counts_ties_as_random_and_ranks_the_oracle_first():
    cheap = np.array([1, 1, 0, 0, 0, 1, 0, 1], bool)
    premium = np.array([1, 0, 1, 1, 0, 1, 1, 1], bool)
    assert apgr(np.zeros(8), cheap, premium) == pytest.approx(0.5)  # one tie: the straight line
    oracle = premium.astype(float) - cheap.astype(float)
    assert apgr(oracle, cheap, premium) > apgr(-oracle, cheap, premium)
    # the oracle: the 3 rows only premium gets right first (gap closed at 3/8), the 1 row only cheap gets right last
    gap = premium.mean() - cheap.mean()
    acc = cheap.mean() + np.array([0, 1, 2, 3, 3, 3, 3, 3, 2]) / 8
    area = np.sum((acc[1:] + acc[:-1]) / 2) / 8
    assert apgr(oracle, cheap, premium) == pytest.approx((area - cheap.mean()) / gap)


def three_tier_labels():
    # easy prompts: every tier right; middling (EASY with a number task): mid and premium; hard: premium only
    middling = [f"{p} and then add {i} to 17" for i, p in enumerate(EASY)]
    prompts = EASY + middling + HARD
    n = len(EASY)
    small = [True] * n + [False] * n + [False] * len(HARD)
    mid = [True] * n + [True] * n + [False] * len(HARD)
    mid[3] = None  # unknown for one row: that tier's predictor learns from the others
    return pl.DataFrame({"prompt": prompts, "small_ok": small, "mid_ok": mid, "premium_ok": [True] * len(prompts)})


def embeddings_by_group(n_easy: int, n_hard: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(3, 384)))
    group = np.repeat([0, 1, 2], [n_easy, n_easy, n_hard])
    return unit(centres[group] + 0.05 * rng.normal(size=(len(group), 384)))


def test_per_tier_predicts_each_tier_and_picks_the_cheapest_that_clears_the_bar(tmp_path):
    labels = three_tier_labels()
    emb = embeddings_by_group(len(EASY), len(HARD))
    router = train_per_tier(labels, embeddings=emb, l2_text=1.0, l2_embedding=1.0)
    assert router.tiers == ["small", "mid", "premium"]
    assert router.trained_on["tiers"]["mid"]["rows"] == labels.height - 1
    p = router.predict(labels["prompt"], emb)
    assert p.shape == (labels.height, 3)
    n = len(EASY)
    tier = cheapest_tier(p, bar=0.7)
    assert (tier[:n] == 0).all() and (tier[n: 2 * n] == 1).all() and (tier[2 * n:] == 2).all()
    # the router's score: P(last tier right) - P(first tier right), highest where only premium helps
    scores = router.score(labels["prompt"], emb)
    np.testing.assert_allclose(scores, np.clip(p[:, 2] - p[:, 0], 0, 1))
    assert scores[:n].max() < scores[n:].min()
    again = load_router(router.save(tmp_path / "pt"))
    assert isinstance(again, PerTierRouter) and again.tiers == router.tiers
    np.testing.assert_allclose(again.predict(labels["prompt"], emb), p)
    assert json.loads((tmp_path / "pt" / "router.json").read_text())["kind"] == "per-tier"
    with pytest.raises(RouterError, match="two or more"):
        train_per_tier(labels.select("prompt", "small_ok"), use_embeddings=False)


def xor_labels(n: int = 200, seed: int = 4):
    """Premium pays off on two opposite corners of a square in embedding space (XOR): no linear head can tell the
    corners apart, their nearest neighbours can."""
    rng = np.random.default_rng(seed)
    a, b = unit(rng.normal(size=(2, 384)))
    sx, sy = rng.choice([-1.0, 1.0], size=(2, n))
    emb = unit(np.outer(sx, a) + np.outer(sy, b) + 0.05 * rng.normal(size=(n, 384)))
    pays = sx * sy > 0
    labels = pl.DataFrame({"prompt": ["the same question"] * n, "cheap_ok": ~pays, "premium_ok": [True] * n})
    return labels, emb


def halfspace_labels(n: int = 200, dims: int = 20, seed: int = 0):
    """Premium pays off on one side of a hyperplane through a 20-dimensional subspace of the embedding space: a
    linear head learns the plane from 160 rows, neighbours in 20 dimensions only approximate it."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(384, dims)))[0].T
    g, w = rng.normal(size=(n, dims)), rng.normal(size=dims)
    pays = g @ w > 0
    labels = pl.DataFrame({"prompt": ["the same question"] * n, "cheap_ok": ~pays, "premium_ok": [True] * n})
    return labels, unit(g @ basis)


def test_auto_chooses_the_kind_that_cross_validates_best():
    # half the rows pay off and premium is always right: the oracle's APGR is 0.75, random scores' 0.5
    labels, emb = xor_labels()
    router = train_auto(labels, embeddings=emb)
    auto = router.trained_on["auto"]
    assert auto["chosen"] == "knn" and isinstance(router, KnnRouter)
    assert auto["candidates"]["knn"] > 0.7 and auto["candidates"]["logistic"] < 0.55
    assert auto["candidates"]["knn"] > auto["candidates"]["per-tier"]

    labels, emb = halfspace_labels()
    router = train_auto(labels, embeddings=emb)
    auto = router.trained_on["auto"]
    assert auto["chosen"] == "logistic" and isinstance(router, LearnedRouter)
    assert auto["candidates"]["logistic"] > 0.74 and auto["candidates"]["knn"] < auto["candidates"]["logistic"] - 0.01
    # premium always right: P(premium right) is flat, so per-tier ranks as the logistic "premium needed" does
    assert auto["candidates"]["per-tier"] == auto["candidates"]["logistic"]


def test_kinds_that_cannot_train_are_skipped_with_the_reason():
    labels, emb = halfspace_labels()
    router = train_auto(labels.drop("premium_ok"), use_embeddings=False)
    assert isinstance(router, LearnedRouter)
    assert router.trained_on["auto"]["candidates"]["knn"] == "needs embeddings (--no-embeddings given)"
    assert router.trained_on["auto"]["candidates"]["per-tier"] == "needs `premium_ok` labels"
    with pytest.raises(RouterError, match="needs embeddings"):
        train("knn", labels, use_embeddings=False)
    with pytest.raises(RouterError, match="unknown router kind"):
        train("forest", labels, embeddings=emb)


def test_router_train_kind_and_route_with_the_saved_folder(tmp_path, monkeypatch):
    # stand-in for MiniLM: hard prompts on one side of the space, easy ones on the other
    rng = np.random.default_rng(6)
    side = unit(rng.normal(size=384))

    def fake_embed(texts, max_length=None):
        lean = np.array([1.0 if t in HARD else -1.0 for t in texts])[:, None]
        return unit(lean * side + 0.3 * rng.normal(size=(len(texts), 384)))

    monkeypatch.setattr("models.embeddings.embed", fake_embed)
    from sluice.cli import app

    train_file = tmp_path / "labels.parquet"
    pl.DataFrame({"prompt": EASY[:10] + HARD[:10], "cheap_ok": [True] * 10 + [False] * 10,
                  "premium_ok": [True] * 20}).write_parquet(train_file)
    runner = CliRunner()
    for kind in ("knn", "auto"):
        res = runner.invoke(app, ["router", "train", str(train_file), "-o", str(tmp_path / kind), "--kind", kind])
        assert res.exit_code == 0, res.output
    assert isinstance(load_router(tmp_path / "knn"), KnnRouter)
    meta = json.loads((tmp_path / "auto" / "router.json").read_text())
    assert set(meta["trained_on"]["auto"]["candidates"]) == {"logistic", "knn", "per-tier"}
    assert "chose " in res.output

    batch = tmp_path / "in.parquet"
    pl.DataFrame({"prompt": EASY + HARD}).write_parquet(batch)
    out = tmp_path / "out.parquet"
    res = runner.invoke(app, ["route", str(batch), "-o", str(out), "--router", str(tmp_path / "knn"),
                              "--premium-share", "0.5"])
    assert res.exit_code == 0, res.output
    routed = pl.read_parquet(out)
    assert routed.filter(pl.col("tier") == "premium")["prompt"].to_list() == HARD
    assert routed["route_reason"][0].startswith("knn: gain=")
