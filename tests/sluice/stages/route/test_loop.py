"""What a run routes with: the promoted router by default, and the quality floor's loop (+0.1 premium share after
a night under the floor, kept while the floor holds, capped at 1.0; a budget is never raised)."""

from datetime import datetime, timezone

import polars as pl
import pytest

from sluice.config import RouterSettings
from sluice.stages.route.learned import train_router
from sluice.stages.route.loop import plan_routing, quality_loop, routed_premium_share
from sluice.warehouse.routers import register
from tests.support.routing_prompts import EASY, HARD

ALERT = "quality lower bound 0.71 is under the floor 0.90 (estimate 0.80, n=40)"


def last(alert=ALERT, share=0.3, routed=None, loop=None, low=0.71):
    return {"run_id": "night-1", "min_quality": 0.9, "quality_low": low, "quality_alert": alert,
            "routing": {"premium_share": share, "routed_premium_share": routed if routed is not None else share},
            "quality_loop": loop}


def test_a_night_under_its_floor_raises_the_premium_share_by_the_step():
    settings, decision = quality_loop(last(), RouterSettings(premium_share=0.3))
    assert settings.premium_share == 0.4
    assert decision == {"setting": "premium_share", "from": 0.3, "to": 0.4, "after_run": "night-1", "configured": 0.3,
                        "why": f"run night-1: {ALERT}: its premium share 0.30 + 0.1"}


def test_the_raise_builds_on_the_last_runs_share_and_is_capped_at_one():
    raised = {"setting": "premium_share", "from": 0.3, "to": 0.4}
    settings, decision = quality_loop(last(share=0.4, loop=raised), RouterSettings(premium_share=0.3))
    assert (settings.premium_share, decision["from"], decision["to"]) == (0.5, 0.4, 0.5)
    settings, decision = quality_loop(last(share=0.95), RouterSettings(premium_share=0.3))
    assert settings.premium_share == 1.0 and decision["why"].endswith("+ 0.1 (capped at 1.0)")


def test_thresholds_give_way_to_the_share_they_routed_plus_the_step():
    settings, decision = quality_loop(last(share=None, routed=0.25), RouterSettings())
    assert settings.premium_share == pytest.approx(0.35) and decision["configured"] is None
    assert decision["from"] == 0.25


def test_a_raised_share_is_kept_while_the_floor_holds_and_nothing_is_decided_otherwise():
    raised = {"setting": "premium_share", "from": 0.3, "to": 0.4}
    settings, decision = quality_loop(last(alert=None, share=0.4, loop=raised, low=0.93), RouterSettings(premium_share=0.3))
    assert settings.premium_share == 0.4 and (decision["from"], decision["to"]) == (0.4, 0.4)
    assert decision["why"] == "run night-1 held its floor 0.90 (lower bound 0.93) at the premium share 0.40 the loop " \
                              "raised it to: kept"
    assert quality_loop(last(alert=None, low=0.93), RouterSettings(premium_share=0.3)) == (
        RouterSettings(premium_share=0.3), None)
    assert quality_loop(None, RouterSettings())[1] is None
    assert quality_loop({**last(), "min_quality": None}, RouterSettings())[1] is None  # no floor, nothing to hold
    assert quality_loop(last(), RouterSettings(premium_share=0.3, quality_step=0.0))[1] is None  # loop off


def test_a_budget_is_kept_and_a_higher_configured_share_wins_and_both_are_recorded():
    settings, decision = quality_loop(last(), RouterSettings(budget_usd=2.0))
    assert settings.budget_usd == 2.0 and settings.premium_share is None
    assert (decision["setting"], decision["from"], decision["to"]) == ("budget_usd", 2.0, 2.0)
    assert "a budget caps the spend" in decision["why"]
    settings, decision = quality_loop(last(), RouterSettings(premium_share=0.6))
    assert settings.premium_share == 0.6 and (decision["from"], decision["to"]) == (0.6, 0.6)
    assert decision["why"].endswith("the configured share 0.60 is already at least that")


def test_the_routed_premium_share_counts_routed_rows_only():
    routed = pl.DataFrame({"tier": ["cheap", "premium", None, "cheap", "premium"]})
    assert routed_premium_share(routed, "premium") == 0.5
    assert routed_premium_share(pl.DataFrame({"tier": [None]}, schema={"tier": pl.String}), "premium") is None


def test_a_run_without_a_router_routes_with_the_promoted_version(tmp_path):
    wh = tmp_path / "wh.duckdb"
    cache = tmp_path / "routers"
    assert plan_routing(RouterSettings(), wh, cache, "d")[1]["router"] == "heuristic gatekeeper"
    labels = pl.DataFrame({"prompt": EASY + HARD, "cheap_ok": [True] * 12 + [False] * 12})
    folder = train_router(labels, use_embeddings=False).save(tmp_path / "r1")
    register(wh, folder, labels=24, target="not cheap_ok", cv_auroc=1.0, previous_auroc=None, promote=True,
             reason="first", labels_through=datetime.now(timezone.utc))
    settings, routing, decision = plan_routing(RouterSettings(premium_share=0.2), wh, cache, "d")
    assert routing == {"router": "version 1 (promoted)", "router_version": 1, "mode": "share", "premium_share": 0.2,
                       "budget_usd": None} and decision is None
    assert settings.model is not None and settings.model.parent == cache
    assert (settings.model / "weights.npz").read_bytes() == (folder / "weights.npz").read_bytes()
    # the same version is written once, under a name fixed by its content (a resumed run finds it again)
    assert plan_routing(RouterSettings(), wh, cache, "d")[0].model == settings.model
    given = plan_routing(RouterSettings(model=folder), wh, cache, "d")
    assert given[0].model == folder and given[1]["router"] == f"given: {folder}" and given[1]["router_version"] is None
    off = plan_routing(RouterSettings(use_promoted=False), wh, cache, "d")
    assert off[0].model is None and off[1]["router"] == "heuristic gatekeeper"


def test_a_promoted_version_this_sluice_cannot_read_is_not_used(tmp_path):
    wh = tmp_path / "wh.duckdb"
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "router.json").write_text('{"format": 1}')
    register(wh, folder, labels=0, target="x", cv_auroc=0.5, previous_auroc=None, promote=True, reason="by hand")
    settings, routing, _ = plan_routing(RouterSettings(), wh, tmp_path / "routers", "d")
    assert settings.model is None and routing["router_version"] is None
    assert routing["router"].startswith("heuristic gatekeeper (promoted version 1 unusable:")
