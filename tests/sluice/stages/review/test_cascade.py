import math

import numpy as np
import polars as pl
import pytest

from sluice.stages.review.cascade import confidence_from_logprobs, escalate_within_budget


def test_escalates_least_confident_first_within_the_remaining_budget():
    answers = pl.DataFrame({"row_id": list("abcde"), "confidence": [0.9, 0.2, None, 0.6, 0.99],
                            "next_cost_usd": [1.0] * 5})
    out = escalate_within_budget(answers, 2.5)
    assert out.filter("escalate")["row_id"].to_list() == ["b", "c"]  # null confidence counts as 0
    assert out["cascade_reason"][3].startswith("kept: escalation")
    assert escalate_within_budget(answers, 10.0, min_confidence=0.7)["escalate"].to_list() == [
        False, True, True, True, False]


def test_cheap_escalations_are_preferred_per_dollar_and_budget_holds_on_random_batches():
    answers = pl.DataFrame({"confidence": [0.5, 0.5], "next_cost_usd": [4.0, 1.0]})
    assert escalate_within_budget(answers, 4.0)["escalate"].to_list() == [False, True]
    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(1, 50))
        df = pl.DataFrame({"confidence": rng.random(n), "next_cost_usd": rng.lognormal(-7, 1, n)})
        budget = float(rng.uniform(0, 1) * df["next_cost_usd"].sum())
        out = escalate_within_budget(df, budget)
        assert out.filter("escalate")["next_cost_usd"].sum() <= budget + 1e-12
        left = budget - out.filter("escalate")["next_cost_usd"].sum()
        assert (out.filter(~pl.col("escalate"))["next_cost_usd"] > left).all()  # nothing affordable left behind


def test_confidence_from_mean_token_logprob():
    assert confidence_from_logprobs(0.0) == 1.0
    assert confidence_from_logprobs(math.log(0.5)) == pytest.approx(0.5)
    df = pl.DataFrame({"lp": [-0.1, -2.0, 0.3]}).select(confidence_from_logprobs(pl.col("lp")))
    assert df["lp"].to_list() == pytest.approx([math.exp(-0.1), math.exp(-2.0), 1.0])
    with pytest.raises(ValueError):
        escalate_within_budget(pl.DataFrame({"confidence": [0.1], "next_cost_usd": [None]}), 1.0)


def test_answer_signals_check_the_cheap_answers_arithmetic():
    from sluice.stages.review.cascade import ANSWER_SIGNALS, answer_signals

    good = "She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs for 9 * 2 = $<<9*2=18>>18.\n#### 18"
    bad = "She has 16 - 7 = 8 eggs. However, rounding, about 8 * 2 = 16.5\n#### 16.5"
    x = dict(zip(ANSWER_SIGNALS, answer_signals([good, bad, None]).T))
    assert x["calculations"].tolist() == [2, 2, 0]
    assert x["wrong_calculations"].tolist() == [0, 2, 0]
    assert x["has_final_answer"].tolist() == [1, 1, 0] and x["fractional_final"].tolist() == [0, 1, 0]
    assert x["hedges"][1] >= 2 and x["negative_or_missing_final"].tolist() == [0, 0, 1]
    assert answer_signals(["__import__('os').system('x') = 3"])[0, 1] == 0  # never evaluated: not arithmetic


def test_escalation_costs_price_the_next_tier_from_measured_tokens():
    from sluice.stages.review.cascade import escalation_costs

    answers = pl.DataFrame({"input_tokens": [100, 10], "output_tokens": [50, 5], "max_tokens": [None, 64]})
    costs = escalation_costs(answers, 2.5e-6, 10e-6)
    assert costs.to_list() == pytest.approx([100 * 2.5e-6 + 50 * 10e-6, 10 * 2.5e-6 + 64 * 10e-6])
    out = escalate_within_budget(answers.with_columns(costs, pl.Series("confidence", [0.2, 0.9])), costs[0])
    assert out["escalate"].to_list() == [True, False]
