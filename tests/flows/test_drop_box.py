"""The drop-box flow in process (Prefect's temporary server), on the local drop box, with API-only tiers on a
loopback OpenAI-compatible server: no vLLM engine starts."""

from __future__ import annotations

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from flows.drop_box import process_drop_box
from sluice.dropbox import open_drop_box


def api_catalogue(path, base_url: str, max_model_len: int = 256):
    """Every tier an API on the loopback server, each with a stated context window."""
    tiers = "".join(
        f"""
[[tiers]]
name = "{name}"
backend = "openai"
model = "{name}-test"
base_url = "{base_url}"
max_model_len = {max_model_len}
input_usd_per_1m = {price_in}
output_usd_per_1m = {price_out}
max_retries = 0
"""
        for name, price_in, price_out in (("small", 0.05, 0.1), ("mid", 0.2, 0.6), ("premium", 2.5, 10.0))
    )
    path.write_text('baseline = "premium"\n' + tiers)
    return path


def test_drop_box_flow_files_good_and_bad_files_once(tmp_path, openai_server, write_parquet):
    catalogue = api_catalogue(tmp_path / "catalogue.toml", openai_server.base_url)
    box = open_drop_box(tmp_path / "drop")
    src = tmp_path / "src"
    src.mkdir()
    good = write_parquet(src / "good.parquet", {
        "id": ["a", "b", "c", "c"],
        "prompt": ["What is 2+2?", "word " * 400, "Name a colour.", "dup id"],
        "max_tokens": pa.array([8, 8, 8, 8], pa.int32()),
    })
    box.submit(good)
    (src / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    box.submit(src / "corrupt.parquet")
    (src / "empty.parquet").write_bytes(b"")
    box.submit(src / "empty.parquet")
    box.submit(write_parquet(src / "no_prompt.parquet", {"question": ["hi"]}))
    box.submit(write_parquet(src / "zero.parquet", {"prompt": pa.array([], pa.string())}))
    box.submit(write_parquet(src / "ints.parquet", {"prompt": [1, 2]}))

    warehouse = tmp_path / "wh.duckdb"
    out = process_drop_box(drop=str(box.url), warehouse=str(warehouse), catalogue=str(catalogue),
                           data_dir=str(tmp_path / "data"))
    assert [o["key"] for o in out["done"]] == ["incoming/good.parquet"]
    reasons = {o["key"].split("/")[-1]: o["reason"] for o in out["failed"]}
    assert reasons == {
        "corrupt.parquet": reasons["corrupt.parquet"], "empty.parquet": "empty.parquet: empty file (0 bytes)",
        "no_prompt.parquet": "no_prompt.parquet: missing required column 'prompt' (found: question) (a chat dataset has 'messages' instead)",
        "zero.parquet": "zero.parquet: no rows",
        "ints.parquet": "ints.parquet: column 'prompt' must hold strings, found int64",
    }
    assert "not a readable Parquet file" in reasons["corrupt.parquet"]
    assert box.incoming() == [] and box.list("processing/") == []

    # the bad files sit in failed/ with their reason beside them
    for o in out["failed"]:
        report = json.loads((box.root / (o["dest"] + ".error.json")).read_text())
        assert report["reason"] == o["reason"] and (box.root / o["dest"]).is_file()
    # the good file: every row landed once, the long prompt and the repeated id quarantined with reasons
    run_id = out["done"][0]["run_id"]
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = dict(con.execute("select row_id, status from results where run_id = ?", [run_id]).fetchall())
    errors = [e for (e,) in con.execute("select error from results where status = 'quarantined' order by row_id")
              .fetchall()]
    con.close()
    assert rows == {"a": "ok", "b": "quarantined", "c": "ok", "__row3": "quarantined"}
    assert "prompt too long" in errors[1] and "duplicate id 'c'" in errors[0]
    results = pq.read_table(box.root / f"results/good/{run_id}/results.parquet")
    assert sorted(results["row_id"].to_pylist()) == sorted(rows)
    assert (box.root / f"done/{run_id}/good.parquet").is_file()
    sent = [r.body["messages"][-1]["content"] for r in openai_server.received]
    assert sorted(sent) == ["Name a colour.", "What is 2+2?"]  # the quarantined rows were never sent

    # nothing is processed twice: a second pass finds nothing, and the same bytes resubmitted are filed away
    assert process_drop_box(drop=str(box.url), warehouse=str(warehouse), catalogue=str(catalogue),
                            data_dir=str(tmp_path / "data"))["done"] == []
    box.submit(good)
    again = process_drop_box(drop=str(box.url), warehouse=str(warehouse), catalogue=str(catalogue),
                             data_dir=str(tmp_path / "data"))
    assert again["done"] == [] and "already processed by run " + run_id in again["skipped"][0]["reason"]
    assert box.incoming() == [] and len(openai_server.received) == 2


def test_a_crashed_pass_is_recovered_under_its_run_id(tmp_path, openai_server, write_parquet):
    catalogue = api_catalogue(tmp_path / "catalogue.toml", openai_server.base_url)
    box = open_drop_box(tmp_path / "drop")
    box.submit(write_parquet(tmp_path / "late.parquet", {"prompt": ["What is 2+2?", "Name a colour."],
                                                         "max_tokens": pa.array([8, 8], pa.int32())}))
    dead = box.claim(box.incoming()[0], "20200101T000000Z-dead01")  # the pass that claimed it died here
    warehouse = tmp_path / "wh.duckdb"
    kwargs = dict(drop=str(box.url), warehouse=str(warehouse), catalogue=str(catalogue),
                  data_dir=str(tmp_path / "data"))
    assert process_drop_box(**kwargs)["done"] == []  # its heartbeat is fresh: left alone
    out = process_drop_box(**kwargs, stale_after_s=0)
    [done] = out["done"]
    assert done["recovered"] and done["run_id"] == dead.run_id
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("select run_id, status, count(*) from results group by all").fetchall() == [
        (dead.run_id, "ok", 2)]
    con.close()
    assert box.list("processing/") == [] and (box.root / f"done/{dead.run_id}/late.parquet").is_file()


def test_a_pass_that_lands_a_file_refreshes_the_dashboard(tmp_path, openai_server, write_parquet):
    catalogue = api_catalogue(tmp_path / "catalogue.toml", openai_server.base_url)
    box = open_drop_box(tmp_path / "drop")
    box.submit(write_parquet(tmp_path / "nightly_qa.parquet", {"prompt": ["What is 2+2?", "Name a colour."]}))
    kw = dict(drop=str(box.url), warehouse=str(tmp_path / "wh.duckdb"), catalogue=str(catalogue),
              data_dir=str(tmp_path / "data"))
    out = process_drop_box(**kw)
    page = tmp_path / "data" / "dashboard.html"
    assert out["dashboard"] == str(page) and "nightly_qa" in page.read_text()
    page.unlink()
    assert "dashboard" not in process_drop_box(**kw) and not page.exists()  # nothing landed: left alone
