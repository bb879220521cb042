"""The `errors` table: one row per failure a run met (a failed or invalid attempt, a quarantined row), landed with
the run and replaced with it."""

import duckdb
import polars as pl
import pyarrow as pa

from sluice.config import RouterSettings
from sluice.contracts.columns import ANSWER_SCHEMA
from sluice.stages.dedup.deduplicate import exact_duplicates
from sluice.stages.ingest.read import validate_prompts
from sluice.stages.land.errors import error_rows
from sluice.stages.land.results import assemble_results, land_results
from sluice.stages.route.assign import heuristic_route


def results():
    rows = heuristic_route(exact_duplicates(validate_prompts(pa.table({"prompt": ["What is 2+2?", "Name a colour.",
                                                                                  None]}))),
                           ["small", "mid", "premium"], RouterSettings())
    ok = {f: None for f in ANSWER_SCHEMA.names} | {"row_id": "0", "tier": "small", "model": "m", "response": "4",
                                                   "status": "ok", "input_tokens": 5, "output_tokens": 1,
                                                   "cost_usd": 0.001, "baseline_cost_usd": 0.01}
    failed = ok | {"row_id": "1", "response": None, "status": "failed", "error": "HTTP 500 after 4 attempts"}
    return assemble_results(rows, [pa.Table.from_pylist([ok, failed], schema=ANSWER_SCHEMA)], "r1", "ds")


ATTEMPTS = pl.DataFrame({
    "row_id": ["0", "1", "1"], "attempt": [1, 1, 2], "kind": ["first", "first", "retry"],
    "tier": ["small", "small", "small"], "model": ["m"] * 3, "status": ["ok", "invalid", "failed"],
    "error": [None, "schema: missing 'stars'", "HTTP 500 after 4 attempts"], "schema_valid": [None, False, None],
    "input_tokens": [5, 5, 5], "output_tokens": [1, 3, 0], "latency_ms": [1.0, 1.0, 1.0],
    "cost_usd": [0.001, 0.001, 0.0], "mean_logprob": [None, None, None], "response": ["4", "x", None]})


def test_every_failure_is_a_row_with_its_stage_and_attempt():
    errs = error_rows(results(), ATTEMPTS).sort("row_id", "attempt")
    assert errs.select("stage", "tier", "row_id", "attempt").rows() == [
        ("infer", "small", "1", 1), ("review", "small", "1", 2), ("ingest", None, "2", 0)]
    assert errs["error"][2].endswith("prompt is null")


def test_landed_with_the_run_and_replaced_when_it_lands_again(tmp_path):
    wh = tmp_path / "wh.duckdb"
    res = results()
    for _ in range(2):
        land_results(wh, res, {"run_id": "r1", "dataset": "ds"}, attempts=ATTEMPTS)
    with duckdb.connect(str(wh), read_only=True) as con:
        got = con.execute("SELECT stage, row_id, error FROM errors WHERE run_id = 'r1' ORDER BY stage").fetchall()
    assert [(s, r) for s, r, _ in got] == [("infer", "1"), ("ingest", "2"), ("review", "1")]


def test_a_failed_row_no_failed_attempt_explains_is_a_row_too():
    rows = heuristic_route(exact_duplicates(validate_prompts(pa.table({"prompt": ["What is 2+2?", "What is 2+2?",
                                                                                  "Name a colour."]}))),
                           ["small", "mid", "premium"], RouterSettings())
    failed = {f: None for f in ANSWER_SCHEMA.names} | {"row_id": "0", "tier": "small", "model": "m",
                                                       "status": "failed", "error": "HTTP 500 after 4 attempts"}
    res = assemble_results(rows, [pa.Table.from_pylist([failed], schema=ANSWER_SCHEMA)], "r1", "ds")
    # row 0 failed (no attempts given: stage infer, attempt 1); row 1 is its duplicate; row 2 got no answer at all
    errs = error_rows(res, None).sort("row_id")
    assert errs.select("stage", "tier", "row_id", "attempt").rows() == [
        ("infer", "small", "0", 1), ("land", None, "1", 0), ("land", None, "2", 0)]
    assert errs["error"].to_list()[1:] == ["canonical row 0 failed: HTTP 500 after 4 attempts",
                                           "no answer was produced for this row"]
    # with the attempts, the failed attempt explains row 0: it is not counted twice
    attempts = ATTEMPTS.filter(pl.col("row_id") == "1").with_columns(pl.lit("0").alias("row_id"))
    assert sorted(error_rows(res, attempts)["row_id"].to_list()) == ["0", "0", "1", "2"]
