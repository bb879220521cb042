"""The quality estimate in land (sluice/stages/land/estimate.py): shadow pairs judged by shape, per tier with a
Wilson interval and n, weighted across tiers by rows; stored in `runs` and printed in the summary."""

import json

import duckdb
import polars as pl
import pytest

from sluice.reports.summary import summary_lines
from sluice.stages.land.estimate import estimate_quality, quality_check, shadow_verdicts
from sluice.stages.land.results import land_results
from sluice.stats import wilson_interval


def results(tiers: dict[str, int], failed: dict[str, int] | None = None, correct=None, schema=None) -> pl.DataFrame:
    """Rows r0.. on each tier (in order), `failed` of them failed; two duplicates never sent."""
    rows, i = [], 0
    for tier, n in tiers.items():
        for j in range(n):
            rows.append({"row_id": f"r{i}", "tier": tier, "status": "failed" if j < (failed or {}).get(tier, 0)
                         else "ok", "response_schema": schema})
            i += 1
    rows += [{"row_id": f"d{j}", "tier": None, "status": "duplicate", "response_schema": None} for j in range(2)]
    df = pl.DataFrame(rows, schema={"row_id": pl.String, "tier": pl.String, "status": pl.String,
                                    "response_schema": pl.String})
    if correct is not None:
        df = df.with_columns(pl.Series("correct", correct + [None] * (df.height - len(correct)), pl.Boolean))
    return df


def pairs(cheap: list[str | None], premium: list[str | None], start: int = 0) -> pl.DataFrame:
    return pl.DataFrame({"row_id": [f"r{start + i}" for i in range(len(cheap))], "response": cheap,
                         "_shadow_response": premium}, schema={"row_id": pl.String, "response": pl.String,
                                                               "_shadow_response": pl.String})


def test_verdicts_by_shape_with_the_rows_grader_as_hint():
    res = results({"cheap": 4})
    hints = pl.DataFrame({"row_id": ["r0", "r1", "r2", "r3"], "grader": ["number", "number", None, None]})
    v = shadow_verdicts(pairs(["so 12", "so 13", "Paris", "B"], ["it is 12", "it is 12", "Paris", "(B)"]), res, hints)
    assert v["acceptable"].to_list() == [True, False, None, True]
    assert v["shape"].to_list() == ["number", "number", None, "choice"]
    assert v["tier"].to_list() == ["cheap"] * 4


def test_estimate_per_tier_and_weighted_for_the_batch():
    # 60 rows on cheap, 40 on premium, 20 cheap rows shadowed: 15 acceptable, 3 not, 2 free text (unjudged)
    res = results({"cheap": 60, "premium": 40})
    cheap = ["42"] * 15 + ["41"] * 3 + ["some text", "other text"]
    premium = ["42"] * 18 + ["a summary", "another summary"]
    q = estimate_quality(pairs(cheap, premium), res, "premium")
    tier = q["quality_per_tier"]["cheap"]
    low, high = wilson_interval(15, 18)
    assert tier["n"] == 18 and tier["acceptable"] == 15 and tier["unjudged"] == 2
    assert (tier["estimate"], tier["low"], tier["high"]) == (pytest.approx(15 / 18), pytest.approx(low),
                                                             pytest.approx(high))
    assert q["quality_per_tier"]["premium"]["assumed"] and q["quality_per_tier"]["premium"]["estimate"] == 1.0
    assert q["quality_n"] == 18 and q["quality_unjudged"] == 2
    assert q["quality_estimate"] == pytest.approx((60 * 15 / 18 + 40) / 100)
    assert q["quality_low"] == pytest.approx((60 * low + 40) / 100)
    assert q["quality_high"] == pytest.approx((60 * high + 40) / 100)
    assert q["quality_rows"] == q["quality_answered_rows"] == 100  # duplicates were never answered by a tier
    assert "quality_accuracy" not in q  # no references


def test_tiers_never_shadowed_are_not_estimated_and_failed_rows_are_not_acceptable():
    res = results({"small": 50, "mid": 30, "premium": 20}, failed={"small": 10, "premium": 2})
    q = estimate_quality(pairs(["7"] * 10, ["7"] * 10, start=10), res, "premium")
    assert q["quality_per_tier"]["mid"] == {"rows": 30, "ok_rows": 30, "estimate": None, "n": 0, "unjudged": 0,
                                            "note": "not estimated"}
    assert q["quality_rows"] == 70 and q["quality_answered_rows"] == 100
    low, _ = wilson_interval(10, 10)
    # small: 40 ok rows at 1.0 and 10 failed at 0; premium: 18 ok at 1 (by definition), 2 failed
    assert q["quality_estimate"] == pytest.approx((40 + 18) / 70)
    assert q["quality_low"] == pytest.approx((40 * low + 18) / 70)


def test_no_judged_pair_no_batch_estimate():
    res = results({"cheap": 10, "premium": 5})
    for p in (None, pairs(["a text"], ["another text"])):
        q = estimate_quality(p, res, "premium")
        assert q["quality_estimate"] is None and q["quality_n"] == 0 and q["quality_rows"] == 0
        assert q["quality_per_tier"]["cheap"]["note"] == "not estimated"
    assert estimate_quality(pairs(["yes"], ["no"]), res, "premium")["quality_unjudged"] == 1


def test_with_references_the_report_says_whether_the_interval_covers_the_measured_accuracy():
    # 20 cheap rows shadowed, 16 agree with premium; references say 15 of the 20 are right (premium wrong once)
    res = results({"cheap": 20, "premium": 10}, correct=[True] * 15 + [False] * 5 + [True] * 10)
    q = estimate_quality(pairs(["1"] * 16 + ["2"] * 4, ["1"] * 20), res, "premium")
    tier = q["quality_per_tier"]["cheap"]
    assert tier["shadow_accuracy"] == 0.75 and tier["shadow_graded"] == 20
    assert tier["covers_shadow_accuracy"] is (tier["low"] <= 0.75 <= tier["high"]) is True
    assert q["quality_accuracy"] == pytest.approx(25 / 30) and q["quality_accuracy_graded"] == 30
    assert q["quality_covers_accuracy"] is (q["quality_low"] <= 25 / 30 <= q["quality_high"])
    far = estimate_quality(pairs(["1"] * 20, ["1"] * 20), results({"cheap": 20}, correct=[False] * 20), None)
    assert far["quality_per_tier"]["cheap"]["covers_shadow_accuracy"] is False


def test_structured_rows_compare_parsed_values():
    schema = json.dumps({"enum": ["yes", "no"]})
    res = results({"cheap": 3, "premium": 1}, schema=schema)
    q = estimate_quality(pairs(['"yes"', '"no"', '"yes"'], ['"yes"', '"yes"', "maybe"]), res, "premium")
    assert q["quality_per_tier"]["cheap"]["n"] == 2 and q["quality_per_tier"]["cheap"]["acceptable"] == 1
    assert q["quality_unjudged"] == 1  # the premium answer was not one of the choices


def test_quality_floor():
    assert quality_check({"quality_low": 0.8}, None) == {}
    assert quality_check({"quality_low": 0.92, "quality_estimate": 0.95, "quality_n": 40}, 0.9)["quality_alert"] is None
    alert = quality_check({"quality_low": 0.71, "quality_estimate": 0.82, "quality_n": 40}, 0.9)
    assert alert["min_quality"] == 0.9 and "0.71 is under the floor 0.90" in alert["quality_alert"]
    assert "could not be checked" in quality_check({"quality_low": None}, 0.9)["quality_alert"]


def landed_results():
    """A minimal assembled results table (RESULT_COLUMNS) with 4 cheap rows (2 shadowed) and 2 premium rows."""
    from sluice.warehouse.db import RESULT_COLUMNS

    tiers = ["cheap"] * 4 + ["premium"] * 2
    df = pl.DataFrame({"row_id": [f"r{i}" for i in range(6)], "tier": tiers, "status": ["ok"] * 6,
                       "cost_usd": [0.001] * 6, "baseline_cost_usd": [0.01] * 6, "dup_kind": [None] * 6,
                       "row_index": list(range(6)), "shadow": [True, True] + [False] * 4},
                      schema_overrides={"dup_kind": pl.String})
    return df.with_columns([pl.lit(None).alias(c) for c in RESULT_COLUMNS if c not in df.columns]).with_columns(
        pl.lit("r").alias("run_id"), pl.lit("ds").alias("dataset"), pl.lit(0).alias("input_tokens"),
        pl.lit(0).alias("output_tokens"))


def test_landed_in_runs_and_printed_in_the_summary(tmp_path):
    res = landed_results()
    q = estimate_quality(pairs(["12", "13"], ["12", "12"]), res, "premium")
    wh = str(tmp_path / "wh.duckdb")
    summary = land_results(wh, res, {"run_id": "r", "dataset": "ds", "min_quality": 0.9}, quality_estimate=q)
    with duckdb.connect(wh, read_only=True) as con:
        row = con.execute("SELECT quality_estimate, quality_low, quality_high, quality_n, quality_unjudged, "
                          "quality_per_tier, min_quality, quality_alert FROM runs").fetchone()
    assert row[0] == pytest.approx((4 * 0.5 + 2) / 6) and row[1] < row[0] < row[2] and row[3:5] == (2, 0)
    assert json.loads(row[5])["cheap"]["n"] == 2 and row[6] == 0.9 and "under the floor" in row[7]
    lines = dict(summary_lines(summary))
    assert lines["quality estimate"].startswith(f"{row[0]:.2f} [{row[1]:.2f}, {row[2]:.2f}] (n=2 judged shadow pairs")
    assert lines["quality estimate per tier"].startswith("cheap 0.50 [")
    assert "premium 1 (premium: acceptable by definition)" in lines["quality estimate per tier"]
    assert lines["quality floor"].startswith("0.90: quality lower bound")
    assert "quality estimate vs references" not in lines


def test_summaries_without_an_estimate_print_no_quality_lines():
    summary = {"rows": 1, "duplicates": 0, "quarantined": 0, "failed": 0, "rows_per_tier": {}, "cost_usd": 0.0,
               "baseline_cost_usd": 0.0, "saving_usd": 0.0, "saving_pct": 0.0}
    assert not [k for k, _ in summary_lines(summary) if k.startswith("quality")]
