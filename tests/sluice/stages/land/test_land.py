import duckdb
import pyarrow as pa
import pytest

from sluice.config import RouterSettings
from sluice.contracts.columns import ANSWER_SCHEMA
from sluice.stages.dedup.deduplicate import exact_duplicates
from sluice.stages.ingest.read import validate_prompts
from sluice.stages.land.results import assemble_results, land_results, summarise
from sluice.stages.route.assign import heuristic_route


def routed():
    table = validate_prompts(pa.table({
        "id": ["a", "b", "c", "d", "e"],
        "prompt": ["What is the capital of France?", "what is the capital of france?",
                   "Prove that the square root of 2 is irrational.", None, "Prove that 1 + 1 = 2."],
    }))
    return heuristic_route(exact_duplicates(table), ["small", "mid", "premium"], RouterSettings())


def answer(row_id, tier, status="ok", cost=0.001, baseline=0.01, inp=10, out=5, text="resp"):
    return {"row_id": row_id, "tier": tier, "model": f"{tier}-model", "response": text if status == "ok" else None,
            "status": status, "error": None if status == "ok" else "HTTP 500: boom", "input_tokens": inp,
            "output_tokens": out, "latency_ms": 12.5, "finish_reason": "stop", "cost_usd": cost,
            "baseline_cost_usd": baseline}


def answers():
    return [pa.Table.from_pylist([answer("a", "small", text="Paris.", cost=0.0001, baseline=0.0002)],
                                 schema=ANSWER_SCHEMA),
            pa.Table.from_pylist([answer("c", "premium", cost=0.003, baseline=0.003),
                                  answer("e", "premium", status="failed", cost=0.0, baseline=0.0)],
                                 schema=ANSWER_SCHEMA)]


def test_every_input_row_gets_exactly_one_result_with_its_fate():
    res = assemble_results(routed(), answers(), "r1", "ds")
    assert res["row_id"].to_list() == ["a", "b", "c", "d", "e"]
    by = {r["row_id"]: r for r in res.to_dicts()}
    assert by["a"]["status"] == "ok" and by["a"]["response"] == "Paris." and by["a"]["tier"] == "small"
    # the duplicate is answered from its canonical row, sends nothing, costs nothing, saves the premium price
    assert by["b"]["status"] == "duplicate" and by["b"]["dup_of"] == "a" and by["b"]["response"] == "Paris."
    assert (by["b"]["cost_usd"], by["b"]["input_tokens"], by["b"]["tier"]) == (0.0, 0, None)
    assert by["b"]["baseline_cost_usd"] == pytest.approx(0.0002)
    assert by["d"]["status"] == "quarantined" and "prompt is null" in by["d"]["error"]
    assert by["e"]["status"] == "failed" and by["e"]["error"] == "HTTP 500: boom"


def test_a_duplicate_of_a_failed_row_fails_with_the_reason():
    table = validate_prompts(pa.table({"prompt": ["Prove that 1 + 1 = 2.", "prove that 1 + 1 = 2."]}))
    r = heuristic_route(exact_duplicates(table), ["small", "mid", "premium"], RouterSettings())
    res = assemble_results(r, [pa.Table.from_pylist([answer("0", "premium", status="failed")],
                                                    schema=ANSWER_SCHEMA)], "r", "d")
    assert res["status"].to_list() == ["failed", "failed"]
    assert res["error"][1] == "canonical row 0 failed: HTTP 500: boom"


def test_a_pending_row_without_an_answer_is_landed_as_failed_not_lost():
    res = assemble_results(routed(), answers()[:1], "r1", "ds")
    by = {r["row_id"]: r for r in res.to_dicts()}
    assert by["c"]["status"] == "failed" and by["c"]["error"] == "no answer was produced for this row"


def test_a_row_answered_twice_is_refused():
    twice = answers() + answers()[:1]
    with pytest.raises(ValueError, match="answered twice"):
        assemble_results(routed(), twice, "r1", "ds")


def test_summary_numbers():
    s = summarise(assemble_results(routed(), answers(), "r1", "ds"))
    assert (s["rows"], s["duplicates"], s["quarantined"], s["failed"]) == (5, 1, 1, 1)
    assert s["rows_per_tier"] == {"premium": 2, "small": 1}
    assert s["cost_usd"] == pytest.approx(0.0031)
    assert s["baseline_cost_usd"] == pytest.approx(0.0002 + 0.0002 + 0.003)
    assert s["saving_usd"] == pytest.approx(0.0034 - 0.0031)


def test_landing_twice_replaces_the_run(tmp_path):
    wh = tmp_path / "wh.duckdb"
    res = assemble_results(routed(), answers(), "r1", "ds")
    land_results(wh, res, {"run_id": "r1", "dataset": "ds"})
    land_results(wh, res, {"run_id": "r1", "dataset": "ds"})
    con = duckdb.connect(str(wh), read_only=True)
    assert con.execute("select count(*) from results").fetchone() == (5,)
    assert con.execute("select count(*), sum(rows) from runs").fetchone() == (1, 5)
    assert con.execute("select status, count(*) from results group by 1 order by 1").fetchall() == [
        ("duplicate", 1), ("failed", 1), ("ok", 2), ("quarantined", 1)]


def test_landing_returns_the_summary_it_recorded(tmp_path):
    wh = tmp_path / "wh.duckdb"
    res = assemble_results(routed(), answers(), "r9", "ds")
    summary = land_results(wh, res, {"run_id": "r9", "dataset": "ds"})
    assert summary == summarise(res)
    with duckdb.connect(str(wh), read_only=True) as con:
        rows, cost = con.execute("select rows, cost_usd from runs where run_id = 'r9'").fetchone()
    assert rows == summary["rows"] == res.height == 5 and cost == pytest.approx(summary["cost_usd"])
