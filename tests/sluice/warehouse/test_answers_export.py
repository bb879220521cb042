"""`sluice answers export`: a tier's recorded answers out of the warehouse, one row per request (latest wins), with
each attempt's own tokens; shadow, escalated and retried answers included; the file is a replay tier's source.

The warehouse: the hand-built sample (runs r1 and r2 of dataset `ds`, landed without `attempts`), plus run r3 of
dataset `ds2` (2026-01-07) landed with its attempts:
    t1  "prompt r4" again (r1 answered it on premium): premium first answer            -> the newer answer wins
    t2  a chat, kept on small; its shadow answer on premium                             -> exported as messages
    t3  small, escalated to premium (results add both attempts' tokens)                 -> premium's own tokens
    t4  premium answer failing its schema, then the retry on premium                   -> only the valid retry
"""

import json
from datetime import datetime, timezone

import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from models.backends import Request, make_backend
from models.catalogue import Tier
from sluice.cli.app import app
from sluice.stages.land.results import land_results
from sluice.warehouse.answers import recorded_answers
from sluice.warehouse.db import ATTEMPT_COLUMNS
from tests.support.sample_warehouse import build_sample_warehouse, results_frame

HISTORY = json.dumps([["user", "hi"], ["assistant", "hello"]])
R3 = [  # row_id, status, tier, model, in, out, latency, cost, baseline, dup_of, dup_kind, max_tokens, error
    ("t1", "ok", "premium", "premium-model", 310, 120, 900.0, 0.002, 0.002, None, None, None, None),
    ("t2", "ok", "small", "small-model", 90, 40, 100.0, 0.001, 0.001, None, None, None, None),
    ("t3", "ok", "premium", "premium-model", 100, 35, 800.0, 0.001, 0.001, None, None, None, None),
    ("t4", "ok", "premium", "premium-model", 80, 30, 700.0, 0.001, 0.001, None, None, None, None),
]
ATTEMPTS = [  # row_id, attempt, kind, tier, status, in, out, response
    ("t1", 1, "first", "premium", "ok", 310, 120, "newer answer r4"),
    ("t2", 1, "first", "small", "ok", 40, 10, "small t2"),
    ("t2", 2, "shadow", "premium", "ok", 50, 30, "premium t2"),
    ("t3", 1, "first", "small", "ok", 30, 15, "small t3"),
    ("t3", 2, "escalation", "premium", "ok", 70, 20, "premium t3"),
    ("t4", 1, "first", "premium", "invalid", 40, 15, "not json"),
    ("t4", 2, "retry", "premium", "ok", 40, 15, "premium t4 fixed"),
]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    path = build_sample_warehouse(tmp_path_factory.mktemp("wh") / "wh.duckdb")
    final = {"t1": "newer answer r4", "t2": "small t2", "t3": "premium t3", "t4": "premium t4 fixed"}
    results = results_frame("r3", R3).with_columns(
        pl.lit("ds2").alias("dataset"),
        pl.col("row_id").replace_strict(final).alias("response"),
        pl.col("row_id").replace_strict({"t1": "prompt r4", "t2": "chat prompt", "t3": "prompt t3",
                                         "t4": "prompt t4"}).alias("prompt"),
        pl.when(pl.col("row_id") == "t2").then(pl.lit("Be kind.")).alias("system"),
        pl.when(pl.col("row_id") == "t2").then(pl.lit(HISTORY)).alias("history"),
    )
    attempts = pl.DataFrame(
        [{"row_id": r, "attempt": a, "kind": k, "tier": t, "model": f"{t}-model", "status": s, "error": None,
          "schema_valid": None, "input_tokens": i, "output_tokens": o, "latency_ms": 10.0, "cost_usd": 0.001,
          "mean_logprob": None, "response": resp, "usage_estimated": False}
         for r, a, k, t, s, i, o, resp in ATTEMPTS],
        schema_overrides={"error": pl.String, "schema_valid": pl.Boolean, "mean_logprob": pl.Float64})
    run = {"run_id": "r3", "dataset": "ds2", "source": "ds2.parquet", "billing": {},
           "started_at": datetime(2026, 1, 7, 8, 0, tzinfo=timezone.utc),
           "finished_at": datetime(2026, 1, 7, 8, 1, tzinfo=timezone.utc)}
    assert [c for c in ATTEMPT_COLUMNS if c not in attempts.columns] == ["run_id"]
    land_results(path, results, run, attempts=attempts)
    return path


def test_every_ok_answer_of_the_tier_once_per_request_latest_first(warehouse):
    t = recorded_answers(warehouse, "premium")
    rows = {r["row_id"]: r for r in t.to_pylist()}
    # r4's prompt was answered again by r3/t1: the newer answer wins; r5 comes from a run without attempts
    assert [r["row_id"] for r in t.to_pylist()] == ["t1", "t2", "t3", "t4", "r5"]
    assert (rows["t1"]["response"], rows["t1"]["input_tokens"], rows["t1"]["run_id"]) == ("newer answer r4", 310, "r3")
    assert (rows["r5"]["response"], rows["r5"]["kind"], rows["r5"]["input_tokens"]) == ("answer r5", "result", 100)
    # the shadow answer of a row the small tier kept, with its conversation
    t2 = rows["t2"]
    assert (t2["response"], t2["kind"], t2["input_tokens"], t2["output_tokens"]) == ("premium t2", "shadow", 50, 30)
    assert t2["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "hello"}, {"role": "user", "content": "chat prompt"}]
    assert t2["finish_reason"] is None  # not the row's kept answer: its finish reason was not landed
    # an escalated row: premium's own tokens, not the row's sum over both tiers
    assert (rows["t3"]["kind"], rows["t3"]["input_tokens"], rows["t3"]["output_tokens"]) == ("escalation", 70, 20)
    assert rows["t3"]["finish_reason"] == "stop"
    assert (rows["t4"]["response"], rows["t4"]["kind"]) == ("premium t4 fixed", "retry")
    # failed rows and duplicates (even a cache hit of a premium answer) are no recorded answers
    assert "r7" not in rows and "s4" not in rows
    assert {r["model"] for r in t.to_pylist()} == {"premium-model"}


def test_dataset_and_since_filters(warehouse):
    assert recorded_answers(warehouse, "premium", dataset="ds")["row_id"].to_pylist() == ["r4", "r5"]
    since = datetime(2026, 1, 6, tzinfo=timezone.utc)
    assert recorded_answers(warehouse, "premium", since=since)["row_id"].to_pylist() == ["t1", "t2", "t3", "t4"]
    assert recorded_answers(warehouse, "small", dataset="ds2")["row_id"].to_pylist() == ["t2", "t3"]


def test_the_export_command_writes_a_file_a_replay_tier_answers_from(warehouse, tmp_path):
    out = tmp_path / "premium.parquet"
    res = CliRunner().invoke(app, ["answers", "export", "--tier", "premium", "-o", str(out),
                                   "--warehouse", str(warehouse)])
    assert res.exit_code == 0, res.output
    assert "5 recorded answers of tier premium" in res.output
    assert pq.read_table(out).num_rows == 5
    tier = Tier(name="premium", backend="replay", model="premium-model", answers=out, input_usd_per_1m=2.5,
                output_usd_per_1m=10.0)
    chat = Request("a", "chat prompt", "Be kind.", 64, history=(("user", "hi"), ("assistant", "hello")))
    again = Request("b", "prompt r4", None, 64)
    a, b = make_backend(tier).complete([chat, again]).completions
    assert (a.text, a.input_tokens, a.output_tokens, a.usage_estimated) == ("premium t2", 50, 30, False)
    assert (b.text, b.input_tokens) == ("newer answer r4", 310)


def test_export_refuses_a_tier_without_answers_or_a_missing_warehouse(warehouse, tmp_path):
    out = tmp_path / "x.parquet"
    res = CliRunner().invoke(app, ["answers", "export", "--tier", "mid", "-o", str(out), "--warehouse", str(warehouse)])
    assert res.exit_code == 2 and "no answers by tier 'mid'" in res.output
    assert "tiers with answers: premium, small" in res.output and not out.exists()
    res = CliRunner().invoke(app, ["answers", "export", "--tier", "premium", "-o", str(out),
                                   "--warehouse", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2 and "no warehouse" in res.output
