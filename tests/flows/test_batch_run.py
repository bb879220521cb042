"""A real Prefect flow run of the whole pipeline: real vLLM engine (tiny model), real HTTP API tiers on loopback,
a real DuckDB file."""

import json

import duckdb
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from flows.batch_run import sluice_run
from sluice.cli import app

pytestmark = pytest.mark.engine

PROMPTS = [
    "What is the capital of France?",                                     # small
    "what is the capital of  France?",                                    # exact duplicate of row 0
    "Label this support ticket as billing, technical or other: 'charged twice'",   # small
    "Write a polite reply declining a meeting invitation.",              # mid
    "Prove that the square root of 2 is irrational.",                     # premium
    "Write a Python function that reverses a linked list and explain its complexity.",  # premium
    "Prove that the square root of 2 is irrational.",                     # exact duplicate of row 4
    None,                                                                 # quarantined
]


@pytest.fixture
def dataset(tmp_path, write_parquet):
    return write_parquet(tmp_path / "nightly batch.parquet",
                         {"id": [f"q{i}" for i in range(len(PROMPTS))], "prompt": PROMPTS,
                          "max_tokens": pa.array([8] * len(PROMPTS), pa.int32())})


def test_flow_lands_every_row_once_with_costs(tmp_path, dataset, openai_server, test_catalogue, tiny_model_dir,
                                               monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_PREMIUM_KEY", "sk-test-flow")
    catalogue = test_catalogue(tiny_model_dir, openai_server.base_url)
    warehouse = tmp_path / "wh.duckdb"
    state = sluice_run(str(dataset), warehouse=str(warehouse), catalogue=str(catalogue),
                       data_dir=str(tmp_path / "data"), run_id="run-1", return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert (summary["rows"], summary["duplicates"], summary["quarantined"], summary["failed"]) == (8, 2, 1, 0)
    assert summary["rows_per_tier"] == {"small": 2, "mid": 1, "premium": 2}

    con = duckdb.connect(str(warehouse), read_only=True)
    cur = con.execute("select * from results where run_id = 'run-1'")
    names = [d[0] for d in cur.description]
    rows = {r["row_id"]: r for r in (dict(zip(names, t)) for t in cur.fetchall())}
    assert sorted(rows) == [f"q{i}" for i in range(8)]  # exactly one row per input row
    q0, q1, q4, q6 = rows["q0"], rows["q1"], rows["q4"], rows["q6"]
    assert (q1["tier"], q1["status"], q1["dup_of"], q1["cost_usd"], q1["input_tokens"]) == (
        None, "duplicate", "q0", 0.0, 0)
    assert q0["response"] is not None and q1["response"] == q0["response"]  # the duplicate got the same answer
    assert q1["baseline_cost_usd"] == pytest.approx(q0["baseline_cost_usd"]) and q0["baseline_cost_usd"] > 0
    assert (q6["dup_of"], q6["cost_usd"]) == ("q4", 0.0)
    assert q6["baseline_cost_usd"] == pytest.approx(q4["baseline_cost_usd"])
    assert rows["q7"]["status"] == "quarantined"
    assert q4["input_tokens"] == len("Prove that the square root of 2 is irrational.".split())  # server's usage
    assert q4["cost_usd"] == pytest.approx(q4["baseline_cost_usd"])  # a premium row costs exactly its baseline
    assert q0["tier"] == "small" and q0["model"] == str(tiny_model_dir) and q0["output_tokens"] <= 8
    # the API tiers saw exactly their own rows, once each: duplicates were never sent
    sent = sorted(r.body["messages"][-1]["content"] for r in openai_server.received)
    assert sent == sorted([PROMPTS[3], PROMPTS[4], PROMPTS[5]])
    total = con.execute("select sum(cost_usd), sum(baseline_cost_usd) from results").fetchone()
    assert total[0] == pytest.approx(summary["cost_usd"])
    # the self-hosted rows add up to the worker's billed time (engine start included) at its hourly price: on a
    # batch of 8 rows that start dominates, which is why a tiny batch can cost more self-hosted than on the API
    billing = json.loads(con.execute("select billing from runs where run_id='run-1'").fetchone()[0])
    small_cost = con.execute("select sum(cost_usd) from results where tier='small'").fetchone()[0]
    assert small_cost == pytest.approx(billing["small"]["billed_seconds"] * 0.36 / 3600)
    assert con.execute("select rows, duplicates, quarantined from runs where run_id='run-1'").fetchone() == (8, 2, 1)
    # the tier hand-off partitions are on disk, one per tier that had rows
    parts = sorted(p.parent.name for p in (tmp_path / "data" / "runs" / "run-1" / "routed").glob("*/part-0.parquet"))
    assert parts == ["tier=mid", "tier=premium", "tier=small"]


def test_cli_rejects_a_file_without_prompt_naming_file_and_column(tmp_path, write_parquet):
    bad = write_parquet(tmp_path / "no_prompt.parquet", {"question": ["hi"]})
    result = CliRunner().invoke(app, ["run", str(bad), "--warehouse", str(tmp_path / "wh.duckdb"),
                                      "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "no_prompt.parquet: missing required column 'prompt'" in out
    assert not (tmp_path / "wh.duckdb").exists()  # nothing was landed for it
