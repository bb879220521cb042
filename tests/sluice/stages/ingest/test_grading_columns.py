"""Ingest of the reference-grading columns: `reference` (text, or numbers and JSON values written as text) and
`grader` (a name, else the run's default); an unknown grader quarantines its row; neither column is part of the
request fingerprint or of what is sent to a model."""

import decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.contracts.shapes import RequestDefaults
from sluice.stages.dedup.deduplicate import exact_duplicates
from sluice.stages.infer.answer import requests_from
from sluice.stages.ingest.read import IngestError, read_prompts, validate_prompts


def rows(table):
    return {r["row_id"]: r for r in table.to_pylist()}


def test_text_references_and_grader_names_are_carried():
    t = validate_prompts(pa.table({
        "prompt": ["a?", "b?", "c?", "d?"],
        "reference": ["42", "  ", None, "Paris"],
        "grader": [" Number ", None, "exact", None],
    }))
    by = rows(t)
    assert [by[i]["reference"] for i in "0123"] == ["42", None, None, "Paris"]  # blank: no reference
    assert [by[i]["grader"] for i in "0123"] == ["number", None, "exact", None]
    assert all(r["status"] == "pending" for r in by.values())


def test_the_runs_grader_fills_rows_without_their_own():
    t = validate_prompts(pa.table({"prompt": ["a?", "b?"], "reference": ["x", "y"], "grader": ["json", None]}),
                         defaults=RequestDefaults(grader="contains"))
    assert t["grader"].to_pylist() == ["json", "contains"]
    # and without a grader column at all
    t = validate_prompts(pa.table({"prompt": ["a?"], "reference": ["x"]}), defaults=RequestDefaults(grader="exact"))
    assert t["grader"].to_pylist() == ["exact"]


def test_an_unknown_grader_quarantines_its_row_only():
    t = validate_prompts(pa.table({"prompt": ["a?", "b?"], "reference": ["1", "2"], "grader": ["fuzzy", "number"]}),
                         source="q.parquet")
    by = rows(t)
    assert by["0"]["status"] == "quarantined"
    assert by["0"]["error"] == ("q.parquet row 0: grader 'fuzzy' is not one of auto, exact, number, choice, "
                                "contains, json")
    assert by["1"]["status"] == "pending"


@pytest.mark.parametrize("array, expected", [
    (pa.array([42, -7, None], pa.int64()), ["42", "-7", None]),
    (pa.array([42.0, 0.5, float("nan")], pa.float64()), ["42", "0.5", None]),
    (pa.array([decimal.Decimal("1.50"), decimal.Decimal("1200"), None], pa.decimal128(10, 2)), ["1.5", "1200", None]),
    (pa.array([True, False, None], pa.bool_()), ["true", "false", None]),
    (pa.array([{"city": "Paris", "n": 1}, None, {"city": "Rome", "n": 2}]),
     ['{"city": "Paris", "n": 1}', None, '{"city": "Rome", "n": 2}']),
    (pa.array([[1, 2], [], None]), ["[1, 2]", "[]", None]),
    (pa.array(["x", None, "y"]).dictionary_encode(), ["x", None, "y"]),
])
def test_references_of_other_types_become_text(array, expected, tmp_path):
    path = tmp_path / "refs.parquet"
    pq.write_table(pa.table({"prompt": ["a?", "b?", "c?"], "reference": array}), path)
    t = read_prompts(path)
    assert t["reference"].to_pylist() == expected
    assert t["status"].to_pylist() == ["pending"] * 3


def test_an_infinite_reference_quarantines_its_row():
    t = validate_prompts(pa.table({"prompt": ["a?", "b?"], "reference": [float("inf"), 1.0]}))
    assert t["status"].to_pylist() == ["quarantined", "pending"]
    assert "reference=inf is not a finite number" in t["error"][0].as_py()


def test_reference_or_grader_columns_of_unusable_types_are_file_errors():
    with pytest.raises(IngestError, match="column 'reference' must hold text, numbers or JSON values, found "
                                          "timestamp"):
        validate_prompts(pa.table({"prompt": ["a?"], "reference": pa.array([0], pa.timestamp("s"))}), source="f")
    with pytest.raises(IngestError, match="column 'grader' must hold strings, found int64"):
        validate_prompts(pa.table({"prompt": ["a?"], "grader": [1]}), source="f")


def test_references_are_not_part_of_the_request_fingerprint():
    # the same request with different references (and graders) is still one request: answered once
    t = validate_prompts(pa.table({"prompt": ["What is 6 x 7?", "what is 6 x 7?", "What is 6 x 8?"],
                                   "reference": ["42", "41", "48"], "grader": ["number", "exact", None]}))
    d = exact_duplicates(t)
    assert d["status"].to_pylist() == ["pending", "duplicate", "pending"]
    assert d["dup_of"].to_pylist() == [None, "0", None]
    assert d["reference"].to_pylist() == ["42", "41", "48"]  # each row keeps its own reference to be graded by


def test_references_are_never_sent_to_a_model():
    t = validate_prompts(pa.table({"prompt": ["What is 6 x 7?"], "reference": ["42"], "grader": ["number"]}))
    (request,) = requests_from(t, 64)
    assert "42" not in repr(request) and "number" not in repr(request)
