"""Chargeback through a whole flow on replay tiers (no model, no network): input columns Sluice does not read, of
several types, come back unchanged in the run's results file and as `results.meta`; the run's tags overlaid by each
row's own land on every row; a row with a bad tag is quarantined with a reason naming file and row; `cost_by_tag`
for one key adds up to the run's total."""

import json
from datetime import datetime, timezone
from decimal import Decimal

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.batch_run import sluice_run
from tests.support.replay import GSM8K, gsm8k_replay_catalogue

N = 6


def dataset(path):
    src = pq.read_table(GSM8K).slice(0, N)
    own = {
        "customer": pa.array(range(1, N + 1), pa.int64()),
        "score": pa.array([0.5, float("nan"), None, 1.25, 2.0, -1.0], pa.float64()),
        "when": pa.array([datetime(2026, 1, 5, 10, i, tzinfo=timezone.utc) for i in range(N)], pa.timestamp("us", "UTC")),
        "price": pa.array([Decimal("1.50"), Decimal("2.25"), None, Decimal("0.10"), Decimal("3.00"), Decimal("9.99")],
                          pa.decimal128(10, 2)),
        "labels": pa.array([["a", "b"], [], None, ["c"], ["d"], ["e", "f"]], pa.list_(pa.string())),
        "info": pa.array([{"n": i, "s": f"x{i}"} for i in range(N)], pa.struct([("n", pa.int32()), ("s", pa.string())])),
        "status": pa.array(["new", "new", "old", "new", "old", "new"]),  # a results column has this name
    }
    tags = ['{"team": "ads"}', None, '{"feature": "faq"}', '{"team": 5}', None, ""]
    table = pa.table({"id": src["id"], "prompt": src["prompt"], **own, "tags": pa.array(tags, pa.string())})
    pq.write_table(table, path)
    return table, list(own)


def same(values: list) -> list:
    return ["NaN" if isinstance(v, float) and v != v else v for v in values]  # NaN != NaN


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chargeback")
    table, own = dataset(tmp / "batch.parquet")
    wh = tmp / "wh.duckdb"
    summary = sluice_run(str(tmp / "batch.parquet"), warehouse=str(wh), catalogue=str(gsm8k_replay_catalogue(tmp)),
                         data_dir=str(tmp / "data"), tags={"team": "search", "project": "x"}, shadow_share=0.0)
    out = pq.read_table(tmp / "data" / "runs" / summary["run_id"] / "results.parquet")
    return table, own, out, wh, summary


def test_pass_through_columns_come_back_unchanged_in_the_results_file(landed):
    table, own, out, _, _ = landed
    assert out.num_rows == N and out["row_index"].to_pylist() == list(range(N))
    renamed = ["input_status" if c == "status" else c for c in own]
    assert out.column_names[-len(own):] == renamed
    for name, got in zip(own, renamed, strict=True):
        assert out.schema.field(got).type == table.schema.field(name).type, name
        assert same(out[got].to_pylist()) == same(table[name].to_pylist()), name  # decimals exact, NaN kept
    assert out["status"].to_pylist().count("quarantined") == 1  # Sluice's own status is not overwritten


def test_meta_keeps_them_in_the_warehouse_as_json(landed):
    _, _, _, wh, _ = landed
    with duckdb.connect(str(wh), read_only=True) as con:
        meta = {r: json.loads(m) for r, m in con.execute("SELECT row_id, meta FROM results").fetchall()}
    first = meta[pq.read_table(GSM8K)["id"][0].as_py()]
    assert first == {"customer": 1, "score": 0.5, "when": "2026-01-05T10:00:00+00:00", "price": "1.50",
                     "labels": ["a", "b"], "info": {"n": 0, "s": "x0"}, "status": "new"}
    assert [m["score"] for m in meta.values()].count(None) == 2  # NaN is not JSON: null, like the missing one


def test_rows_carry_the_runs_tags_overlaid_by_their_own_and_a_bad_tag_quarantines(landed, tmp_path):
    _, _, _, wh, summary = landed
    ids = pq.read_table(GSM8K)["id"].to_pylist()[:N]
    with duckdb.connect(str(wh), read_only=True) as con:
        rows = {r: (s, t and json.loads(t), e) for r, s, t, e in con.execute(
            "SELECT row_id, status, tags, error FROM results").fetchall()}
        run_tags = con.execute("SELECT tags FROM runs").fetchone()[0]
    run = {"project": "x", "team": "search"}
    assert json.loads(run_tags) == run
    assert rows[ids[0]][1] == {"project": "x", "team": "ads"}
    assert rows[ids[1]][1] == run and rows[ids[4]][1] == run and rows[ids[5]][1] == run  # blank text: no own tags
    assert rows[ids[2]][1] == {**run, "feature": "faq"}
    status, _, error = rows[ids[3]]
    assert status == "quarantined" and error.endswith("batch.parquet row 3: tag 'team' must be a string, got int 5")
    assert summary["quarantined"] == 1


def test_cost_by_tag_adds_up_to_the_runs_total(landed):
    _, _, _, wh, _ = landed
    with duckdb.connect(str(wh), read_only=True) as con:
        total, rows = con.execute("SELECT cost_usd, rows FROM runs").fetchone()
        by_key = con.execute("SELECT tag_key, sum(rows), sum(cost_usd), count(*) FROM cost_by_tag "
                             "GROUP BY 1 ORDER BY 1").fetchall()
        team = dict(con.execute("SELECT tag_value, rows FROM cost_by_tag WHERE tag_key = 'team'").fetchall())
    assert total > 0
    assert [(k, n) for k, n, _, _ in by_key] == [("feature", N), ("project", N), ("team", N)]
    for _, _, cost, _ in by_key:
        assert cost == pytest.approx(total)
    assert team == {"ads": 1, "search": 5}  # the quarantined row keeps the run's team too
