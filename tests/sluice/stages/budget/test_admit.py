"""Admission under the budget, by hand-priced tiers: first answers moved to the cheapest tier that fits or
deferred (with their duplicates), rows an earlier run deferred first; follow-up passes take the rows that fit;
the reservation of an API row is its most (max_tokens, over-counted input)."""

import numpy as np
import polars as pl
import pytest

from sluice.stages.budget import Ledger, admit_first_answers, admit_judge, admit_pass, carry_deferred, rate_of
from sluice.stages.budget.costs import input_tokens_upper, row_costs

# $ per token: cheap 1e-6 in and out, premium 1e-5 in and out; a self-hosted tier at $3.6/h, 100 tok/s, 10 s start
MODEL = {
    "cheap": {"name": "cheap", "usd_per_input_token": 1e-6, "usd_per_output_token": 1e-6},
    "premium": {"name": "premium", "usd_per_input_token": 1e-5, "usd_per_output_token": 1e-5},
    "local": {"name": "local", "usd_per_second": 0.001, "output_tokens_per_s": 100.0, "engine_start_s": 10.0},
}
PROMPT = "x" * 291  # 97 tokens at 3 bytes a token, + 4 (one message) + 8 (template) = 109 tokens of input


def _rows(tiers, status=None, dup_of=None, max_tokens=91):
    n = len(tiers)
    return pl.DataFrame({"row_id": [f"r{i}" for i in range(n)], "prompt": [PROMPT] * n,
                         "max_tokens": [max_tokens] * n, "tier": tiers, "status": status or ["pending"] * n,
                         "dup_of": dup_of or [None] * n, "route_reason": ["r"] * n, "error": [None] * n},
                        schema_overrides={"tier": pl.String, "dup_of": pl.String, "error": pl.String})


def test_an_api_rows_reservation_is_its_most():
    rows = _rows(["cheap"])
    assert input_tokens_upper(rows).tolist() == [109.0]
    assert row_costs(rows, rate_of(MODEL, "cheap"), 256).tolist() == [pytest.approx(200e-6)]  # 109 in + 91 out
    assert row_costs(rows.with_columns(pl.lit(None, pl.Int32).alias("max_tokens")), rate_of(MODEL, "premium"),
                     291).tolist() == [pytest.approx(400e-5)]  # the run's default max_tokens when the row has none
    # self-hosted: max_tokens / measured tokens per second x $/s (the engine start is once per pass)
    assert row_costs(rows, rate_of(MODEL, "local"), 256).tolist() == [pytest.approx(91 / 100 * 0.001)]


def test_first_answers_move_to_the_cheapest_tier_that_fits_then_defer_with_their_duplicates():
    # each row: cheap $0.0002, premium $0.002; room for one premium row and three cheap ones
    rows = _rows(["premium", "premium", "cheap", "cheap", None], status=["pending"] * 4 + ["duplicate"],
                 dup_of=[None, None, None, None, "r1"])
    ledger = Ledger(0.0026, model=MODEL)
    out = admit_first_answers(rows, ["cheap", "premium"], ledger, 256)
    # cheap rows first (r2, r3: $0.0004), then r0 on premium ($0.002), then r1 no longer fits premium: cheap
    assert out["tier"].to_list() == ["premium", "cheap", "cheap", "cheap", None]
    assert out["status"].to_list() == ["pending"] * 4 + ["duplicate"]
    assert "moved to cheap" in out["route_reason"][1]
    assert ledger.entries["cheap"].reserved_usd == pytest.approx(0.0006) and ledger.entries["cheap"].rows == 3
    assert ledger.entries["premium"].reserved_usd == pytest.approx(0.002)
    tight = Ledger(0.0005, model=MODEL)
    out = admit_first_answers(rows, ["cheap", "premium"], tight, 256)
    assert out["status"].to_list() == ["deferred", "deferred", "pending", "pending", "deferred"]
    assert out["error"][0] == ("deferred: fits on no tier within the run's budget of $0.0005 (needs $0.0002, "
                               "$0.0001 left); the next run of the dataset answers it first")
    assert out["error"][4] == "deferred with its canonical row r1"
    assert tight.summary()["deferred_rows"] == 3 and tight.available_usd == pytest.approx(0.0001)


def test_rows_an_earlier_run_deferred_are_admitted_first():
    tonight = _rows(["cheap", "cheap"]).drop("tier", "route_reason", "dup_of")
    earlier = pl.DataFrame({"run_id": ["R1"], "row_id": ["q7"], "row_index": [7], "prompt": [PROMPT],
                            "max_tokens": [91], "meta": ['{"team": "a"}'], "deferred_from": [None]},
                           schema_overrides={"deferred_from": pl.String})
    rows = carry_deferred(tonight.with_columns(pl.lit(0, pl.Int64).alias("row_index")), earlier)
    assert rows["row_id"].to_list() == ["R1/q7", "r0", "r1"] and rows["row_index"].to_list()[0] == -1
    assert rows["deferred_from"].to_list() == ["R1/q7", None, None] and rows["status"].to_list()[0] == "pending"
    rows = rows.with_columns(pl.lit("premium").alias("tier"), pl.lit("r").alias("route_reason"),
                             pl.lit(None, pl.String).alias("dup_of"))
    ledger = Ledger(0.0021, model=MODEL)  # one premium row
    out = admit_first_answers(rows, ["cheap", "premium"], ledger, 256)
    assert out["status"].to_list() == ["pending", "deferred", "deferred"]  # last night's row went first
    # deferred again, it keeps its own id, pointing at the run that deferred it last
    again = carry_deferred(tonight.with_columns(pl.lit(0, pl.Int64).alias("row_index")),
                           earlier.with_columns(pl.lit("R2").alias("run_id"), pl.lit("R1/q7").alias("row_id"),
                                                pl.lit("R1/q7").alias("deferred_from")))
    assert again["row_id"][0] == "R2/q7" and again["deferred_from"][0] == "R2/R1/q7"


def test_a_follow_up_pass_takes_the_rows_that_fit_and_a_cold_engine_costs_its_start():
    rows = _rows(["premium"] * 3).with_columns(pl.Series("max_tokens", [91, 991, 91]))
    ledger = Ledger(0.0045, model=MODEL)
    take, usd = admit_pass(rows, "premium/escalation", ledger, 256)
    assert take.tolist() == [True, False, True] and usd == pytest.approx(0.004)  # the dear one skipped
    assert not ledger.entries  # reserving is the caller's, after it wrote the admitted rows
    local = Ledger(0.012, model=MODEL)
    take, usd = admit_pass(rows.head(1), "local/shadow", local, 256)  # engine start $0.01 + $0.00091
    assert take.tolist() == [True] and usd == pytest.approx(0.01091)
    local.reserve("local", 0.0)
    take, usd = admit_pass(rows.head(1), "local/retry", local, 256)  # warm: its first answers started it
    assert usd == pytest.approx(0.00091)


def test_the_judge_is_all_or_nothing():
    ledger = Ledger(0.01, model=MODEL)
    tokens = np.array([100.0, 100.0])  # two pairs, both orders, 16 tokens a verdict: 4 x 116 x 1e-5
    assert not admit_judge("premium/judge", rate_of(MODEL, "premium"), np.array([1e4] * 2), 16, ledger)
    assert ledger.summary()["skipped_rows"] == {"premium/judge": 2}
    assert admit_judge("premium/judge", rate_of(MODEL, "premium"), tokens, 16, ledger)
    assert ledger.entries["premium/judge"].reserved_usd == pytest.approx(4 * 116e-5)
