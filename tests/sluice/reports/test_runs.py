"""`sluice runs` and `sluice runs show`: the last runs from the warehouse (and unfinished run folders)."""

import json
from datetime import timedelta

import duckdb
import pytest
from typer.testing import CliRunner

from sluice.cli import app
from sluice.reports.runs import RunNotFound, list_runs, run_summary
from sluice.reports.summary import summary_lines
from sluice.stages.land.results import summarise
from tests.support.sample_warehouse import R1, build_dashboard_warehouse, build_sample_warehouse, results_frame


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    path = build_sample_warehouse(tmp_path_factory.mktemp("runs") / "wh.duckdb")
    with duckdb.connect(str(path)) as c:  # r2 had references: s1 right, s2 wrong; the baseline got both right
        c.execute("""UPDATE results SET reference = 'x', grader = 'exact', correct = (row_id = 's1')
                     WHERE run_id = 'r2' AND row_id IN ('s1', 's2')""")
        c.execute("""UPDATE runs SET accuracy = 0.5, graded_rows = 2, baseline_accuracy = 1.0,
                     baseline_graded_rows = 2 WHERE run_id = 'r2'""")
    return path


@pytest.fixture
def runs_dir(tmp_path):
    for run_id, dataset, status, at in [("u1", "ds", "running", "2026-01-07T08:00:00+00:00"),
                                         ("u2", "other", "running", "2026-01-04T08:00:00+00:00"),
                                         ("r1", "ds", "running", "2026-01-05T10:00:00+00:00"),  # landed: in wh
                                         ("old", "ds", "landed", "2026-01-01T08:00:00+00:00")]:
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "manifest.json").write_text(json.dumps(
            {"run_id": run_id, "dataset": dataset, "status": status, "created_at": at}))
    (tmp_path / "no-manifest").mkdir()
    return tmp_path


def test_list_runs_newest_first_with_cost_saving_quality_and_wall_time(wh, runs_dir):
    df = list_runs(wh, runs_dir)
    assert df["run_id"].to_list() == ["u1", "r2", "r1", "u2"]
    assert df["status"].to_list() == ["unfinished", "landed", "landed", "unfinished"]
    by = {r["run_id"]: r for r in df.iter_rows(named=True)}
    assert by["r1"]["rows"] == 8 and by["r1"]["cost_usd"] == pytest.approx(0.0115)
    assert by["r1"]["saving_usd"] == pytest.approx(0.0145)
    assert by["r1"]["saving_pct"] == pytest.approx(100 * 0.0145 / 0.026)
    assert by["r1"]["wall_s"] == 300.0 and by["r2"]["wall_s"] == 120.0
    assert by["r1"]["accuracy"] is None
    assert (by["r2"]["accuracy"], by["r2"]["graded_rows"], by["r2"]["baseline_accuracy"]) == (0.5, 2, 1.0)
    assert by["u1"]["rows"] is None and by["u1"]["started_at"].isoformat() == "2026-01-07T08:00:00+00:00"
    # the numbers are the warehouse's own
    with duckdb.connect(str(wh), read_only=True) as c:
        want = c.execute("SELECT run_id, cost_usd, baseline_cost_usd FROM runs ORDER BY run_id").fetchall()
    got = df.filter(df["status"] == "landed").sort("run_id").select("run_id", "cost_usd", "baseline_cost_usd")
    assert got.rows() == want


def test_limit_and_dataset(wh, runs_dir):
    assert list_runs(wh, runs_dir, limit=2)["run_id"].to_list() == ["u1", "r2"]
    assert list_runs(wh, runs_dir, dataset="other")["run_id"].to_list() == ["u2"]
    assert list_runs(wh, None, dataset="ds")["run_id"].to_list() == ["r2", "r1"]
    assert list_runs(wh.parent / "missing.duckdb", None).is_empty()


def test_run_summary_is_what_the_run_printed(wh):
    s = run_summary(wh, "r1")
    assert summary_lines(s) == summary_lines(summarise(results_frame("r1", R1)))
    assert s["wall_s"] == 300.0 and s["dataset"] == "ds"
    lines = dict(summary_lines(run_summary(wh, "r2")))
    assert lines["accuracy (graded rows)"].startswith("0.500  (1 of 2 rows correct)")
    assert lines["all-premium accuracy"].startswith("1.000  (2 of 2;")
    with pytest.raises(RunNotFound, match="no run 'nope'.*latest: r2, r1"):
        run_summary(wh, "nope")


def test_sluice_runs_command(wh, runs_dir):
    res = CliRunner().invoke(app, ["runs", "--warehouse", str(wh), "--runs-dir", str(runs_dir)],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    r1 = next(line for line in lines if "│ r1 " in line)
    for cell in ("$0.0115", "$0.0145 (55.8%)", "landed, 1 failed", "5m00s", "2026-01-05 10:00"):
        assert cell in r1
    r2 = next(line for line in lines if "│ r2 " in line)
    assert "0.500 of 2 (all-premium 1.000)" in r2 and "2m00s" in r2
    assert "unfinished" in next(line for line in lines if "│ u1 " in line)

    res = CliRunner().invoke(app, ["runs", "--warehouse", str(wh), "--runs-dir", str(runs_dir),
                                   "--limit", "1", "--dataset", "ds"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "u1" in res.output and "r2" not in res.output


def test_sluice_runs_show_command(wh):
    res = CliRunner().invoke(app, ["runs", "show", "r1", "--warehouse", str(wh)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for label, value in summary_lines(summarise(results_frame("r1", R1))):
        assert label in res.output and value in res.output
    assert "300.0 s" in res.output
    res = CliRunner().invoke(app, ["runs", "show", "nope", "--warehouse", str(wh)])
    assert res.exit_code == 2 and "no run 'nope'" in res.output


def test_wall_time_is_finished_minus_started(wh):
    with duckdb.connect(str(wh), read_only=True) as c:
        started, finished = c.execute("SELECT started_at, finished_at FROM runs WHERE run_id = 'r2'").fetchone()
    assert finished - started == timedelta(seconds=run_summary(wh, "r2")["wall_s"])


def test_runs_show_the_recorded_quality_estimate(tmp_path):
    """`sluice runs` and `runs show` give each run's judged quality estimate as `runs` recorded it, and the floor's
    alert (the dashboard warehouse: n3-ds-b judged 1 of 2 pairs, under a floor of 0.8)."""
    wh = build_dashboard_warehouse(tmp_path / "wh.duckdb")
    with duckdb.connect(str(wh), read_only=True) as c:
        est, low, high, n, alert = c.execute("""SELECT quality_estimate, quality_low, quality_high, quality_n,
            quality_alert FROM runs WHERE run_id = 'n3-ds-b'""").fetchone()
    by = {r["run_id"]: r for r in list_runs(wh, None).iter_rows(named=True)}
    assert (by["n3-ds-b"]["quality_estimate"], by["n3-ds-b"]["quality_n"]) == (est, n) == (0.5, 2)
    assert by["n1-qa"]["quality_estimate"] is None and by["n1-qa"]["accuracy"] == 0.5
    lines = dict(summary_lines(run_summary(wh, "n3-ds-b")))
    assert lines["quality estimate"] == (f"{est:.2f} [{low:.2f}, {high:.2f}] (n=2 judged shadow pairs; covers 2 of 3 "
                                         "answered rows)")
    assert lines["quality floor"] == f"0.80: {alert}"
    assert dict(summary_lines(run_summary(wh, "n1-qa")))["quality estimate"].startswith(
        "not estimated (no judged shadow pairs; 2 unjudged pairs")
    res = CliRunner().invoke(app, ["runs", "--warehouse", str(wh)])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if "│ n3-ds-b " in line)
    assert f"est. 0.50 [{low:.2f}, {high:.2f}] n=2" in row
    row = next(line for line in res.output.splitlines() if "│ n2-qa " in line)
    assert "0.750 of 4 (all-premium 1.000); est. 0.67 [0.21, 0.94] n=3" in row


def test_runs_on_a_warehouse_from_an_older_sluice(tmp_path):
    """A file from before the quality estimate's columns (schema version 5) is migrated, then listed."""
    from sluice.warehouse.db import SCHEMA_VERSION, schema_version

    wh = build_sample_warehouse(tmp_path / "wh.duckdb")
    with duckdb.connect(str(wh)) as c:
        for view in [r[0] for r in c.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]:
            c.execute(f'DROP VIEW "{view}"')
        for col in [r[0] for r in c.execute("DESCRIBE runs").fetchall() if r[0].startswith(("quality_", "min_q"))]:
            c.execute(f"ALTER TABLE runs DROP COLUMN {col}")
        c.execute("DELETE FROM schema_version WHERE version > 5")
    df = list_runs(wh, None)
    assert df["run_id"].to_list() == ["r2", "r1"] and df["quality_estimate"].to_list() == [None, None]
    with duckdb.connect(str(wh), read_only=True) as c:
        assert schema_version(c) == SCHEMA_VERSION
