"""The review's decisions: what is retried, escalated and shadow-sampled after a tier has answered."""

import math

import polars as pl
import pytest

from models.pricing import TierPrice
from sluice.config import RouterSettings
from sluice.stages.review.decide import RETRY_TEMPERATURE, escalation_rows, retry_rows, shadow_rows

PRICE = TierPrice("mid", 1e-6, 2e-6, "test")


def rows(n):
    return pl.DataFrame({"row_id": [f"r{i}" for i in range(n)], "prompt": [f"q{i}" for i in range(n)],
                         "max_tokens": pl.Series([None] * n, dtype=pl.Int32),
                         "temperature": pl.Series([None] * n, dtype=pl.Float64), "tier": ["small"] * n})


def answers(n, logprobs, status=None):
    return pl.DataFrame({"row_id": [f"r{i}" for i in range(n)], "status": status or ["ok"] * n,
                         "error": [None if (status or ["ok"] * n)[i] == "ok" else "bad json" for i in range(n)],
                         "mean_logprob": logprobs, "input_tokens": [100] * n, "output_tokens": [50] * n,
                         "finish_reason": ["stop"] * n})


def test_retry_doubles_max_tokens_of_cut_answers_and_samples_the_others():
    a = answers(3, [None] * 3, ["invalid", "invalid", "ok"]).with_columns(
        pl.Series("finish_reason", ["length", "stop", "stop"]))
    out = retry_rows(rows(3), a, default_max_tokens=40)
    assert out["row_id"].to_list() == ["r0", "r1"]
    assert out["max_tokens"].to_list() == [80, None]
    assert out["temperature"].to_list() == [None, RETRY_TEMPERATURE]


def test_the_least_confident_rows_are_escalated_up_to_the_share():
    lp = [math.log(c) for c in (0.9, 0.2, 0.45, 0.1, 0.8, 0.3, 0.95, 0.99, 0.6, 0.7)]
    s = RouterSettings(cascade_share=0.2, cascade_min_confidence=0.5)
    up, planned = escalation_rows(rows(10), answers(10, lp), "small", "mid", PRICE, s, None)
    assert up["row_id"].to_list() == ["r1", "r3"]  # the two least confident (share 0.2 of 10)
    assert up["escalated_from"].to_list() == ["small", "small"] and up["tier"].to_list() == ["mid", "mid"]
    assert planned == pytest.approx(2 * (100 * 1e-6 + 50 * 2e-6))


def test_schema_failures_always_qualify_and_use_the_share_first():
    lp = [math.log(0.1)] * 4
    a = answers(4, lp, ["invalid", "ok", "ok", "ok"])
    up, _ = escalation_rows(rows(4), a, "small", "mid", PRICE, RouterSettings(cascade_share=0.25), None)
    assert up["row_id"].to_list() == ["r0"]
    assert "schema: bad json" in up["cascade_reason"][0]
    # no share at all: the invalid row still goes
    up, _ = escalation_rows(rows(4), a, "small", "mid", PRICE, RouterSettings(cascade_share=0.0), None)
    assert up["row_id"].to_list() == ["r0"]


@pytest.mark.parametrize("budget", [0.0, 0.00015, 0.00031, 0.0006, 1.0])
def test_escalations_never_exceed_the_cascade_budget(budget):
    lp = [math.log(0.1 + 0.05 * i) for i in range(8)]
    s = RouterSettings(cascade_share=1.0, cascade_min_confidence=0.9)
    up, planned = escalation_rows(rows(8), answers(8, lp), "small", "mid", PRICE, s, budget)
    per_row = 100 * 1e-6 + 50 * 2e-6
    assert planned <= budget + 1e-12
    assert up.height == min(8, int(budget / per_row + 1e-9))


def test_answers_without_logprobs_are_not_escalated_for_confidence():
    up, planned = escalation_rows(rows(5), answers(5, [None] * 5), "small", "mid", PRICE,
                                  RouterSettings(cascade_share=1.0), None)
    assert up.height == 0 and planned == 0.0


def test_the_shadow_sample_is_deterministic_and_sized():
    a = answers(40, [None] * 40, ["ok"] * 38 + ["failed", "invalid"])
    one = shadow_rows(rows(40), a, 0.1, "premium")
    two = shadow_rows(rows(40), a, 0.1, "premium")
    assert one["row_id"].to_list() == two["row_id"].to_list()
    assert one.height == round(0.1 * 38) and set(one["tier"]) == {"premium"}
    assert not {"r38", "r39"} & set(one["row_id"])  # only answered rows are shadowed


def test_the_cascade_budget_is_charged_from_the_decisions_on_disk(tmp_path):
    from sluice.runs import write_parquet
    from sluice.stages.review.decide import planned_escalation_usd

    lp = [math.log(0.1)] * 6
    s = RouterSettings(cascade_share=1.0, cascade_min_confidence=0.9)
    up, planned = escalation_rows(rows(6), answers(6, lp), "small", "mid", PRICE, s, 0.0004)
    write_parquet(up, tmp_path / "escalated" / "tier=mid.parquet")
    assert planned_escalation_usd(tmp_path / "escalated") == pytest.approx(planned) and planned <= 0.0004
    # the next tier's decision replaces the earlier one's columns (rows escalated twice)
    again, _ = escalation_rows(up, answers(6, lp), "mid", "premium", PRICE, s, 1.0)
    assert set(again.columns) == set(up.columns) and set(again["escalated_from"]) == {"mid"}
