import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sluice.config import RouterSettings
from sluice.stages.dedup.deduplicate import exact_duplicates
from sluice.stages.ingest.read import validate_prompts
from sluice.stages.route.assign import heuristic_route, write_tier_partitions
from sluice.stages.route.gatekeeper import gatekeeper_features

TIERS = ["small", "mid", "premium"]
EASY = ["What is the capital of France?", "Translate 'good morning' into Spanish.",
        "Label this support ticket as billing, technical or other: 'I was charged twice.'"]
MEDIUM = ["Write a polite reply declining a meeting invitation.", "Summarise this email in one sentence: 'Hi all'"]
HARD = ["Prove that the square root of 2 is irrational.",
        "Write a Python function that returns the longest palindromic substring, and explain its complexity.",
        "Design a rate limiter for 100 requests per minute across servers. Discuss the trade-offs."]


def test_intents_and_scores_order_easy_below_hard():
    feats = gatekeeper_features(pl.Series(EASY + HARD))
    assert feats["intent"].to_list()[:3] == ["qa", "qa", "classification"]
    assert feats["intent"].to_list()[3:] == ["math", "code", "analysis"]
    assert feats["route_score"][:3].max() < feats["route_score"][3:].min()


def test_three_tiers_and_a_reason_per_routed_row():
    table = exact_duplicates(validate_prompts(pa.table({"prompt": EASY + MEDIUM + HARD + [EASY[0], None]})))
    out = heuristic_route(table, TIERS, RouterSettings())
    tiers = out["tier"].to_pylist()
    assert tiers[:3] == ["small"] * 3
    assert tiers[3:5] == ["mid"] * 2
    assert tiers[5:8] == ["premium"] * 3
    assert tiers[8:] == [None, None]  # the duplicate and the quarantined row are not sent anywhere
    reasons = out["route_reason"].to_pylist()
    assert reasons[5].startswith("heuristic: intent=math") and reasons[5].endswith("-> premium")


def test_thresholds_move_rows_between_tiers():
    table = validate_prompts(pa.table({"prompt": MEDIUM}))
    everything_premium = heuristic_route(table, TIERS, RouterSettings(small_below=0.0, premium_from=0.0))
    assert set(everything_premium["tier"].to_pylist()) == {"premium"}


def test_partitions_hold_each_tiers_pending_rows(tmp_path):
    table = exact_duplicates(validate_prompts(pa.table({"prompt": EASY + HARD + [HARD[0]]})))
    parts = write_tier_partitions(heuristic_route(table, TIERS, RouterSettings()), tmp_path, TIERS)
    assert set(parts) == {"small", "premium"}  # no empty partition for mid
    assert parts["small"] == tmp_path / "tier=small" / "part-0.parquet"
    assert pq.read_table(parts["small"])["prompt"].to_pylist() == EASY
    assert pq.read_table(parts["premium"])["prompt"].to_pylist() == HARD  # the repeat stays out
