"""`sluice dashboard`: per night and dataset, in one self-contained HTML file; its numbers and its plotted points are
the warehouse's (seven runs, two datasets, three nights: tests/support/sample_warehouse.py)."""

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from sluice.cli import app
from sluice.reports.dashboard import COLUMNS, QUALITY_COLUMNS, UTILISATION_COLUMNS, write_dashboard
from sluice.reports.dashboard_tags import TAG_COLUMNS, TAG_PLOTS, UNTAGGED, tag_slug
from sluice.warehouse.db import MIGRATIONS, SCHEMA_VERSION, connect, schema_version
from tests.support.sample_warehouse import DASHBOARD_JUDGE, DASHBOARD_QUALITY, build_dashboard_warehouse

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PLOTS = ["cost-per-1k", "spend", "quality", "accuracy", "tokens", "latency", "errors", "utilisation"]
NIGHTS = ["2026-01-05", "2026-01-06", "2026-01-07"]
NIGHT_SQL = "CAST(timezone('UTC', u.started_at) AS DATE)"
a = pytest.approx


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


# --- reading the plots back -------------------------------------------------------------------------------------

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


def plot_svg(text: str, plot: str) -> ET.Element:
    m = re.search(rf'<figure id="plot-{plot}">(.*?)</figure>', text, re.S)
    return ET.fromstring(m.group(1))


def series(svg: ET.Element) -> dict[str, ET.Element]:
    """The drawn series of a plot by their ids (the plots' gids)."""
    return {g.get("id"): g for g in svg.iter(f"{SVG}g") if g.get("id") and "-" in g.get("id")}


def marks(g: ET.Element) -> list[tuple[float, float]]:
    """Where a series' markers are drawn (x, y in SVG units), in the order drawn."""
    return [(float(u.get("x")), float(u.get("y"))) for u in g.iter(f"{SVG}use")]


def segments(g: ET.Element) -> list[tuple[float, float, float]]:
    """Vertical segments of a LineCollection (x, y0, y1)."""
    out = []
    for p in g.iter(f"{SVG}path"):
        x0, y0, x1, y1 = map(float, re.findall(r"[-\d.]+", p.get("d"))[:4])
        assert x0 == a(x1)
        out.append((x0, y0, y1))
    return out


def bar(g: ET.Element) -> tuple[float, float]:
    """A bar's (bottom, top) in SVG units."""
    (p,) = list(g.iter(f"{SVG}path"))
    ys = [float(v) for v in re.findall(r"[-\d.]+", p.get("d"))[1::2]]
    return max(ys), min(ys)


def assert_affine(pairs: list[tuple[float, float]]) -> None:
    """Every (value, position) pair on one straight scale: the plot draws the values it was given, to 0.05 units."""
    lo, hi = min(pairs), max(pairs)
    assert hi[0] > lo[0], pairs
    slope = (hi[1] - lo[1]) / (hi[0] - lo[0])
    for v, p in pairs:
        assert p == a(lo[1] + slope * (v - lo[0]), abs=0.05), (v, p, pairs)


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    return build_dashboard_warehouse(tmp_path_factory.mktemp("dash") / "wh.duckdb")


@pytest.fixture(scope="module")
def page(wh):
    return write_dashboard(wh, wh.parent / "dashboard.html", days=30)


def nights_sql(wh) -> dict:
    with duckdb.connect(str(wh), read_only=True) as c:
        return {(str(r[0]), r[1]): r[2:] for r in c.execute(f"""
            SELECT {NIGHT_SQL}, r.dataset, count(DISTINCT r.run_id),
                   count(*), sum(r.cost_usd), 1000 * sum(r.cost_usd) / count(*),
                   1000 * sum(r.baseline_cost_usd) / count(*),
                   avg(r.input_tokens + r.output_tokens) FILTER (r.tier IS NOT NULL AND r.status <> 'quarantined'),
                   quantile_cont(r.latency_ms, 0.9) FILTER (r.tier IS NOT NULL AND r.status = 'ok'),
                   avg(CAST(r.status = 'failed' AS INT)), avg(CAST(r.status = 'quarantined' AS INT)),
                   avg(CAST(r.correct AS INT))
            FROM results r JOIN runs u USING (run_id) GROUP BY 1, 2""").fetchall()}


# --- the page ---------------------------------------------------------------------------------------------------


def test_the_dashboard_is_self_contained_with_every_plot_drawn(page):
    text = page.read_text()
    drawn = PLOTS + TAG_PLOTS  # the warehouse's rows carry tags: the per-tag section has its plots
    assert text.count("<svg") == len(drawn) and all(f'id="plot-{p}"' in text for p in drawn)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text) and "<script" not in text
    for p in drawn:  # each plot has data series drawn, not the "nothing in these nights" placeholder
        assert series(plot_svg(text, p)), p
    assert "in these nights" not in text


def test_per_night_numbers_match_sql_on_the_warehouse(wh, page):
    got = table(page.read_text(), "nights")
    assert [(r["night"], r["dataset"]) for r in got] == [(n, d) for n in NIGHTS for d in ("ds", "qa")]
    want = nights_sql(wh)
    with duckdb.connect(str(wh), read_only=True) as c:
        busy = dict(((str(n), d), b) for n, d, b in c.execute("""
            SELECT CAST(timezone('UTC', started_at) AS DATE), dataset, sum(generate_s) / sum(billed_seconds)
            FROM utilisation GROUP BY 1, 2""").fetchall())
    labels = dict(COLUMNS)
    for r in got:
        runs, requests, cost, per_1k, base_1k, tokens, p90, err, quar, acc = want[(r["night"], r["dataset"])]
        assert num(r[labels["runs"]]) == runs and num(r[labels["requests"]]) == requests
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


def test_the_line_plots_draw_the_sql_numbers(wh, page):
    text = page.read_text()
    want = nights_sql(wh)
    # (plot, series key, index of the value in nights_sql's row)
    checks = [("cost-per-1k", "cost_per_1k_usd", 3), ("cost-per-1k", "baseline_per_1k_usd", 4),
              ("tokens", "tokens_per_request", 5), ("latency", "p90_ms", 6), ("errors", "error_rate", 7),
              ("errors", "quarantine_rate", 8)]
    for plot in {p for p, _, _ in checks}:
        drawn = series(plot_svg(text, plot))
        ys, xs = [], []
        for _, key, i in [c for c in checks if c[0] == plot]:
            for ds in ("ds", "qa"):
                pts = marks(drawn[f"{key}-{ds}"])
                assert len(pts) == len(NIGHTS), (plot, key, ds)
                ys += [(want[(n, ds)][i], y) for n, (_, y) in zip(NIGHTS, pts, strict=True)]
                xs += [(k, x) for k, (x, _) in enumerate(pts)]
        assert_affine(ys)  # one y scale per plot: every point at its SQL value
        assert_affine(xs)  # and at its night
    # accuracy: only the graded dataset, against its all-premium baseline (1.0 every night)
    drawn = series(plot_svg(text, "accuracy"))
    assert set(drawn) == {"accuracy-qa", "baseline_accuracy-qa"}
    assert_affine([(want[(n, "qa")][9], y) for n, (_, y) in zip(NIGHTS, marks(drawn["accuracy-qa"]), strict=True)]
                  + [(1.0, y) for _, y in marks(drawn["baseline_accuracy-qa"])])


def test_quality_estimates_with_their_intervals_match_runs(wh, page):
    text = page.read_text()
    with duckdb.connect(str(wh), read_only=True) as c:
        want = c.execute(f"""
            SELECT run_id, dataset, {NIGHT_SQL}, quality_estimate, quality_low, quality_high, quality_n,
                   quality_unjudged, accuracy, quality_alert
            FROM runs u ORDER BY started_at, run_id""").fetchall()
    got = table(text, "quality")
    labels = dict(QUALITY_COLUMNS)
    assert [r[labels["run_id"]] for r in got] == [w[0] for w in want]
    for r, (run_id, ds, night, est, low, high, n, unjudged, acc, alert) in zip(got, want, strict=True):
        assert (r["night"], r["dataset"]) == (str(night), ds)
        ok, judged, left_out = DASHBOARD_QUALITY[run_id]  # what the runs were landed with
        assert (n, unjudged) == (judged, left_out) and num(r[labels["quality_n"]]) == n
        assert num(r[labels["quality_unjudged"]]) == unjudged
        for key, value in (("quality_estimate", est), ("quality_low", low), ("quality_high", high),
                           ("accuracy", acc)):
            assert (r[labels[key]] == "–") if value is None else (num(r[labels[key]]) == a(value, abs=5e-5))
        assert r[labels["quality_alert"]] == (alert or "–")
    assert got[1][labels["quality_estimate"]] == "–" and got[1][labels["run_id"]] == "n1-qa"  # nothing judged
    assert "under the floor 0.80" in got[-1][labels["quality_alert"]]

    # the plot: one dot per estimated run, its interval a bar from low to high, a cross per graded run, all on
    # one scale; a run's marks sit at its night
    drawn = series(plot_svg(text, "quality"))
    ys, xs = [], []
    for ds in ("ds", "qa"):
        rows = [w for w in want if w[1] == ds]
        est = [w for w in rows if w[3] is not None]
        dots, bars = marks(drawn[f"quality-{ds}"]), segments(drawn[f"interval-{ds}"])
        assert len(dots) == len(bars) == len(est)
        for w, (x, y), (bx, y0, y1) in zip(est, dots, bars, strict=True):
            assert bx == a(x, abs=0.01)
            ys += [(w[3], y), (w[4], max(y0, y1)), (w[5], min(y0, y1))]
            xs.append((NIGHTS.index(str(w[2])), x))
        graded = [w for w in rows if w[8] is not None]
        crosses = marks(drawn.get(f"measured-{ds}", ET.Element("g")))
        assert len(crosses) == len(graded) == (3 if ds == "qa" else 0)
        ys += [(w[8], y) for w, (_, y) in zip(graded, crosses, strict=True)]
    assert_affine(ys)
    night_x = {k: [x for kk, x in xs if kk == k] for k in range(len(NIGHTS))}
    assert max(night_x[0]) < min(night_x[1]) and max(night_x[1]) < min(night_x[2])  # grouped by night


def test_spend_and_saving_by_mechanism_match_savings_per_row(wh, page):
    text = page.read_text()
    with duckdb.connect(str(wh), read_only=True) as c:
        per_night = {(str(r[0]), r[1]): r[2:] for r in c.execute(f"""
            SELECT {NIGHT_SQL}, s.dataset, sum(s.baseline_cost_usd), sum(s.cost_usd), sum(s.dedup_saving_usd),
                   sum(s.cache_saving_usd), sum(s.routing_saving_usd), sum(s.waste_usd), sum(s.saving_usd)
            FROM savings_per_row s JOIN runs u USING (run_id) GROUP BY 1, 2""").fetchall()}
        dedup, cache, routing, batch, trim, total = c.execute("""SELECT sum(dedup_saving_usd),
            sum(cache_saving_usd), sum(routing_saving_usd), sum(batch_saving_usd), sum(trim_saving_usd),
            sum(saving_usd) FROM savings_per_row""").fetchone()
    got = {r["mechanism"]: r for r in table(text, "mechanisms")}
    assert ((num(got["dedup"]["usd"]), num(got["cache"]["usd"]), num(got["routing"]["usd"]),
             num(got["total saving"]["usd"])) == (a(dedup), a(cache), a(routing), a(total)))
    # the batch discount and trimming have their columns (migrations 11 and 13): recorded, measured (the sample's
    # rows were not trimmed: 0, shown as a measured 0, not as not recorded)
    assert num(got["batch discount"]["usd"]) == a(batch) and got["batch discount"]["recorded"] == "yes"
    assert num(got["trimming"]["usd"]) == a(trim) == 0 and got["trimming"]["recorded"] == "yes"
    assert "not recorded in the warehouse yet" not in text

    rows = table(text, "savings")
    assert len(rows) == 6
    for r in rows:
        base, cost, d, ca, ro, waste, saving = per_night[(r["night"], r["dataset"])]
        got_nums = [num(r[k]) for k in ("all-premium (USD)", "spend (USD)", "dedup", "cache", "routing", "waste",
                                        "saving (USD)")]
        assert got_nums == [a(v, abs=5e-5) for v in (base, cost, d, ca, ro, waste, saving)]
        assert num(r["trimming"]) == 0 and num(r["batch discount"]) == 0  # the sample's rows record neither

    # the plot: per night and dataset a bar of spend with each recorded mechanism on top, to one scale
    drawn = series(plot_svg(text, "spend"))
    assert any(k.startswith("trim_saving_usd") for k in drawn)  # recorded: drawn (at 0 here)
    heights = []
    for (night, ds), (base, cost, d, ca, ro, _, _) in per_night.items():
        stack = [bar(drawn[f"{key}-{ds}-{night}"]) for key in ("spend", "dedup_saving_usd", "cache_saving_usd",
                                                                "routing_saving_usd")]
        for (_, top), (bottom, _) in zip(stack, stack[1:]):
            assert bottom == a(top, abs=0.05)  # stacked
        heights += [(v, lo - hi) for v, (lo, hi) in zip((cost, d, ca, ro), stack, strict=True)]
    assert_affine(heights + [(0.0, 0.0)])
    # the all-premium ticks stand where the baseline is, on the y scale of the bars' bottoms
    bottom = bar(drawn[f"spend-ds-{NIGHTS[0]}"])[0]
    scale = next(h / v for v, h in heights if v > 0)
    for ds in ("ds", "qa"):
        ticks = marks(drawn[f"baseline-{ds}"])
        assert [bottom - y for _, y in ticks] == [a(per_night[(n, ds)][0] * scale, abs=0.05) for n in NIGHTS]


def test_a_recorded_mechanism_is_shown_and_drawn(wh, tmp_path):
    recorded = tmp_path / "wh.duckdb"
    shutil.copy(wh, recorded)
    with connect(recorded) as c:  # batch discounts recorded on the rows answered on premium
        c.execute("UPDATE results SET batch_discount_usd = 0.001 WHERE tier = 'premium' AND status = 'ok'")
        c.execute("UPDATE results SET trim_saving_usd = 0.0005 WHERE tier = 'small' AND status = 'ok'")
    with connect(recorded):  # a writer refreshes the views with the column now there
        pass
    with duckdb.connect(str(recorded), read_only=True) as c:
        batch, trim, routing = c.execute("SELECT sum(batch_saving_usd), sum(trim_saving_usd), sum(routing_saving_usd) "
                                         "FROM savings_per_row").fetchone()
    text = write_dashboard(recorded, tmp_path / "d.html").read_text()
    got = {r["mechanism"]: r for r in table(text, "mechanisms")}
    assert batch > 0 and num(got["batch discount"]["usd"]) == a(batch) and got["batch discount"]["recorded"] == "yes"
    assert trim > 0 and num(got["trimming"]["usd"]) == a(trim) and got["trimming"]["recorded"] == "yes"
    assert num(got["routing"]["usd"]) == a(routing)
    drawn = series(plot_svg(text, "spend"))
    assert any(k.startswith("batch_saving_usd-") for k in drawn) and any(k.startswith("trim_saving_usd-") for k in drawn)


def test_self_hosted_utilisation_per_tier_matches_the_view(wh, page):
    text = page.read_text()
    with duckdb.connect(str(wh), read_only=True) as c:
        want = {(str(r[0]), r[1], r[2]): r[3:] for r in c.execute("""
            SELECT CAST(timezone('UTC', started_at) AS DATE), dataset, tier, sum(billed_seconds),
                   sum(engine_start_s), sum(generate_s), sum(generate_s) / sum(billed_seconds)
            FROM utilisation GROUP BY 1, 2, 3""").fetchall()}
    labels = dict(UTILISATION_COLUMNS)
    got = table(text, "utilisation")
    assert {(r["night"], r["dataset"], r["tier"]) for r in got} == set(want)
    for r in got:
        billed, start, gen, busy = want[(r["night"], r["dataset"], r["tier"])]
        assert [num(r[labels[k]]) for k in ("billed_seconds", "engine_start_s", "generate_s", "busy")] == [
            a(billed, abs=5e-5), a(start, abs=5e-5), a(gen, abs=5e-5), a(busy, abs=5e-5)]
    drawn = series(plot_svg(text, "utilisation"))
    assert set(drawn) == {"busy-ds-small", "busy-qa-small"}
    assert_affine([(want[(n, ds, "small")][3], y) for ds in ("ds", "qa")
                   for n, (_, y) in zip(NIGHTS, marks(drawn[f"busy-{ds}-small"]), strict=True)])


def test_the_queries_in_the_docs_give_the_dashboards_numbers(wh, page):
    """docs/analysts.md's dashboard section: its queries, on the same warehouse, give the page's tables."""
    docs = (Path(__file__).resolve().parents[3] / "docs" / "analysts.md").read_text()
    section = docs[docs.index("## Every night at a glance"):]
    section = section[:section.index("![the dashboard")]
    nights_query, quality_query, tag_query, judge_query = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    text = page.read_text()
    with duckdb.connect(str(wh), read_only=True) as c:
        nights = c.execute(nights_query).fetchall()
        quality = c.execute(quality_query).fetchall()
        tags = c.execute(tag_query).fetchall()
        judge = c.execute(judge_query).fetchall()
    labels = dict(COLUMNS)
    got = table(text, "nights")
    assert [(r["night"], r["dataset"]) for r in got] == [(str(n), d) for n, d, *_ in nights]
    for r, (_, _, requests, per_1k, base_1k, err, quar) in zip(got, nights, strict=True):
        assert [num(r[labels[k]]) for k in ("requests", "cost_per_1k_usd", "baseline_per_1k_usd", "error_rate",
                                            "quarantine_rate")] == [a(v, abs=5e-5) for v in
                                                                    (requests, per_1k, base_1k, err, quar)]
    labels = dict(QUALITY_COLUMNS)
    got = table(text, "quality")
    assert [r[labels["run_id"]] for r in got] == [q[2] for q in quality]
    for r, (_, _, _, est, low, high, n, acc) in zip(got, quality, strict=True):
        for key, value in (("quality_estimate", est), ("quality_low", low), ("quality_high", high),
                           ("quality_n", n), ("accuracy", acc)):
            assert (r[labels[key]] == "–") if value is None else (num(r[labels[key]]) == a(value, abs=5e-5))
    labels = dict(TAG_COLUMNS)
    got = table(text, "tags")
    assert [(r["night"], r[labels["value"]]) for r in got] == [
        (str(n), v) for n, v, *_ in sorted(tags, key=lambda t: (t[0], t[1] == UNTAGGED, t[1]))]
    by = {(str(n), v): rest for n, v, *rest in tags}
    for r in got:
        assert [num(r[labels[k]]) for k in ("requests", "cost_usd", "baseline_cost_usd", "cost_per_1k_usd",
                                            "baseline_per_1k_usd")] == [
            a(v, abs=5e-5) for v in by[(r["night"], r[labels["value"]])]]
    savings = {(r["night"], r["dataset"]): r for r in table(text, "savings")}
    assert len(judge) == len(savings)
    for night, ds, judge_usd, net in judge:
        r = savings[(str(night), ds)]
        assert (r["judge (QA)"] == "–") if judge_usd is None else num(r["judge (QA)"]) == a(judge_usd, abs=5e-5)
        assert num(r["net saving (USD)"]) == a(net, abs=5e-5)


def test_days_counts_back_from_the_latest_night(wh, tmp_path):
    text = write_dashboard(wh, tmp_path / "d.html", days=1).read_text()
    assert {r["night"] for r in table(text, "nights")} == {"2026-01-07"}
    assert {r["night"] for r in table(text, "quality")} == {"2026-01-07"}
    assert {r["night"] for r in table(text, "utilisation")} == {"2026-01-07"}


def test_a_warehouse_from_an_older_sluice_is_upgraded_first(wh, tmp_path):
    """A file at schema version 5 (before the quality estimate's columns and with no views) is migrated, then drawn
    with the same numbers; its runs have no estimate."""
    old = tmp_path / "old.duckdb"
    with duckdb.connect(str(old)) as c:
        c.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP DEFAULT now())")
        for version, _, statements in MIGRATIONS:
            if version <= 5:
                for stmt in statements:
                    c.execute(stmt)
                c.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
        c.execute(f"ATTACH '{wh}' AS new (READ_ONLY)")
        for t in ("runs", "results"):
            cols = [r[0] for r in c.execute(f"DESCRIBE {t}").fetchall()]
            c.execute(f"INSERT INTO {t} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM new.{t}")
        c.execute("DETACH new")
        assert schema_version(c) == 5
        assert "quality_estimate" not in {r[0] for r in c.execute("DESCRIBE runs").fetchall()}
    text = write_dashboard(old, tmp_path / "d.html").read_text()
    with duckdb.connect(str(old), read_only=True) as c:
        assert schema_version(c) == SCHEMA_VERSION
    new_text = write_dashboard(wh, tmp_path / "new.html").read_text()
    old_rows, new_rows = table(text, "nights"), table(new_text, "nights")
    assert {r.pop("judge (USD)") for r in old_rows} == {"–"}  # before the judge's column: no judge ran
    assert old_rows == [{k: v for k, v in r.items() if k != "judge (USD)"} for r in new_rows]
    assert {r["quality estimate"] for r in table(text, "quality")} == {"–"}


def test_sluice_dashboard_command(wh, tmp_path):
    out = tmp_path / "d.html"
    res = CliRunner().invoke(app, ["dashboard", "-o", str(out), "--warehouse", str(wh), "--days", "2"])
    assert res.exit_code == 0, res.output
    assert {r["night"] for r in table(out.read_text(), "nights")} == {"2026-01-06", "2026-01-07"}
    res = CliRunner().invoke(app, ["dashboard", "--warehouse", str(tmp_path / "none.duckdb")])
    assert res.exit_code == 2 and "no warehouse" in res.output


def test_an_empty_warehouse_draws_placeholders(tmp_path):
    with connect(tmp_path / "empty.duckdb"):
        pass
    text = write_dashboard(tmp_path / "empty.duckdb", tmp_path / "d.html").read_text()
    assert text.count("<svg") == len(PLOTS) and text.count("in these nights") == len(PLOTS)
    assert "no runs" in text and "No row of the window carries a chargeback tag" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_the_dashboard_renders_in_headless_chromium(page, tmp_path):
    """No console errors, a drawn page; SLUICE_DASHBOARD_SCREENSHOT=docs/dashboard.png keeps the screenshot (960
    pixels wide, 256 colours) for the docs."""
    from PIL import Image, ImageChops

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    png = tmp_path / "dashboard.png"
    shot = subprocess.run([CHROMIUM, *flags, "--window-size=1280,5200", f"--screenshot={png}",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0, shot.stderr[-2000:]
    problems = [line for line in shot.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not problems, problems
    img = Image.open(png).convert("RGB")
    assert len(img.getcolors(maxcolors=1 << 20) or []) > 200  # not blank
    if os.environ.get("SLUICE_DASHBOARD_SCREENSHOT"):  # keep it (docs/dashboard.png), without the empty window below
        page_bg = Image.new("RGB", img.size, img.getpixel((img.width - 1, img.height - 1)))
        img = img.crop((0, 0, img.width, min(img.height, ImageChops.difference(img, page_bg).getbbox()[3] + 24)))
        small = img.resize((960, round(img.height * 960 / img.width)), Image.LANCZOS)
        small.quantize(256).save(os.environ["SLUICE_DASHBOARD_SCREENSHOT"], optimize=True)


# --- per tag ----------------------------------------------------------------------------------------------------

NIGHT_R = "CAST(timezone('UTC', u.started_at) AS DATE)"


def tag_sql(wh, key: str) -> dict:
    """Per night and value of `key`, from `results` (not the views): every row of a night and dataset where any row
    carries the key, under its value or (untagged): datasets, rows, spend, all-premium."""
    with duckdb.connect(str(wh), read_only=True) as c:
        return {(str(r[0]), r[1]): r[2:] for r in c.execute(f"""
            WITH x AS (SELECT {NIGHT_R} AS night, r.* FROM results r JOIN runs u USING (run_id)),
            listed AS (SELECT DISTINCT night, dataset FROM x WHERE x.tags->>'{key}' IS NOT NULL)
            SELECT night, coalesce(x.tags->>'{key}', '{UNTAGGED}'), count(DISTINCT dataset), count(*),
                   sum(cost_usd), sum(baseline_cost_usd)
            FROM x JOIN listed USING (night, dataset) GROUP BY 1, 2""").fetchall()}


def test_per_tag_cost_and_spend_match_sql(wh, page):
    """Default key: the one most rows carry (team: run r1's tag on the runs of its rows, and row s1's, against
    feature on r5 only). Per night and team: requests, spend, all-premium, cost per 1k, table and plots."""
    with duckdb.connect(str(wh), read_only=True) as c:
        carried = dict(c.execute("""SELECT k, count(*) FROM (SELECT unnest(json_keys(tags)) AS k FROM results
                                    WHERE tags IS NOT NULL) GROUP BY k""").fetchall())
    assert carried["team"] > carried["feature"] > 0
    text = page.read_text()
    assert "<h2>Per tag: team</h2>" in text and "the key most rows carry" in text
    want = tag_sql(wh, "team")
    assert {v for _, v in want} == {"search", "ads", UNTAGGED}
    labels = dict(TAG_COLUMNS)
    got = table(text, "tags")
    assert sorted((r["night"], r[labels["value"]]) for r in got) == sorted(want)
    for r in got:
        datasets, rows, cost, base = want[(r["night"], r[labels["value"]])]
        assert [num(r[labels[k]]) for k in ("datasets", "requests", "cost_usd", "baseline_cost_usd", "saving_usd",
                                            "cost_per_1k_usd", "baseline_per_1k_usd")] == [
            datasets, rows, a(cost, abs=5e-5), a(base, abs=5e-5), a(base - cost, abs=5e-5),
            a(1000 * cost / rows, abs=5e-5), a(1000 * base / rows, abs=5e-5)]
    # per night, the values add up to the night's totals (team is listed on every dataset of every night)
    per_night = nights_sql(wh)
    for n in NIGHTS:
        assert sum(w[1] for (night, _), w in want.items() if night == n) == sum(
            per_night[(n, ds)][1] for ds in ("ds", "qa"))

    # cost per 1k: one line per value (solid) and its all-premium (dashed), every point at its SQL value and night
    drawn = series(plot_svg(text, "tag-cost-per-1k"))
    ys, xs = [], []
    for v in ("search", "ads", UNTAGGED):
        for key, col in (("cost_per_1k_usd", 2), ("baseline_per_1k_usd", 3)):
            pts = marks(drawn[f"tag_{key}-{tag_slug(v)}"])
            assert len(pts) == len(NIGHTS)
            ys += [(1000 * want[(n, v)][col] / want[(n, v)][1], y) for n, (_, y) in zip(NIGHTS, pts, strict=True)]
            xs += [(k, x) for k, (x, _) in enumerate(pts)]
    assert_affine(ys)
    assert_affine(xs)

    # spend: a bar per night and value as tall as its spend, the all-premium ticks on the same scale
    drawn = series(plot_svg(text, "tag-spend"))
    heights, bottoms = [], set()
    for (n, v), (_, _, cost, _) in want.items():
        lo, hi = bar(drawn[f"tag_spend-{tag_slug(v)}-{n}"])
        heights.append((cost, lo - hi))
        bottoms.add(round(lo, 2))
    assert len(bottoms) == 1
    assert_affine(heights + [(0.0, 0.0)])
    scale, bottom = next(h / c for c, h in heights if c > 0), bottoms.pop()
    for v in ("search", "ads", UNTAGGED):
        ticks = marks(drawn[f"tag_baseline-{tag_slug(v)}"])
        assert [bottom - y for _, y in ticks] == [a(want[(n, v)][3] * scale, abs=0.05) for n in NIGHTS]


def test_tag_key_chooses_the_key(wh, tmp_path):
    """--tag-key feature: only the nights and datasets where a row carries it (run r1's rows: r5 is faq)."""
    out = tmp_path / "d.html"
    res = CliRunner().invoke(app, ["dashboard", "-o", str(out), "--warehouse", str(wh), "--tag-key", "feature"])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert "<h2>Per tag: feature</h2>" in text and "asked for with <code>--tag-key</code>" in text
    want = tag_sql(wh, "feature")
    labels = dict(TAG_COLUMNS)
    got = {(r["night"], r[labels["value"]]): r for r in table(text, "tags")}
    assert set(got) == set(want) and {v for _, v in want} == {"faq", UNTAGGED}
    for k, (datasets, rows, cost, base) in want.items():
        assert [num(got[k][labels[c]]) for c in ("datasets", "requests", "cost_usd", "baseline_cost_usd")] == [
            datasets, rows, a(cost, abs=5e-5), a(base, abs=5e-5)]
    assert all(want[(n, "faq")][1] == 1 for n in NIGHTS)
    text = write_dashboard(wh, tmp_path / "none.html", tag_key="nosuch").read_text()
    assert "No row of the window carries the tag <code>nosuch</code>" in text and "tags" not in table_ids(text)


def table_ids(text: str) -> set:
    p = _Tables()
    p.feed(text)
    return set(p.tables)


# --- the judge's spend ------------------------------------------------------------------------------------------


def test_the_judges_spend_is_its_own_line(wh, page):
    """The judge ran on n2-ds and n3-ds-b: its spend is a column and a mechanism line of its own, drawn on top of
    the stack, never in the rows' spend (a tier's); the runs' totals (rows + judge) give the net saving."""
    text = page.read_text()
    with duckdb.connect(str(wh), read_only=True) as c:
        want = {(str(r[0]), r[1]): r[2:] for r in c.execute(f"""
            WITH x AS (SELECT run_id, sum(cost_usd) AS rows_cost FROM results GROUP BY 1)
            SELECT {NIGHT_R}, u.dataset, sum(u.judge_cost_usd), sum(u.cost_usd), sum(u.baseline_cost_usd),
                   sum(x.rows_cost)
            FROM runs u JOIN x USING (run_id) GROUP BY 1, 2""").fetchall()}
        judged = dict(c.execute("SELECT run_id, judge_cost_usd FROM runs WHERE judge_cost_usd > 0").fetchall())
    assert judged == {k: a(v) for k, v in DASHBOARD_JUDGE.items()}
    for judge, total, _, rows_cost in want.values():  # the runs' total is the rows' cost plus the judge's
        assert total == a(rows_cost + (judge or 0))
    nights = {(r["night"], r["dataset"]): r for r in table(text, "nights")}
    savings = {(r["night"], r["dataset"]): r for r in table(text, "savings")}
    assert set(nights) == set(savings) == set(want)
    for k, (judge, total, base, rows_cost) in want.items():
        assert num(nights[k]["cost (USD)"]) == a(rows_cost, abs=5e-5)  # the rows' spend: no judge in it
        assert num(savings[k]["spend (USD)"]) == a(rows_cost, abs=5e-5)
        if judge is None:
            assert nights[k]["judge (USD)"] == savings[k]["judge (QA)"] == "–"
        else:
            assert num(nights[k]["judge (USD)"]) == num(savings[k]["judge (QA)"]) == a(judge, abs=5e-5)
        assert num(savings[k]["net saving (USD)"]) == a(base - total, abs=5e-5)
    mech = {r["mechanism"]: r for r in table(text, "mechanisms")}
    judge_total = sum(DASHBOARD_JUDGE.values())
    assert num(mech["quality assurance (judge)"]["usd"]) == a(-judge_total)
    assert num(mech["net saving (after the judge)"]["usd"]) == a(sum(b - t for _, t, b, _ in want.values()))
    card = re.search(r'<div class="v">\$([\d.]+)</div><div class="k">cost \(rows \+ judge\)', text)
    assert float(card.group(1)) == a(sum(t for _, t, _, _ in want.values()), abs=5e-5)

    # the plot: the judge's bar on top of each judged stack, as tall as its spend on the bars' scale
    drawn = series(plot_svg(text, "spend"))
    scale = None
    for (n, ds), (judge, _, _, rows_cost) in want.items():
        lo, hi = bar(drawn[f"spend-{ds}-{n}"])
        scale = scale or (lo - hi) / rows_cost
        stack_top = min(bar(g)[1] for key, g in drawn.items() if key.endswith(f"-{ds}-{n}")
                        and not key.startswith("judge_cost_usd"))
        j_lo, j_hi = bar(drawn[f"judge_cost_usd-{ds}-{n}"])
        assert j_lo == a(stack_top, abs=0.05) and j_lo - j_hi == a((judge or 0) * scale, abs=0.05)
