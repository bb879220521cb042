"""Hostile names: dataset names, run ids and drop-box file names end up in paths, SQL and S3 keys, so they are
validated (or mapped to a safe name) before use; values inside files (ids, column names) only ever travel as
data (see tests/sluice/stages/ingest/test_bad_inputs.py and tests/flows/test_bad_inputs_flow.py)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flows.batch_run
from sluice.contracts.names import dataset_name_for, validate_dataset_name
from sluice.dropbox import open_drop_box

SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
HOSTILE = [
    "x'; DROP TABLE results; --",
    "../../etc",
    "..",
    "a/b",
    "a\\b",
    "ünïcödé",
    "日本語",
    "a" * 300,
    "",
    " ",
    "nightly\n",  # `$` in a regex also matches before a final newline: must still be refused
    "nul\x00byte",
    "-rf",
    ".hidden",
    'prompt"; --',
    "s3://bucket/key",
    "%2e%2e%2fetc",
]


@pytest.mark.parametrize("name", HOSTILE, ids=[repr(h)[:30] for h in HOSTILE])
def test_hostile_dataset_names_are_refused(name):
    with pytest.raises(ValueError, match="invalid dataset name"):
        validate_dataset_name(name)


@pytest.mark.parametrize("name", ["nightly", "batch-2026.11.24_v2", "a" * 128, "0"])
def test_ordinary_names_pass(name):
    assert validate_dataset_name(name) == name


@pytest.mark.parametrize("name", HOSTILE, ids=[repr(h)[:30] for h in HOSTILE])
def test_file_names_map_to_safe_dataset_names(name):
    for filename in (name, f"{name}.parquet", f"/data/in/{name}.parquet"):
        try:
            safe = dataset_name_for(filename)
        except ValueError:  # Path() refuses nothing; a NUL only fails at the filesystem, never here
            pytest.fail(f"dataset_name_for({filename!r}) raised")
        assert SAFE.fullmatch(safe), (filename, safe)
        assert ".." not in safe.split("/") and "/" not in safe and "'" not in safe


def test_long_and_unicode_names_are_cut_and_replaced():
    assert dataset_name_for("a" * 300 + ".parquet") == "a" * 128
    assert dataset_name_for("ünï cödé.parquet") == "n_c_d"
    assert dataset_name_for("日本語.parquet") == "dataset"


@pytest.fixture
def flow_fn(monkeypatch):
    """The flow's own code without a Prefect run (its logger replaced): the names are checked before any stage."""
    monkeypatch.setattr(flows.batch_run, "get_run_logger", lambda: logging.getLogger("test"))
    return flows.batch_run.sluice_run.fn


@pytest.mark.parametrize("name", HOSTILE[:8] + ["nightly\n"], ids=[repr(h)[:30] for h in HOSTILE[:8] + ["nl"]])
def test_the_flow_refuses_hostile_run_ids_and_datasets_before_writing_anything(name, flow_fn, tmp_path,
                                                                               api_catalogue):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["hi"]}), src)
    kw = dict(warehouse=str(tmp_path / "wh.duckdb"), catalogue=str(api_catalogue("http://127.0.0.1:9/v1")),
              data_dir=str(tmp_path / "data"))
    if name:  # an empty run id means "make one"
        with pytest.raises(ValueError, match="invalid run id"):
            flow_fn(str(src), run_id=name, **kw)
    with pytest.raises(ValueError, match="invalid dataset name"):
        flow_fn(str(src), dataset=name or " ", run_id="r1", **kw)
    assert not (tmp_path / "data" / "runs" / "r1").exists()  # no manifest written
    assert not (tmp_path / "wh.duckdb").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api_catalogue.toml", "in.parquet"]


# --- drop box keys (sluice/dropbox) -----------------------------------------------------------------------------


@pytest.fixture
def box_and_file(tmp_path):
    src = tmp_path / "src.parquet"
    pq.write_table(pa.table({"prompt": ["hi"]}), src)
    return open_drop_box(tmp_path / "box"), src, tmp_path / "box"


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_drop_box_refuses_names_that_escape_it(box_and_file):
    box, src, root = box_and_file
    with pytest.raises(ValueError, match="outside the drop box"):
        box.submit(src, "../../etc/passwd")
    assert not (root.parent.parent / "etc").exists()


@pytest.mark.parametrize("name", ["x'; DROP TABLE results; --.parquet", "ünï cödé.parquet"])
def test_hostile_file_names_go_through_the_drop_box_with_safe_result_keys(box_and_file, name, tmp_path):
    box, src, root = box_and_file
    key = box.submit(src, name)
    (obj,) = box.incoming()
    assert obj.key == key
    claim = box.claim(obj, "20261124T020000Z-abc123")
    dataset = dataset_name_for(obj.name)
    results_key = box.put_results(claim, dataset, src)
    assert results_key == f"results/{dataset}/20261124T020000Z-abc123/results.parquet"
    assert SAFE.fullmatch(dataset)
    box.finish(claim, ok=True, report={"dataset": dataset, "results_key": results_key})
    assert f"done/20261124T020000Z-abc123/{name}" in _files(root)


def test_a_submitted_name_cannot_reach_another_prefix(box_and_file):
    box, src, root = box_and_file
    try:
        box.submit(src, "../done/evil.parquet")
    except ValueError:
        pass
    assert not (root / "done" / "evil.parquet").exists()


def test_a_submitted_hidden_name_is_processed_or_refused(box_and_file):
    box, src, root = box_and_file
    try:
        key = box.submit(src, ".hidden.parquet")
    except ValueError:
        return
    assert key in [o.key for o in box.incoming()]


def test_a_name_too_long_for_the_filesystem_is_refused_and_leaves_nothing(box_and_file):
    box, src, root = box_and_file
    with pytest.raises((ValueError, OSError)):  # OSError(ENAMETOOLONG) today: no clearer reason (reported)
        box.submit(src, "a" * 300 + ".parquet")
    assert [f for f in _files(root) if f.startswith("incoming/")] == []
