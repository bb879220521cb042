"""Land grades every row with a reference: right, wrong, malformed, failed, duplicates against their own reference,
quarantined and reference-less rows ungraded; the run's accuracy overall and per tier goes to the summary and
`runs`; the summary and the Prefect table show it next to the cost."""

import json

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from sluice.config import RouterSettings
from sluice.contracts.columns import ANSWER_SCHEMA
from sluice.reports.summary import summary_lines, summary_table
from sluice.stages.dedup.deduplicate import exact_duplicates
from sluice.stages.ingest.read import validate_prompts
from sluice.stages.land.grading import grade_results
from sluice.stages.land.results import assemble_results, land_results, summarise
from sluice.stages.route.assign import heuristic_route

ROWS = [
    # id, prompt, reference, grader, tier, answer (None: the tier failed the row)
    ("n1", "What is 6 times 7?", "42", None, "small", "6 x 7 = 42."),           # right
    ("n2", "what is  6 times 7?", "41", None, None, None),                     # duplicate of n1: wrong for its ref
    ("n3", "What is 9 times 9?", "81", None, "small", "I am not sure."),      # malformed: no number
    ("c1", "Pick one: A, B or C?", "B", None, "premium", "The answer is (B)."),  # right
    ("c2", "Pick two: A, B or C?", "C", None, "premium", None),                # failed: wrong, no answer
    ("e1", "Capital of France?", "Paris", "exact", "premium", "Paris."),      # right
    ("k1", "Describe Rome briefly", "rome", "contains", "small", "Rome is old."),
    ("x1", "Tell me a story", None, None, "small", "Once upon a time."),      # no reference: not graded
    ("q1", None, "42", None, None, None),                                     # quarantined: not graded
    ("u1", "How many legs?", "eight", "number", "small", "8"),                # reference unusable: not graded
]
EXPECTED = {"n1": True, "n2": False, "n3": False, "c1": True, "c2": False, "e1": True, "k1": True, "x1": None,
            "q1": None, "u1": None}


def routed():
    t = validate_prompts(pa.table({"id": [r[0] for r in ROWS], "prompt": [r[1] for r in ROWS],
                                   "reference": [r[2] for r in ROWS], "grader": [r[3] for r in ROWS]}))
    return heuristic_route(exact_duplicates(t), ["small", "mid", "premium"], RouterSettings())


def answers():
    out = []
    for rid, _, _, _, tier, text in ROWS:
        if tier is None:
            continue
        ok = text is not None
        out.append({"row_id": rid, "tier": tier, "model": f"{tier}-m", "response": text,
                    "status": "ok" if ok else "failed", "error": None if ok else "HTTP 500: boom",
                    "input_tokens": 10, "output_tokens": 5, "latency_ms": 1.0, "finish_reason": "stop",
                    "cost_usd": 0.001 if tier == "small" else 0.01, "baseline_cost_usd": 0.01})
    return [pa.Table.from_pylist(out, schema=ANSWER_SCHEMA)]


@pytest.fixture
def results():
    return assemble_results(routed(), answers(), "r1", "ds")


def test_every_row_gets_its_verdict_and_reason(results):
    by = {r["row_id"]: r for r in results.to_dicts()}
    assert {k: by[k]["correct"] for k in by} == EXPECTED
    assert by["n2"]["status"] == "duplicate" and by["n2"]["response"] == "6 x 7 = 42."
    assert by["n2"]["grade_reason"] == "expected 41, got 42"
    assert by["n3"]["grade_reason"] == "no number in the answer"
    assert by["c2"]["status"] == "failed" and by["c2"]["grade_reason"] == "no answer: the row failed"
    assert by["u1"]["grade_reason"] == "reference 'eight' holds no number"
    assert by["q1"]["status"] == "quarantined" and by["q1"]["grade_reason"] is None
    # the grader that compared: auto resolved by the reference's shape; NULL when not graded
    assert {k: by[k]["grader"] for k in ("n1", "c1", "e1", "k1", "x1", "q1")} == {
        "n1": "number", "c1": "choice", "e1": "exact", "k1": "contains", "x1": None, "q1": None}
    assert by["q1"]["reference"] == "42"  # the reference itself is landed for every row


def test_the_summary_has_accuracy_overall_and_per_tier(results):
    s = summarise(results)
    graded = {k: v for k, v in EXPECTED.items() if v is not None}
    assert s["graded"] == len(graded) == 7
    assert s["correct"] == sum(graded.values()) == 4
    assert s["accuracy"] == pytest.approx(4 / 7)
    assert s["accuracy_per_tier"] == {
        "premium": {"graded": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)},   # c1, c2, e1
        "small": {"graded": 3, "correct": 2, "accuracy": pytest.approx(2 / 3)},     # n1, n3, k1
        "(not sent)": {"graded": 1, "correct": 0, "accuracy": 0.0},                  # n2
    }
    lines = dict(summary_lines(s))
    assert lines["accuracy (graded rows)"] == "0.571  (4 of 7 rows correct)"
    assert lines["accuracy per tier"] == "premium 0.67 (2/3); small 0.67 (2/3); (not sent) 0.00 (0/1)"
    table = {r["tier"]: r for r in summary_table(s)}
    assert table["small"]["accuracy"] == pytest.approx(0.6667) and table["total"]["accuracy"] == pytest.approx(0.5714)
    assert table["duplicates (answered free)"]["accuracy"] == 0.0 and table["quarantined"]["accuracy"] is None


def test_without_references_nothing_is_graded_and_the_summary_reads_as_before():
    t = validate_prompts(pa.table({"id": ["a"], "prompt": ["hi"]}))
    r = heuristic_route(exact_duplicates(t), ["small", "premium"], RouterSettings())
    res = assemble_results(r, [pa.Table.from_pylist([answers()[0].to_pylist()[0] | {"row_id": "a"}],
                                                    schema=ANSWER_SCHEMA)], "r", "d")
    assert res["correct"].to_list() == [None] and res["grade_reason"].to_list() == [None]
    s = summarise(res)
    assert (s["graded"], s["accuracy"], s["accuracy_per_tier"]) == (0, None, {})
    assert not any("accuracy" in k for k, _ in summary_lines(s))
    assert all("accuracy" not in row for row in summary_table(s))


def test_structured_answers_are_graded_by_their_parsed_value():
    df = pl.DataFrame({
        "status": ["ok", "ok", "ok"],
        "response": ['{"label": "positive"}', '"negative"', "junk"],
        "parsed": ['{"label": "positive"}', '"negative"', None],
        "reference": ['{"label": "positive"}', "negative", '{"label": "x"}'],
        "grader": [None, "exact", None],
    })
    out = grade_results(df)
    assert out["correct"].to_list() == [True, True, False]
    assert out["grade_reason"][2] == "the answer is not valid JSON"


def test_an_unknown_grader_in_a_hand_built_table_does_not_stop_the_landing():
    out = grade_results(pl.DataFrame({"status": ["ok"], "response": ["x"], "reference": ["x"], "grader": ["fuzzy"]}))
    assert out["correct"].to_list() == [None] and "grader 'fuzzy'" in out["grade_reason"][0]


def test_runs_records_accuracy_graded_rows_and_accuracy_per_tier(tmp_path, results):
    wh = tmp_path / "wh.duckdb"
    summary = land_results(wh, results, {"run_id": "r1", "dataset": "ds"})
    with duckdb.connect(str(wh), read_only=True) as con:
        acc, graded, per_tier = con.execute(
            "SELECT accuracy, graded_rows, accuracy_per_tier FROM runs WHERE run_id = 'r1'").fetchone()
        landed = dict(con.execute("SELECT row_id, correct FROM results").fetchall())
    assert landed == EXPECTED
    assert (acc, graded) == (pytest.approx(4 / 7), 7)
    assert json.loads(per_tier) == json.loads(json.dumps(summary["accuracy_per_tier"]))
