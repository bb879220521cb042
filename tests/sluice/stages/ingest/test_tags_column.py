"""Ingest's `tags` column: a struct or map of strings, or JSON text, into the row's own tags (JSON text); a bad value
quarantines its row with a reason naming file and row; a column that cannot hold string tags refuses the file."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.stages.ingest.read import IngestError, read_prompts


def ingest(tmp_path, tags: pa.Array):
    path = tmp_path / "batch.parquet"
    pq.write_table(pa.table({"prompt": [f"question {i}" for i in range(len(tags))], "tags": tags}), path)
    return read_prompts(path)


def own(table) -> list:
    return [t and json.loads(t) for t in table["tags"].to_pylist()]


def test_struct_map_and_json_tags(tmp_path):
    struct = pa.array([{"team": "search", "project": None}, None, {"team": "ads", "project": "x"}],
                      pa.struct([("team", pa.string()), ("project", pa.string())]))
    assert own(ingest(tmp_path, struct)) == [{"team": "search"}, None, {"project": "x", "team": "ads"}]
    mapped = pa.array([[("team", "search")], [], None], pa.map_(pa.string(), pa.string()))
    assert own(ingest(tmp_path, mapped)) == [{"team": "search"}, None, None]
    text = ingest(tmp_path, pa.array(['{"team": "search"}', "", None]))
    assert own(text) == [{"team": "search"}, None, None] and set(text["status"].to_pylist()) == {"pending"}


def test_a_bad_value_quarantines_its_row_only(tmp_path):
    rows = ingest(tmp_path, pa.array(['{"team": "search"}', '{"team": 5}', "team=ads", '{"a b": "x"}']))
    assert rows["status"].to_pylist() == ["pending", "quarantined", "quarantined", "quarantined"]
    errors = rows["error"].to_pylist()
    assert errors[1] == f"{tmp_path / 'batch.parquet'} row 1: tag 'team' must be a string, got int 5"
    assert "row 2: tags are not a JSON object" in errors[2] and "row 3: tag key 'a b'" in errors[3]
    mapped = pa.array([[("a", "1"), ("a", "2")], [("b", "1")]], pa.map_(pa.string(), pa.string()))
    rows = ingest(tmp_path, mapped)
    assert rows["status"].to_pylist() == ["quarantined", "pending"] and "tag 'a' is given twice" in rows["error"][0].as_py()


@pytest.mark.parametrize("tags, reason", [
    (pa.array([{"team": 1}], pa.struct([("team", pa.int64())])), "column 'tags' must hold strings, found team (int64)"),
    (pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int32())), "found value (int32)"),
    (pa.array([1]), "column 'tags' must hold a struct or map of strings, or JSON text, found int64"),
])
def test_a_tags_column_that_cannot_hold_string_tags_refuses_the_file(tmp_path, tags, reason):
    with pytest.raises(IngestError, match="batch.parquet: ") as exc:
        ingest(tmp_path, tags)
    assert reason in str(exc.value)
