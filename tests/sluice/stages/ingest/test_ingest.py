import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.contracts.names import dataset_name_for
from sluice.stages.ingest.read import IngestError, read_prompts


def test_missing_prompt_column_names_file_and_column(tmp_path, write_parquet):
    path = write_parquet(tmp_path / "nightly.parquet", {"text": ["hello"], "id": ["a"]})
    with pytest.raises(IngestError) as err:
        read_prompts(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "'prompt'" in msg and "missing" in msg
    assert "text" in msg  # says what it did find


def test_not_parquet_names_file(tmp_path):
    path = tmp_path / "oops.parquet"
    path.write_text("id,prompt\n1,hello\n")
    with pytest.raises(IngestError, match=r"oops\.parquet: not a readable Parquet file"):
        read_prompts(path)


def test_prompt_of_wrong_type_is_a_file_error(tmp_path, write_parquet):
    path = write_parquet(tmp_path / "ints.parquet", {"prompt": [1, 2]})
    with pytest.raises(IngestError, match=r"ints\.parquet: column 'prompt' must hold strings, found int64"):
        read_prompts(path)


def test_bad_rows_are_quarantined_with_reasons_and_the_rest_proceed(tmp_path, write_parquet):
    path = write_parquet(
        tmp_path / "mixed.parquet",
        {
            "id": ["a", "b", "c", "a", "e", "f"],
            "prompt": ["fine", None, "   ", "again", "too long please", "ok"],
            "max_tokens": pa.array([16, 16, 16, 16, 0, None], pa.int64()),
        },
    )
    rows = read_prompts(path)
    assert rows.num_rows == 6  # nothing is lost
    status = rows["status"].to_pylist()
    assert status == ["pending", "quarantined", "quarantined", "quarantined", "quarantined", "pending"]
    errors = rows["error"].to_pylist()
    assert errors[0] is None and errors[5] is None
    assert errors[1] == f"{path} row 1: prompt is null"
    assert errors[2] == f"{path} row 2: prompt is empty"
    assert errors[3] == f"{path} row 3: duplicate id 'a' (first seen at row 0)"
    assert "max_tokens=0" in errors[4]
    assert len(set(rows["row_id"].to_pylist())) == 6  # every row still has its own key to land under


def test_ids_default_to_row_positions_and_integers_become_strings(tmp_path, write_parquet):
    rows = read_prompts(write_parquet(tmp_path / "a.parquet", {"prompt": ["x", "y"]}))
    assert rows["row_id"].to_pylist() == ["0", "1"]
    rows = read_prompts(write_parquet(tmp_path / "b.parquet", {"prompt": ["x", "y"], "id": [10, 20]}))
    assert rows["row_id"].to_pylist() == ["10", "20"]


def test_large_string_columns_are_accepted(tmp_path):
    path = tmp_path / "large.parquet"
    pq.write_table(pa.table({"prompt": pa.array(["hi"], pa.large_string())}), path)
    assert read_prompts(path)["prompt"].to_pylist() == ["hi"]


@pytest.mark.parametrize(
    "filename, expected",
    [("nightly.parquet", "nightly"), ("my data; DROP TABLE x.parquet", "my_data_DROP_TABLE_x"),
     ("../../etc/passwd", "passwd"), ("..parquet", "dataset")],
)
def test_dataset_names_are_safe(filename, expected):
    assert dataset_name_for(filename) == expected
