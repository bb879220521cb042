"""The warehouse file: migrations, one writer at a time across processes, idempotent landing."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from sluice.stages.land.results import land_results
from sluice.warehouse.db import SCHEMA_VERSION, connect, migrate, schema_version
from sluice.warehouse.views import VIEW_NAMES, create_views
from tests.support.sample_warehouse import R1, RUNS, build_sample_warehouse, results_frame

# The schema files were written with before migrations existed (sluice/warehouse/db.py at version 1).
V1_DDL = [
    "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP DEFAULT now())",
    """CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, dataset VARCHAR NOT NULL, source VARCHAR,
       started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, rows BIGINT, duplicates BIGINT, quarantined BIGINT,
       failed BIGINT, cost_usd DOUBLE, baseline_cost_usd DOUBLE, billing JSON)""",
    """CREATE TABLE results (run_id VARCHAR NOT NULL, dataset VARCHAR NOT NULL, row_id VARCHAR NOT NULL,
       prompt VARCHAR, response VARCHAR, tier VARCHAR, model VARCHAR, status VARCHAR NOT NULL, dup_of VARCHAR,
       input_tokens BIGINT, output_tokens BIGINT, latency_ms DOUBLE, cost_usd DOUBLE, baseline_cost_usd DOUBLE,
       system VARCHAR, max_tokens INTEGER, dup_kind VARCHAR, dup_score DOUBLE, route_score DOUBLE,
       route_reason VARCHAR, error VARCHAR, finish_reason VARCHAR, row_index BIGINT, PRIMARY KEY (run_id, row_id))""",
    "INSERT INTO schema_version (version) VALUES (1)",
    """INSERT INTO runs VALUES ('old', 'ds', 'x.parquet', '2025-12-01 00:00:00+00', NULL, 1, 0, 0, 0, 0.001, 0.002,
       '{}')""",
    """INSERT INTO results (run_id, dataset, row_id, status, tier, model, cost_usd, baseline_cost_usd, input_tokens,
       output_tokens) VALUES ('old', 'ds', '0', 'ok', 'small', 'm', 0.001, 0.002, 10, 5)""",
]

NEW_TABLES = {"errors", "router_training", "validations", "forecasts"}


def tables(con):
    return {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE'").fetchall()}


def test_a_v1_file_upgrades_in_place_keeping_its_rows(tmp_path):
    path = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(path))
    for stmt in V1_DDL:
        con.execute(stmt)
    con.close()

    with connect(path) as con:
        assert schema_version(con) == SCHEMA_VERSION == 14
        assert NEW_TABLES <= tables(con)
        assert con.execute("SELECT run_id, row_id, cost_usd FROM results").fetchall() == [("old", "0", 0.001)]
        assert con.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        assert con.execute("SELECT saving_usd FROM savings_per_run").fetchone()[0] == pytest.approx(0.001)
        # migrating again is a no-op
        assert migrate(con) == SCHEMA_VERSION
        assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
        # v3 added the request-shape and attempt columns to the old rows (NULL there) and the attempts table
        assert con.execute("SELECT history, parsed, attempts FROM results").fetchall() == [(None, None, None)]
        assert "attempts" in tables(con)
        # v8 dropped `cache` (created by v2, never written: answers are reused from `results`)
        assert "cache" not in tables(con)
        assert con.execute("SELECT meta, tags FROM results").fetchall() == [(None, None)]
        # the hard budget: no old row points at a deferred one, no old run had a ledger
        assert con.execute("SELECT deferred_from FROM results").fetchall() == [(None,)]
        assert con.execute("SELECT count(*) FROM runs WHERE budget IS NOT NULL").fetchone()[0] == 0


def test_a_new_file_gets_every_table_and_view(tmp_path):
    with connect(tmp_path / "new.duckdb") as con:
        assert {"runs", "results", "schema_version"} | NEW_TABLES <= tables(con)
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert set(VIEW_NAMES) <= views
        for v in VIEW_NAMES:
            con.execute(f"SELECT * FROM {v}").fetchall()


def test_views_read_a_column_added_later_instead_of_zero(tmp_path):
    path = build_sample_warehouse(tmp_path / "wh.duckdb")
    with connect(path) as con:  # a file without the column (as before migration 13): the views count it as 0
        con.execute("ALTER TABLE results DROP COLUMN trim_saving_usd")
        create_views(con)
        assert con.execute("SELECT trim_saving_usd FROM savings_per_row WHERE row_id = 'r4'").fetchone() == (0,)
        con.execute("ALTER TABLE results ADD COLUMN trim_saving_usd DOUBLE")
        con.execute("UPDATE results SET trim_saving_usd = 0.001 WHERE row_id = 'r4'")
    with connect(path) as con:  # the next writer recreates the views over the new column
        r4 = con.execute("SELECT trim_saving_usd, routing_saving_usd, saving_usd FROM savings_per_row "
                         "WHERE row_id = 'r4'").fetchone()
        assert r4 == pytest.approx((0.001, -0.001, 0.0))


def test_relanding_a_run_replaces_never_duplicates(tmp_path):
    path = build_sample_warehouse(tmp_path / "wh.duckdb")
    land_results(path, results_frame("r1", R1), RUNS["r1"])
    land_results(path, results_frame("r1", R1[:3]), RUNS["r1"])  # a shorter re-land replaces the whole run
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT run_id, count(*) FROM results GROUP BY 1 ORDER BY 1").fetchall() == [
        ("r1", 3), ("r2", 4)]
    assert con.execute("SELECT run_id, rows FROM runs ORDER BY 1").fetchall() == [("r1", 3), ("r2", 4)]
    assert not list((tmp_path / "wh.duckdb.staging").glob("*.parquet")), "staged parts are removed"
    con.close()


LANDER = textwrap.dedent("""
    import sys
    from sluice.stages.land.results import land_results
    from tests.support.sample_warehouse import R1, RUNS, results_frame
    path, run_id, times = sys.argv[1], sys.argv[2], int(sys.argv[3])
    print("ready", flush=True)
    for _ in range(times):
        land_results(path, results_frame(run_id, R1), {**RUNS["r1"], "run_id": run_id})
    print("landed", run_id)
""")


def test_two_processes_landing_at_once_both_complete(tmp_path):
    path = tmp_path / "wh.duckdb"
    with connect(path):
        pass
    repo = Path(__file__).resolve().parents[3]
    # hold the file while both start, so both meet the lock and must wait for it rather than fail
    holder = duckdb.connect(str(path))
    procs = [subprocess.Popen([sys.executable, "-c", LANDER, str(path), run_id, "3"], cwd=repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for run_id in ("p1", "p2")]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # both are now retrying the open (DuckDB: "Could not set lock on file")
    holder.close()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip().startswith("landed")
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT run_id, count(*) FROM results GROUP BY 1 ORDER BY 1").fetchall() == [
        ("p1", 8), ("p2", 8)]
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    con.close()


def test_threads_of_one_process_landing_at_once_take_turns(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "wh.duckdb"

    def land(run_id):
        for _ in range(3):
            land_results(path, results_frame(run_id, R1), {**RUNS["r1"], "run_id": run_id})
        return run_id

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(land, ["t1", "t2", "t3", "t4"])) == ["t1", "t2", "t3", "t4"]
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT run_id) FROM results").fetchone() == (32, 4)
    con.close()


def test_the_router_training_table_is_the_one_the_router_writes(tmp_path):
    import polars as pl

    from sluice.warehouse.labels import add_labels, read_labels

    path = tmp_path / "wh.duckdb"
    with connect(path) as con:  # created by the migration, then filled by sluice.router
        add_labels(con, pl.DataFrame({"run_id": ["r"], "row_id": ["1"], "prompt": ["p"], "cheap_ok": [True],
                                      "premium_ok": [None], "source": ["shadow"]}))
    assert read_labels(path).to_dicts() == [{"run_id": "r", "row_id": "1", "prompt": "p", "cheap_ok": True,
                                             "premium_ok": None, "source": "shadow"}]
