"""A real Prefect flow run of the whole pipeline: real vLLM engine (tiny model), real HTTP API tiers on loopback,
a real DuckDB file."""

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
    rows = {r[0]: r[1:] for r in con.execute(
        "select row_id, tier, status, dup_of, cost_usd, baseline_cost_usd, input_tokens, response, model "
        "from results where run_id = 'run-1'").fetchall()}
    assert sorted(rows) == [f"q{i}" for i in range(8)]  # exactly one row per input row
    assert rows["q1"][:4] == (None, "duplicate", "q0", 0.0) and rows["q1"][6] == rows["q0"][6]
    assert rows["q6"][2] == "q4" and rows["q6"][4] == 0.0 and rows["q6"][5] == pytest.approx(rows["q4"][5])
    assert rows["q7"][1] == "quarantined"
    assert rows["q4"][6] == len("Prove that the square root of 2 is irrational.".split())  # server's usage
    assert rows["q4"][4] == pytest.approx(rows["q4"][5])  # premium row costs exactly its baseline
    assert rows["q0"][7] is not None and rows["q0"][7] == rows["q1"][7]  # the duplicate got the same answer
    # the API tiers saw exactly their own rows, once each: duplicates were never sent
    sent = sorted(r.body["messages"][-1]["content"] for r in openai_server.received)
    assert sent == sorted([PROMPTS[3], PROMPTS[4], PROMPTS[5]])
    total = con.execute("select sum(cost_usd), sum(baseline_cost_usd) from results").fetchone()
    assert total[0] == pytest.approx(summary["cost_usd"]) and total[0] < total[1]
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
