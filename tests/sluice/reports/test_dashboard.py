"""`sluice dashboard`: per night and dataset, in one self-contained HTML file; its numbers are the warehouse's."""

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import duckdb
import pytest
from typer.testing import CliRunner

from sluice.cli import app
from sluice.reports.dashboard import COLUMNS, write_dashboard
from tests.support.sample_warehouse import build_dashboard_warehouse

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTS = ["cost-per-1k", "savings", "latency", "accuracy"]


class _Tables(HTMLParser):
    """The text of every <table> cell, per table id (the enclosing section's id)."""

    def __init__(self):
        super().__init__()
        self.tables, self.section, self.cell, self.row = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.section = dict(attrs).get("id")
        elif tag == "tr":
            self.row = []
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.row.append(self.cell)
            self.cell = None
        elif tag == "tr":
            self.tables.setdefault(self.section, []).append(self.row)

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def table(text: str, section: str) -> list[dict]:
    p = _Tables()
    p.feed(text)
    head, *body = p.tables[section]
    return [dict(zip(head, r, strict=True)) for r in body]


def num(cell: str) -> float | None:
    return None if cell == "–" else float(cell.replace(",", ""))


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    return build_dashboard_warehouse(tmp_path_factory.mktemp("dash") / "wh.duckdb")


@pytest.fixture(scope="module")
def page(wh):
    return write_dashboard(wh, wh.parent / "dashboard.html", days=30)


def test_the_dashboard_is_self_contained_with_its_plots(page):
    text = page.read_text()
    assert text.count("<svg") == len(PLOTS) and all(f'id="plot-{p}"' in text for p in PLOTS)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text) and "<script" not in text
    assert "not recorded in the warehouse yet" in text


def test_per_night_numbers_match_sql_on_the_warehouse(wh, page):
    got = table(page.read_text(), "nights")
    assert [(r["night"], r["dataset"]) for r in got] == [
        ("2026-01-05", "ds"), ("2026-01-05", "qa"), ("2026-01-06", "ds"), ("2026-01-06", "qa"),
        ("2026-01-07", "ds"), ("2026-01-07", "qa")]
    with duckdb.connect(str(wh), read_only=True) as c:
        want = {(str(r[0]), r[1]): r[2:] for r in c.execute("""
            SELECT CAST(timezone('UTC', u.started_at) AS DATE), r.dataset, count(DISTINCT r.run_id),
                   count(*), sum(r.cost_usd), 1000 * sum(r.cost_usd) / count(*),
                   1000 * sum(r.baseline_cost_usd) / count(*),
                   avg(r.input_tokens + r.output_tokens) FILTER (r.tier IS NOT NULL AND r.status <> 'quarantined'),
                   quantile_cont(r.latency_ms, 0.9) FILTER (r.tier IS NOT NULL AND r.status = 'ok'),
                   avg(CAST(r.status = 'failed' AS INT)), avg(CAST(r.status = 'quarantined' AS INT)),
                   avg(CAST(r.correct AS INT))
            FROM results r JOIN runs u USING (run_id) GROUP BY 1, 2""").fetchall()}
        busy = dict(((str(n), d), b) for n, d, b in c.execute("""
            SELECT CAST(timezone('UTC', started_at) AS DATE), dataset, sum(generate_s) / sum(billed_seconds)
            FROM utilisation GROUP BY 1, 2""").fetchall())
    labels = dict(COLUMNS)
    for r in got:
        runs, requests, cost, per_1k, base_1k, tokens, p90, err, quar, acc = want[(r["night"], r["dataset"])]
        assert num(r[labels["runs"]]) == runs and num(r[labels["requests"]]) == requests
        a = pytest.approx
        assert num(r[labels["cost_usd"]]) == a(cost, abs=5e-5)
        assert num(r[labels["cost_per_1k_usd"]]) == a(per_1k, abs=5e-5)
        assert num(r[labels["baseline_per_1k_usd"]]) == a(base_1k, abs=5e-5)
        assert num(r[labels["tokens_per_request"]]) == a(tokens, abs=5e-5)
        assert num(r[labels["p90_ms"]]) == a(p90, abs=5e-5)
        assert num(r[labels["error_rate"]]) == a(err, abs=5e-5)
        assert num(r[labels["quarantine_rate"]]) == a(quar, abs=5e-5)
        assert num(r[labels["self_hosted_busy"]]) == a(busy[(r["night"], r["dataset"])], abs=5e-5)
        if r["dataset"] == "qa":  # graded: every graded row weighs the same; the baseline got all right
            assert num(r[labels["accuracy"]]) == a(acc, abs=5e-5) and num(r[labels["baseline_accuracy"]]) == 1.0
        else:
            assert r[labels["accuracy"]] == "–"


def test_saving_by_mechanism_matches_savings_per_row(wh, page):
    got = {r["mechanism"]: num(r["usd"]) for r in table(page.read_text(), "mechanisms")}
    with duckdb.connect(str(wh), read_only=True) as c:
        dedup, cache, routing, total = c.execute("""SELECT sum(dedup_saving_usd), sum(cache_saving_usd),
            sum(routing_saving_usd), sum(saving_usd) FROM savings_per_row""").fetchone()
    a = pytest.approx
    assert (got["dedup"], got["cache"], got["routing"], got["total saving"]) == (a(dedup), a(cache), a(routing),
                                                                                 a(total))
    assert got["batch discount"] == 0 and got["trimming"] == 0


def test_days_counts_back_from_the_latest_night(wh, tmp_path):
    text = write_dashboard(wh, tmp_path / "d.html", days=1).read_text()
    assert {r["night"] for r in table(text, "nights")} == {"2026-01-07"}


def test_sluice_dashboard_command(wh, tmp_path):
    out = tmp_path / "d.html"
    res = CliRunner().invoke(app, ["dashboard", "-o", str(out), "--warehouse", str(wh), "--days", "2"])
    assert res.exit_code == 0, res.output
    assert {r["night"] for r in table(out.read_text(), "nights")} == {"2026-01-06", "2026-01-07"}
    res = CliRunner().invoke(app, ["dashboard", "--warehouse", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2 and "no warehouse" in res.output


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_the_dashboard_renders_in_headless_chromium(page, tmp_path):
    from PIL import Image

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    png = tmp_path / "dashboard.png"
    shot = subprocess.run([CHROMIUM, *flags, "--window-size=1280,2000", f"--screenshot={png}",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0, shot.stderr[-2000:]
    problems = [line for line in shot.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not problems, problems
    img = Image.open(png).convert("RGB")
    assert len(img.getcolors(maxcolors=1 << 20) or []) > 200  # not blank
    if os.environ.get("SLUICE_DASHBOARD_SCREENSHOT"):  # keep it (docs/dashboard.png)
        shutil.copy(png, os.environ["SLUICE_DASHBOARD_SCREENSHOT"])
