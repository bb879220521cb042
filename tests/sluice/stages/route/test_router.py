import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from models.catalogue import load_catalogue
from sluice.config import RouterSettings
from sluice.stages.ingest.read import validate_prompts
from sluice.stages.review.shadow import shadow_sample
from sluice.stages.route.assign import heuristic_route, route_batch
from sluice.stages.route.features import router_features
from sluice.stages.route.learned import RouterError, load_router, train_router
from sluice.stages.route.policies import premium_threshold, route_by_share
from sluice.warehouse.labels import add_labels, read_labels
from tests.support.routing_prompts import EASY, HARD

TIERS = ["small", "mid", "premium"]


def labels(n_train: int = 10) -> pl.DataFrame:
    prompts = EASY[:n_train] + HARD[:n_train]
    return pl.DataFrame({"prompt": prompts, "cheap_ok": [True] * n_train + [False] * n_train})


def test_trained_router_ranks_held_out_easy_below_hard(tmp_path):
    router = train_router(labels(), use_embeddings=False, l2_text=1.0)
    held_out = EASY[10:] + HARD[10:]
    scores = router.score(held_out)
    assert scores[:2].max() < scores[2:].min()
    assert router.target == "not cheap_ok"
    again = load_router(router.save(tmp_path / "r"))
    np.testing.assert_allclose(again.score(held_out), scores)


def test_premium_ok_refines_the_target_and_bad_labels_are_refused():
    df = labels().with_columns(pl.lit(True).alias("premium_ok"))
    assert train_router(df, use_embeddings=False).target == "not cheap_ok and premium_ok"
    with pytest.raises(RouterError, match="cheap_ok"):
        train_router(pl.DataFrame({"prompt": ["a"]}), use_embeddings=False)
    with pytest.raises(RouterError, match="both outcomes"):
        train_router(labels().with_columns(pl.lit(True).alias("cheap_ok")), use_embeddings=False)


@pytest.mark.parametrize("share", [0.0, 0.1, 0.33, 0.5, 1.0])
def test_share_calibration_hits_the_share(share):
    rng = np.random.default_rng(7)
    scores = np.round(rng.random(997), 2)  # many ties
    tier = route_by_share(scores, share, mid_share=0.2)
    assert (tier == 2).sum() == round(share * 997)
    assert (tier == 1).sum() == min(round(0.2 * 997), 997 - round(share * 997))
    if 0 < share < 1:  # the premium rows are the highest scores: above RouteLLM's quantile threshold
        assert scores[tier == 2].min() >= scores[tier != 2].max()
        assert scores[tier == 2].min() >= premium_threshold(scores, share) - 0.01


def test_learned_route_with_share_routes_only_pending_rows_and_explains():
    router = train_router(labels(), use_embeddings=False, l2_text=1.0)
    table = validate_prompts(pa.table({"prompt": EASY + HARD + [None]}))
    out = pl.from_arrow(route_batch(table, TIERS, RouterSettings(premium_share=0.25, mid_share=0.25), router=router))
    routed = out.filter(pl.col("status") == "pending")
    assert routed["tier"].value_counts().sort("tier").rows() == [("mid", 6), ("premium", 6), ("small", 12)]
    assert set(routed.filter(pl.col("tier") == "premium")["prompt"]) <= set(HARD)
    assert out["tier"][-1] is None and out["route_reason"][-1] is None  # the quarantined row is not routed
    assert routed["route_reason"][0].startswith("router: p_premium=") and "share 0.25" in routed["route_reason"][0]


def test_default_settings_keep_the_heuristic():
    table = validate_prompts(pa.table({"prompt": EASY[:3] + HARD[:3]}))
    assert route_batch(table, TIERS, RouterSettings()).equals(heuristic_route(table, TIERS, RouterSettings()))


def test_shadow_sample_is_deterministic_and_the_right_size():
    ids = [f"row-{i}" for i in range(1000)]
    mask = shadow_sample(ids, 0.05)
    assert mask.sum() == 50
    assert np.array_equal(mask, shadow_sample(list(ids), 0.05))
    assert np.array_equal(mask[::-1], shadow_sample(ids[::-1], 0.05))  # by row hash, not position
    assert not np.array_equal(mask, shadow_sample(ids, 0.05, salt="other-night"))
    assert shadow_sample(ids, 0.0).sum() == 0 and shadow_sample(ids[:3], 1.0).all()


def test_train_from_warehouse_and_the_cli(tmp_path):
    wh = tmp_path / "w.duckdb"
    from sluice.warehouse.db import connect

    lab = labels().with_columns(pl.lit("run-1").alias("run_id"), pl.Series("row_id", [str(i) for i in range(20)]),
                                pl.lit(None, pl.Boolean).alias("premium_ok"), pl.lit("shadow").alias("source"))
    with connect(wh) as con:  # the migrations create router_training
        assert add_labels(con, lab) == 20
        assert add_labels(con, lab) == 20  # re-adding the same run's labels replaces them
    assert read_labels(wh).height == 20

    from sluice.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["router", "train", "--from-warehouse", str(wh), "-o", str(tmp_path / "r"),
                              "--no-embeddings", "--l2-text", "1"])
    assert res.exit_code == 0, res.output
    assert load_router(tmp_path / "r").trained_on["rows"] == 20

    batch = tmp_path / "in.parquet"
    pl.DataFrame({"id": list(range(24)), "prompt": EASY + HARD}).write_parquet(batch)
    out = tmp_path / "out.parquet"
    res = runner.invoke(app, ["route", str(batch), "-o", str(out), "--router", str(tmp_path / "r"),
                              "--premium-share", "0.25"])
    assert res.exit_code == 0, res.output
    routed = pl.read_parquet(out)
    assert routed.columns == ["id", "prompt", "tier", "route_score", "route_reason"]
    assert (routed["tier"] == "premium").sum() == 6
    assert set(routed["tier"]) <= set(load_catalogue().names)

    res = runner.invoke(app, ["route", str(batch), "-o", str(out), "--premium-share", "0.2", "--budget-usd", "1"])
    assert res.exit_code == 2 and "not both" in res.output
    res = runner.invoke(app, ["router", "train", str(batch), "-o", str(tmp_path / "r2"), "--no-embeddings"])
    assert res.exit_code == 2 and "cheap_ok" in res.output


def test_shadow_pairs_become_labels_by_agreement(tmp_path):
    from sluice.contracts.answers import answers_agree
    from sluice.stages.land.labels import labels_from_shadow

    assert answers_agree("The answer is 1,200.", "So she pays $1200")
    assert answers_agree("Paris", "paris ") and not answers_agree("Paris", "Lyon") and not answers_agree("", "")
    pairs = pl.DataFrame({"run_id": ["r"] * 2, "row_id": ["1", "2"], "prompt": ["2+2?", "3*3?"],
                          "cheap_response": ["4", "6"], "premium_response": ["#### 4", "9"]})
    lab = labels_from_shadow(pairs)
    assert lab["cheap_ok"].to_list() == [True, False] and lab["source"].to_list() == ["shadow"] * 2
    from sluice.warehouse.db import connect

    with connect(tmp_path / "w.duckdb") as con:
        assert add_labels(con, lab) == 2


def test_router_with_embeddings_averages_two_heads_and_round_trips(tmp_path):
    # stand-in embeddings (row-aligned, as the bench passes its cached MiniLM ones): hard prompts lean one way
    rng = np.random.default_rng(0)
    direction = rng.normal(size=384)

    def fake(prompts):
        lean = np.array([2.0 if p in HARD else -2.0 for p in prompts])[:, None]
        e = rng.normal(size=(len(prompts), 384)) + lean * direction
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    train = labels()
    router = train_router(train, use_embeddings=True, l2_text=1.0, l2_embedding=10.0, embeddings=fake(train["prompt"]))
    assert len(router.heads) == 2 and router.heads[0].n_features < router.heads[1].n_features
    held_out = EASY[10:] + HARD[10:]
    emb = fake(held_out)
    scores = router.score(held_out, emb)
    assert scores[:2].max() < scores[2:].min()
    x = router_features(held_out, True, emb)
    np.testing.assert_allclose(scores, (router.heads[0].prob(x) + router.heads[1].prob(x)) / 2)
    np.testing.assert_allclose(load_router(router.save(tmp_path / "r")).score(held_out, emb), scores)
