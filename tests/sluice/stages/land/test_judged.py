"""What the judge of free-text shadow pairs did, as the land stage lands it (sluice/stages/land/judged.py,
estimate.py): its outcomes in the quality estimate (a split is not acceptable; unparseable verdicts and failed
requests unjudged, counted apart), its requests in `attempts` after each row's own, and its cost as the run's own
line: in runs.judge_cost_usd, the summary and the total, never in a row's or a tier's cost."""

import json

import duckdb
import polars as pl
import pytest

from sluice.contracts.judging import JUDGE_ATTEMPT_SCHEMA
from sluice.reports.summary import summary_lines, summary_table
from sluice.runs import write_parquet
from sluice.stages.land.estimate import estimate_quality
from sluice.stages.land.judged import judge_attempts, judge_line, judge_outcomes, judge_spend
from sluice.stages.land.results import land_results
from sluice.stats import wilson_interval
from sluice.warehouse.db import RESULT_COLUMNS

OUTCOMES = ["acceptable", "acceptable", "unacceptable", "split", "unparseable", "failed"]
VERDICT = {"acceptable": True, "unacceptable": False, "split": False, "unparseable": None, "failed": None}


def results() -> pl.DataFrame:
    """10 cheap rows (r0-r9; the first 7 shadowed) and 2 premium rows, landed-shape."""
    tiers = ["cheap"] * 10 + ["premium"] * 2
    df = pl.DataFrame({"row_id": [f"r{i}" for i in range(12)], "tier": tiers, "status": ["ok"] * 12,
                       "cost_usd": [0.001] * 12, "baseline_cost_usd": [0.01] * 12, "dup_kind": [None] * 12,
                       "row_index": list(range(12)), "shadow": [True] * 7 + [False] * 5},
                      schema_overrides={"dup_kind": pl.String})
    return df.with_columns([pl.lit(None).alias(c) for c in RESULT_COLUMNS if c not in df.columns]).with_columns(
        pl.lit("run").alias("run_id"), pl.lit("ds").alias("dataset"), pl.lit(0).alias("input_tokens"),
        pl.lit(0).alias("output_tokens"))


def shadow_pairs() -> pl.DataFrame:
    """r0-r5 free text (put to the judge), r6 a number pair (compared by shape, never the judge's)."""
    return pl.DataFrame({"row_id": [f"r{i}" for i in range(7)],
                         "response": [f"cheap text {i}" for i in range(6)] + ["it is 12"],
                         "_shadow_response": [f"premium text {i}" for i in range(6)] + ["12"]})


def write_judge_files(run_dir, cost_per_request=0.0005):
    write_parquet(pl.DataFrame({"row_id": [f"r{i}" for i in range(6)], "tier": ["cheap"] * 6,
                                "judge_tier": ["premium"] * 6, "outcome": OUTCOMES,
                                "acceptable": [VERDICT[o] for o in OUTCOMES],
                                "reason": [f"judged {o}" for o in OUTCOMES]}),
                  run_dir / "judge" / "verdicts.parquet")
    asked = pl.DataFrame([{"row_id": f"r{i}", "order": order, "tier": "premium", "model": "premium-test",
                           "status": "failed" if o == "failed" else "invalid" if o == "unparseable" else "ok",
                           "error": "HTTP 500" if o == "failed" else "unparseable verdict: 'ok'"
                           if o == "unparseable" else None,
                           "verdict": None, "response": "ACCEPTABLE", "input_tokens": 100, "output_tokens": 1,
                           "latency_ms": 5.0, "cost_usd": 0.0 if o == "failed" else cost_per_request}
                          for i, o in enumerate(OUTCOMES) for order in ("cheap_first", "cheap_second")],
                         schema=pl.Schema(JUDGE_ATTEMPT_SCHEMA))
    write_parquet(asked, run_dir / "judge" / "attempts.parquet")
    return asked


def test_judged_pairs_enter_the_estimate_and_the_rest_are_counted_apart(tmp_path):
    write_judge_files(tmp_path)
    q = estimate_quality(shadow_pairs(), results(), "premium", judged=judge_outcomes(tmp_path))
    cheap = q["quality_per_tier"]["cheap"]
    # judged: 2 acceptable + 1 unacceptable + 1 split (not acceptable) by the judge, + the number pair (12 == 12)
    assert cheap["n"] == 5 and cheap["acceptable"] == 3 and cheap["unjudged"] == 2
    assert (cheap["low"], cheap["high"]) == pytest.approx(wilson_interval(3, 5))
    assert (cheap["judged_by_judge"], cheap["split"], cheap["unparseable"], cheap["judge_failed"]) == (4, 1, 1, 1)
    assert (q["quality_n"], q["quality_unjudged"], q["quality_unparseable"], q["quality_judge_failed"]) == (5, 2, 1, 1)
    # without the judge's outcomes, every free-text pair is unjudged, as before
    plain = estimate_quality(shadow_pairs(), results(), "premium")
    assert (plain["quality_n"], plain["quality_unjudged"], plain["quality_unparseable"]) == (1, 6, 0)
    assert "judged_by_judge" not in plain["quality_per_tier"]["cheap"]


def test_the_judges_requests_are_numbered_after_each_rows_own_attempts(tmp_path):
    write_judge_files(tmp_path)
    every = pl.DataFrame({"row_id": ["r0", "r0", "r1"], "attempt": [1, 2, 1], "kind": ["first", "shadow", "first"],
                          "tier": ["cheap", "premium", "cheap"], "model": ["c", "p", "c"], "status": ["ok"] * 3,
                          "error": [None] * 3, "schema_valid": [None] * 3, "input_tokens": [1] * 3,
                          "output_tokens": [1] * 3, "latency_ms": [1.0] * 3, "cost_usd": [0.1] * 3,
                          "mean_logprob": [None] * 3, "response": ["a"] * 3},
                         schema_overrides={"schema_valid": pl.Boolean, "mean_logprob": pl.Float64,
                                           "error": pl.String})
    asked = judge_attempts(tmp_path, every)
    assert asked.columns == every.columns and (asked["kind"] == "judge").all()
    mine = {r: asked.filter(pl.col("row_id") == r)["attempt"].to_list() for r in ("r0", "r1", "r2")}
    assert mine == {"r0": [3, 4], "r1": [2, 3], "r2": [1, 2]}
    assert judge_attempts(tmp_path / "elsewhere", every) is None


def test_the_judges_cost_is_its_own_line_and_the_totals_add_up(tmp_path):
    asked = write_judge_files(tmp_path)
    res = results()
    every = judge_attempts(tmp_path, pl.DataFrame(schema={"row_id": pl.String, "attempt": pl.Int64,
                                                          **{c: pl.String for c in ("kind", "tier", "model",
                                                                                    "status", "error", "response")},
                                                          "schema_valid": pl.Boolean, "input_tokens": pl.Int64,
                                                          "output_tokens": pl.Int64, "latency_ms": pl.Float64,
                                                          "cost_usd": pl.Float64, "mean_logprob": pl.Float64}))
    line = judge_line(every, judge_outcomes(tmp_path))
    judge_usd = float(asked["cost_usd"].sum())
    assert line == {"judge_tier": "premium", "judge_cost_usd": pytest.approx(judge_usd), "judge_requests": 12,
                    "judge_pairs": 6}
    q = estimate_quality(shadow_pairs(), res, "premium", judged=judge_outcomes(tmp_path))
    wh = str(tmp_path / "wh.duckdb")
    summary = land_results(wh, res, {"run_id": "run", "dataset": "ds"}, attempts=every, quality_estimate=q,
                           judge=line)
    rows_usd = float(res["cost_usd"].sum())
    # no tier carries the judge: the tiers' lines plus the judge's line are the total; the saving is net of it
    assert sum(summary["cost_per_tier_usd"].values()) == pytest.approx(rows_usd)
    assert summary["cost_usd"] == pytest.approx(rows_usd + judge_usd)
    assert summary["saving_usd"] == pytest.approx(float(res["baseline_cost_usd"].sum()) - rows_usd - judge_usd)
    with duckdb.connect(wh, read_only=True) as con:
        run = con.execute("SELECT cost_usd, judge_tier, judge_cost_usd, quality_unjudged, quality_unparseable, "
                          "quality_judge_failed, quality_per_tier FROM runs").fetchone()
        landed_rows = con.execute("SELECT sum(cost_usd) FROM results").fetchone()[0]
        by_kind = dict(con.execute("SELECT kind, sum(cost_usd) FROM attempts GROUP BY kind").fetchall())
        errors = con.execute("SELECT stage, count(*) FROM errors GROUP BY stage").fetchall()
        final = con.execute("SELECT count(*) FROM genai_usage WHERE attempt_kind = 'judge' AND final_answer"
                            ).fetchone()[0]
    assert run[0] == pytest.approx(rows_usd + judge_usd) and run[1:3] == ("premium", pytest.approx(judge_usd))
    assert run[3:6] == (2, 1, 1) and json.loads(run[6])["cheap"]["split"] == 1
    assert landed_rows == pytest.approx(rows_usd)  # results: what answering each row cost, no judge in it
    assert by_kind == {"judge": pytest.approx(judge_usd)}
    assert errors == [("review", 4)]  # the failed and the unparseable requests, as the review's
    assert final == 0  # a judge's verdict is never a row's answer
    lines = dict(summary_lines(summary))
    assert lines["judge on premium (quality assurance)"] == f"6 free-text shadow pairs, 12 requests  (${judge_usd:.6f})"
    assert lines["total cost"] == f"${rows_usd + judge_usd:.6f}"
    assert "2 unjudged pairs (1 unparseable verdicts, 1 failed at the judge) left out" in lines["quality estimate"]
    assert "cheap 0.60 [" in lines["quality estimate per tier"]
    assert "4 by the judge of which 1 split" in lines["quality estimate per tier"]
    table = {r["tier"]: r for r in summary_table(summary)}
    assert table["judge on premium (quality assurance)"]["cost_usd"] == pytest.approx(judge_usd, abs=1e-6)
    assert table["total"]["cost_usd"] == pytest.approx(sum(
        r["cost_usd"] for t, r in table.items() if t in ("cheap", "premium", "judge on premium (quality assurance)")),
        abs=1e-6)


def test_no_judge_no_line():
    assert judge_spend({"cost_usd": 1.0, "baseline_cost_usd": 2.0}, None) == {}
    assert judge_line(None, None) is None
