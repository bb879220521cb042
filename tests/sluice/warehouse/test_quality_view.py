"""Reference grading in the warehouse: migration 4 upgrades an older file in place, `quality_per_run` puts accuracy
next to cost per run and tier (numbers worked by hand), and every view is documented for analysts."""

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest

from sluice.stages.land.results import land_results
from sluice.warehouse.db import MIGRATIONS, RESULT_COLUMNS, SCHEMA_VERSION, connect, schema_version
from sluice.warehouse.views import VIEW_NAMES
from tests.support.sample_warehouse import R1, RUNS, results_frame

DOCS = Path(__file__).resolve().parents[3] / "docs" / "analysts.md"

# R1 of the sample warehouse, graded by hand: row -> correct (None: no reference, or never answered)
#   r1 ok small, r2 ok small, r3 failed small, r4 ok premium, r5 ok premium (no reference), r6 duplicate,
#   r7 cache hit (no reference), r8 quarantined
VERDICTS = {"r1": True, "r2": False, "r3": False, "r4": True, "r5": None, "r6": True, "r7": None, "r8": None}


def graded_frame(run_id: str) -> pl.DataFrame:
    df = results_frame(run_id, R1)
    return df.with_columns(
        pl.Series("correct", [VERDICTS[r] for r in df["row_id"].to_list()], pl.Boolean),
        pl.Series("reference", [None if VERDICTS[r] is None else "ref" for r in df["row_id"].to_list()], pl.String),
    ).select(RESULT_COLUMNS)


def v3_file(path: Path) -> Path:
    """A warehouse as Sluice wrote it before reference grading (migrations 1-3), with one landed run."""
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP DEFAULT now())")
    for version, _, statements in MIGRATIONS[:3]:
        for stmt in statements:
            con.execute(stmt)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
    con.execute("""INSERT INTO runs VALUES ('old', 'ds', 'x.parquet', '2025-12-01 00:00:00+00', NULL, 1, 0, 0, 0,
                   0.001, 0.002, '{}')""")
    con.execute("""INSERT INTO results (run_id, dataset, row_id, status, tier, cost_usd, baseline_cost_usd)
                   VALUES ('old', 'ds', '0', 'ok', 'small', 0.001, 0.002)""")
    con.close()
    return path


def test_a_v3_file_upgrades_in_place_and_keeps_its_rows_ungraded(tmp_path):
    path = v3_file(tmp_path / "v3.duckdb")
    with connect(path) as con:
        assert schema_version(con) == SCHEMA_VERSION == MIGRATIONS[-1][0] >= 4
        assert con.execute("SELECT row_id, reference, grader, correct, grade_reason FROM results").fetchall() == [
            ("0", None, None, None, None)]
        assert con.execute("SELECT accuracy, graded_rows, accuracy_per_tier FROM runs").fetchall() == [
            (None, None, None)]
        assert con.execute("SELECT tier, rows, graded, correct, accuracy FROM quality_per_run ORDER BY tier").fetchall() \
            == [("(all)", 1, 0, 0, None), ("small", 1, 0, 0, None)]
    # a graded run lands into the upgraded file beside the old one
    land_results(path, graded_frame("r1"), RUNS["r1"])
    with connect(path, read_only=True) as con:
        assert con.execute("SELECT run_id, graded_rows FROM runs ORDER BY run_id").fetchall() == [
            ("old", None), ("r1", 5)]


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = tmp_path_factory.mktemp("wh") / "wh.duckdb"
    land_results(path, graded_frame("r1"), RUNS["r1"])
    c = duckdb.connect(str(path), read_only=True)
    yield c
    c.close()


def test_quality_per_run_puts_accuracy_next_to_cost_per_tier_and_for_the_run(con):
    got = con.execute("""SELECT tier, rows, graded, correct, accuracy, cost_usd, baseline_cost_usd
                         FROM quality_per_run WHERE run_id = 'r1' ORDER BY tier""").fetchall()
    a = pytest.approx
    assert got == [
        ("(all)", 8, 5, 3, a(3 / 5), a(0.0115), a(0.026)),
        ("(not sent)", 3, 1, 1, 1.0, 0.0, a(0.007)),        # r6 right; r7 and r8 not graded
        ("premium", 2, 1, 1, 1.0, a(0.009), a(0.009)),     # r4 right; r5 has no reference
        ("small", 3, 3, 1, a(1 / 3), a(0.0025), a(0.010)),  # r1 right, r2 wrong, r3 failed: wrong
    ]


def test_runs_accuracy_is_the_views_whole_run_accuracy(con):
    acc, graded, per_tier = con.execute(
        "SELECT accuracy, graded_rows, accuracy_per_tier FROM runs WHERE run_id = 'r1'").fetchone()
    view = dict(con.execute("SELECT tier, accuracy FROM quality_per_run WHERE run_id = 'r1'").fetchall())
    assert (acc, graded) == (pytest.approx(view["(all)"]), 5)
    assert {t: v["accuracy"] for t, v in json.loads(per_tier).items()} == pytest.approx(
        {t: v for t, v in view.items() if t != "(all)"})


def test_every_view_is_documented_for_analysts():
    text = DOCS.read_text()
    missing = [v for v in VIEW_NAMES if f"`{v}`" not in text]
    assert not missing, f"views not documented in docs/analysts.md: {missing}"
    for column in ("reference", "grader", "correct", "grade_reason", "accuracy", "graded_rows", "accuracy_per_tier"):
        assert f"`{column}`" in text
