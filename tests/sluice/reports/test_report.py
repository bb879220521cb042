"""`sluice report`: a self-contained HTML page, rendered by headless Chromium with its plots on screen."""

import os
import re
import shutil
import subprocess

import duckdb
import pytest

from sluice.reports.forecast import store_forecast
from sluice.reports.html import render_html, report_data, write_report
from sluice.reports.summary import summary_table
from sluice.stages.land.results import summarise
from sluice.warehouse.db import connect
from tests.support.sample_warehouse import R1, build_sample_warehouse, results_frame

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0"]
PLOTS = ["cost-by-tier", "savings-waterfall", "latency", "tokens", "errors"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    wh = build_sample_warehouse(tmp / "wh.duckdb")
    forecast = {"rows": 8, "duplicates": 1, "quarantined": 1, "cache_hits": 0, "input_tokens": 700,
                "output_tokens": 300, "cost_usd": 0.0125, "baseline_cost_usd": 0.024, "dedup_saving_usd": 0.004,
                "cache_saving_usd": 0.0, "routing_saving_usd": 0.0075,
                "tiers": {"small": {"rows": 3, "cost_usd": 0.003}, "premium": {"rows": 2, "cost_usd": 0.0095}},
                "assumptions": {}}
    with connect(wh) as con:
        store_forecast(con, forecast, "ds", "ds.parquet", run_id="r1")
    return write_report(wh, "r1", tmp / "report.html")


def test_the_report_is_self_contained_with_every_plot_and_the_key_table(report):
    text = report.read_text()
    assert text.count("<svg") == len(PLOTS)
    for pid in PLOTS:
        assert f'id="plot-{pid}"' in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "no network references"
    assert "<script" not in text
    # the key numbers: total, all-premium, saving, and forecast against actual (+8.7 %)
    assert "$0.0115" in text and "$0.0260" in text and "55.8%" in text
    assert "+8.7%" in text and "within ±15%" in text
    assert "engine died" in text and "prompt is null" in text


def test_an_unknown_run_is_a_clear_error(report, tmp_path):
    with connect(report.parent / "wh.duckdb", read_only=True) as con:
        with pytest.raises(LookupError, match="no run 'nope'.*latest: r2, r1"):
            report_data(con, "nope")


def test_a_run_without_requests_still_renders_every_plot(tmp_path):
    wh = tmp_path / "wh.duckdb"
    from sluice.stages.land.results import land_results

    land_results(wh, results_frame("q", [r for r in R1 if r[1] == "quarantined"]), {"run_id": "q", "dataset": "ds"})
    with connect(wh, read_only=True) as con:
        text = render_html(report_data(con, "q"))
    assert text.count("<svg") == len(PLOTS) and "No forecast for this run" in text


def test_summary_table_for_the_prefect_artifact():
    rows = summary_table(summarise(results_frame("r1", R1)))
    by = {r["tier"]: r for r in rows}
    assert by["small"] == {"tier": "small", "rows": 3, "cost_usd": 0.0025}
    assert by["premium"]["cost_usd"] == 0.009 and by["total"]["cost_usd"] == 0.0115
    assert by["all-premium baseline"]["cost_usd"] == 0.026


def _chromium(tmp_path, *args):
    profile = tmp_path / "profile"
    proc = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)
    return proc


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_the_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    url = report.resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the DOM Chromium built (not just the file): five inline SVG plots, each with drawn paths
    svgs = re.findall(r"<svg\b.*?</svg>", dom.stdout, flags=re.S)
    assert len(svgs) == len(PLOTS)
    assert all(s.count("<path") >= 3 for s in svgs)
    assert 'id="key-table"' in dom.stdout

    png = tmp_path / "report.png"
    shot = _chromium(tmp_path, "--window-size=1280,3600", f"--screenshot={png}", url)
    assert shot.returncode == 0, shot.stderr[-2000:]
    problems = [line for line in shot.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not problems, problems
    img = Image.open(png).convert("RGB")
    assert img.size == (1280, 3600)
    # non-blank: many colours, and the plots' region is not one flat colour
    assert len(img.getcolors(maxcolors=1 << 20) or []) > 200
    plots = img.crop((0, 500, 1280, 1500))
    assert plots.getextrema() != ((255, 255), (255, 255), (255, 255))
    # how tall the page is: the last row that differs from the background
    bg = img.getpixel((5, img.height - 1))
    content_bottom = max(y for y in range(img.height) if any(img.getpixel((x, y)) != bg for x in range(0, 1280, 8)))
    print(f"screenshot {img.size[0]}x{img.size[1]}, content ends at y={content_bottom}")
    assert content_bottom < img.height - 1, "the page is taller than the screenshot"
    if os.environ.get("SLUICE_REPORT_SCREENSHOT"):  # keep it to look at
        shutil.copy(png, os.environ["SLUICE_REPORT_SCREENSHOT"])


def test_sluice_report_command(report, tmp_path):
    from typer.testing import CliRunner

    from sluice.cli import app

    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", "r2", "-o", str(out), "--warehouse", str(report.parent / "wh.duckdb")])
    assert res.exit_code == 0, res.output
    assert out.read_text().count("<svg") == len(PLOTS)
    res = CliRunner().invoke(app, ["report", "nope", "--warehouse", str(report.parent / "wh.duckdb")])
    assert res.exit_code == 2 and "no run 'nope'" in res.output


def test_a_warehouse_from_an_older_sluice_is_upgraded_before_reporting(tmp_path):
    wh = build_sample_warehouse(tmp_path / "wh.duckdb")
    con = duckdb.connect(str(wh))
    con.execute("DROP VIEW breakeven")
    con.execute("DROP VIEW savings_per_run")
    con.execute("DELETE FROM schema_version WHERE version > 1")
    con.close()
    out = write_report(wh, "r1", tmp_path / "r.html")
    assert out.read_text().count("<svg") == len(PLOTS)
