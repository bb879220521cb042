"""`sluice report` shows accuracy next to cost when the run's rows were graded against references, and nothing
about accuracy when they were not."""

import polars as pl

from sluice.reports.html import render_html, report_data
from sluice.stages.land.results import land_results
from sluice.warehouse.db import RESULT_COLUMNS, connect
from tests.support.sample_warehouse import R1, RUNS, results_frame

# r1 right, r2 wrong, r3 failed (wrong) on small; r4 right on premium; the rest not graded
VERDICTS = {"r1": True, "r2": False, "r3": False, "r4": True}


def test_the_tiers_table_and_a_card_show_accuracy(tmp_path):
    wh = tmp_path / "wh.duckdb"
    df = results_frame("r1", R1)
    df = df.with_columns(pl.Series("correct", [VERDICTS.get(r) for r in df["row_id"].to_list()], pl.Boolean))
    land_results(wh, df.select(RESULT_COLUMNS), RUNS["r1"])
    with connect(wh, read_only=True) as con:
        data = report_data(con, "r1")
    by = {t["tier"]: t for t in data["tiers"]}
    assert (by["small"]["graded"], by["small"]["accuracy"]) == (3, 1 / 3)
    assert (by["premium"]["graded"], by["premium"]["accuracy"]) == (1, 1.0)
    text = render_html(data)
    assert "<th>graded</th><th>accuracy</th>" in text
    assert "50.0% of 4" in text and "accuracy (graded rows)" in text


def test_no_accuracy_without_references(tmp_path):
    wh = tmp_path / "wh.duckdb"
    land_results(wh, results_frame("r1", R1), RUNS["r1"])
    with connect(wh, read_only=True) as con:
        text = render_html(report_data(con, "r1"))
    assert "accuracy" not in text
