"""The dashboard: every night's runs, per dataset, in one self-contained HTML file (inline SVG, no network).

    sluice dashboard -o dashboard.html [--warehouse PATH] [--days 30] [--tag-key KEY]

Over the runs that started within `days` nights of the latest run (UTC dates of `runs.started_at`), per night and
dataset: cost per 1,000 requests against the all-premium baseline, spend against that baseline with the saving
split by mechanism (view `savings_per_row`: dedup, cache, routing, and batch discount and trimming once `results`
records them; until then they show as "not recorded", never as a made-up 0), tokens per request sent, latency
p50/p90/p99 of answered requests, error (failed) and quarantine rates, the self-hosted tiers' utilisation per tier
(view `utilisation`), each run's quality estimate with its 95% interval (`runs.quality_*`, from the judged shadow
sample) beside its measured accuracy where graded, and accuracy per night (`runs.accuracy`, weighted by graded
rows) beside the all-premium baseline's. The judge's spend (quality assurance, `runs.judge_cost_usd`) is a line of
its own, in no tier and no row: the runs' total cost is the rows' plus the judge's, and their net saving is the
rows' saving less it. Per tag: sluice/reports/dashboard_tags.py. A file written by an older Sluice is migrated
first, as for the report. The plots are in sluice/reports/dashboard_plots.py.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from sluice.reports.dashboard_plots import MECHANISMS, plots
from sluice.reports.dashboard_tags import tag_data, tag_section
from sluice.reports.html import CSS, _fmt, _records, _table, upgrade_if_outdated, write_page

# the runs of the window: `days` UTC nights counting back from the latest run's
WINDOW_SQL = """
WITH sel AS (
    SELECT *, CAST(timezone('UTC', started_at) AS DATE) AS night
    FROM runs
    WHERE started_at IS NOT NULL
      AND CAST(timezone('UTC', started_at) AS DATE)
          > (SELECT max(CAST(timezone('UTC', started_at) AS DATE)) FROM runs) - CAST(? AS INTEGER)
)"""

NIGHTS_SQL = WINDOW_SQL + """, q AS (
    SELECT night, dataset, count(*) AS runs,
           sum(accuracy * graded_rows) FILTER (graded_rows > 0) / nullif(sum(graded_rows), 0) AS accuracy,
           sum(coalesce(graded_rows, 0)) AS graded_rows,
           sum(baseline_accuracy * baseline_graded_rows) FILTER (baseline_graded_rows > 0)
               / nullif(sum(baseline_graded_rows), 0) AS baseline_accuracy,
           sum(judge_cost_usd) AS judge_cost_usd  -- NULL: no run of the night and dataset had a judge
    FROM sel GROUP BY ALL
), r AS (
    SELECT s.night, s.dataset,
           count(*) AS requests,
           sum(x.cost_usd) AS cost_usd,
           sum(x.baseline_cost_usd) AS baseline_cost_usd,
           1000.0 * sum(x.cost_usd) / count(*) AS cost_per_1k_usd,
           1000.0 * sum(x.baseline_cost_usd) / count(*) AS baseline_per_1k_usd,
           avg(x.input_tokens + x.output_tokens) FILTER (x.tier IS NOT NULL AND x.status IN ('ok', 'failed'))
               AS tokens_per_request,
           quantile_cont(x.latency_ms, 0.5) FILTER (x.tier IS NOT NULL AND x.status = 'ok') AS p50_ms,
           quantile_cont(x.latency_ms, 0.9) FILTER (x.tier IS NOT NULL AND x.status = 'ok') AS p90_ms,
           quantile_cont(x.latency_ms, 0.99) FILTER (x.tier IS NOT NULL AND x.status = 'ok') AS p99_ms,
           count(*) FILTER (x.status = 'failed') / count(*) AS error_rate,
           count(*) FILTER (x.status = 'quarantined') / count(*) AS quarantine_rate,
           count(*) FILTER (x.price_basis = 'batch') AS batch_priced_rows,
           sum(v.dedup_saving_usd) AS dedup_saving_usd,
           sum(v.cache_saving_usd) AS cache_saving_usd,
           sum(v.routing_saving_usd) AS routing_saving_usd,
           sum(v.batch_saving_usd) AS batch_saving_usd,
           sum(v.trim_saving_usd) AS trim_saving_usd,
           sum(v.waste_usd) AS waste_usd,
           sum(v.saving_usd) AS saving_usd
    FROM sel s JOIN results x USING (run_id) JOIN savings_per_row v ON v.run_id = x.run_id AND v.row_id = x.row_id
    GROUP BY ALL
), u AS (
    SELECT s.night, s.dataset, sum(u.billed_seconds) AS billed_seconds, sum(u.generate_s) AS generate_s
    FROM sel s JOIN utilisation u USING (run_id) GROUP BY ALL
)
SELECT r.night, r.dataset, q.runs, r.* EXCLUDE (night, dataset),
       100.0 * r.cost_usd / nullif(r.baseline_cost_usd, 0) AS spend_pct_of_baseline,
       100.0 * r.saving_usd / nullif(r.baseline_cost_usd, 0) AS saving_pct,
       q.judge_cost_usd,
       r.saving_usd - coalesce(q.judge_cost_usd, 0) AS net_saving_usd,
       u.billed_seconds AS self_hosted_billed_s,
       u.generate_s / nullif(u.billed_seconds, 0) AS self_hosted_busy,
       q.accuracy, q.graded_rows, q.baseline_accuracy
FROM r JOIN q USING (night, dataset) LEFT JOIN u USING (night, dataset)
ORDER BY r.night, r.dataset
"""

# one row per run: the judged quality estimate (sluice/stages/land/estimate.py) beside the measured accuracy
QUALITY_SQL = WINDOW_SQL + """
SELECT night, dataset, run_id, quality_estimate, quality_low, quality_high, quality_n, quality_unjudged,
       accuracy, graded_rows, min_quality, quality_alert
FROM sel ORDER BY started_at, run_id
"""

# the self-hosted tiers per night, dataset and tier (view `utilisation`: billed worker time and what it did)
UTILISATION_SQL = WINDOW_SQL + """
SELECT s.night, s.dataset, u.tier, sum(u.rows) AS rows, sum(u.billed_seconds) AS billed_seconds,
       sum(u.engine_start_s) AS engine_start_s, sum(u.generate_s) AS generate_s,
       sum(u.generate_s) / sum(u.billed_seconds) AS busy,
       sum(u.output_tokens) FILTER (u.generate_s > 0) / nullif(sum(u.generate_s) FILTER (u.generate_s > 0), 0)
           AS output_tokens_per_s,
       sum(u.cost_usd) AS cost_usd
FROM sel s JOIN utilisation u USING (run_id)
GROUP BY ALL ORDER BY ALL
"""

# (column, label) of the per-night table, in order
COLUMNS = [
    ("night", "night"), ("dataset", "dataset"), ("runs", "runs"), ("requests", "requests"),
    ("cost_usd", "cost (USD)"), ("judge_cost_usd", "judge (USD)"), ("baseline_cost_usd", "all-premium (USD)"),
    ("spend_pct_of_baseline", "spend % of all-premium"), ("cost_per_1k_usd", "cost / 1k req"),
    ("baseline_per_1k_usd", "all-premium / 1k req"), ("tokens_per_request", "tokens / req"),
    ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("error_rate", "error rate"),
    ("quarantine_rate", "quarantine rate"), ("self_hosted_busy", "self-hosted busy"),
    ("accuracy", "accuracy"), ("baseline_accuracy", "all-premium accuracy"),
]
QUALITY_COLUMNS = [
    ("night", "night"), ("dataset", "dataset"), ("run_id", "run"), ("quality_estimate", "quality estimate"),
    ("quality_low", "95% low"), ("quality_high", "95% high"), ("quality_n", "judged pairs"),
    ("quality_unjudged", "unjudged pairs"), ("accuracy", "measured accuracy"), ("graded_rows", "graded rows"),
    ("quality_alert", "floor alert"),
]
UTILISATION_COLUMNS = [
    ("night", "night"), ("dataset", "dataset"), ("tier", "tier"), ("rows", "rows"),
    ("billed_seconds", "billed s"), ("engine_start_s", "engine start s"), ("generate_s", "generating s"),
    ("busy", "busy"), ("output_tokens_per_s", "output tok/s"), ("cost_usd", "cost (USD)"),
]


def recorded_mechanisms(con: duckdb.DuckDBPyConnection) -> dict[str, bool]:
    """Per mechanism key: whether the warehouse records it (its `results` column exists; dedup, cache and routing
    always do). An unrecorded one is shown as such, never as a measured 0."""
    cols = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'results'").fetchall()}
    return {key: column is None or column in cols for key, _, column in MECHANISMS}


def dashboard_data(con: duckdb.DuckDBPyConnection, days: int = 30, tag_key: str | None = None) -> dict:
    rows = _records(con, NIGHTS_SQL, [int(days)])
    quality = _records(con, QUALITY_SQL, [int(days)])
    utilisation = _records(con, UTILISATION_SQL, [int(days)])
    for r in rows + quality + utilisation:
        r["night"] = r["night"].isoformat()
    recorded = recorded_mechanisms(con)
    for r in rows:  # a mechanism the warehouse does not record has no value, not 0
        for key, _, _ in MECHANISMS:
            if not recorded[key]:
                r[key] = None
    datasets = sorted({r["dataset"] for r in rows})
    nights = sorted({r["night"] for r in rows})
    total = {k: sum(float(r[k] or 0) for r in rows) for k in (
        "cost_usd", "baseline_cost_usd", "saving_usd", "waste_usd", "judge_cost_usd", "net_saving_usd",
        *(m for m, _, _ in MECHANISMS))}
    total["requests"] = sum(r["requests"] for r in rows)
    total["runs"] = sum(r["runs"] for r in rows)
    total["batch_priced_rows"] = sum(r["batch_priced_rows"] for r in rows)
    return {"rows": rows, "quality": quality, "utilisation": utilisation, "datasets": datasets, "nights": nights,
            "total": total, "recorded": recorded, "days": days, "tags": tag_data(con, days, tag_key)}


# --- page -----------------------------------------------------------------------------------------------------


def _mechanism_tables(data: dict) -> tuple[str, str, str]:
    """The saving by mechanism over the window, per night and dataset, and the note on what is not recorded."""
    t, recorded = data["total"], data["recorded"]
    mech = [{"mechanism": label, "usd": round(t[key], 6) if recorded[key] else None,
             "recorded": "yes" if recorded[key] else f"no: results.{column} does not exist yet"}
            for key, label, column in MECHANISMS]
    mech += [{"mechanism": "waste (failed, quarantined)", "usd": round(-t["waste_usd"], 6), "recorded": "yes"},
             {"mechanism": "total saving", "usd": round(t["saving_usd"], 6), "recorded": "yes"},
             {"mechanism": "quality assurance (judge)", "usd": round(-t["judge_cost_usd"], 6), "recorded": "yes"},
             {"mechanism": "net saving (after the judge)", "usd": round(t["net_saving_usd"], 6), "recorded": "yes"}]
    per_night = _table(data["rows"], [
        ("night", "night"), ("dataset", "dataset"), ("baseline_cost_usd", "all-premium (USD)"),
        ("cost_usd", "spend (USD)"), *((key, label) for key, label, _ in MECHANISMS),
        ("waste_usd", "waste"), ("saving_usd", "saving (USD)"), ("saving_pct", "saving %"),
        ("judge_cost_usd", "judge (QA)"), ("net_saving_usd", "net saving (USD)")], digits=4)
    missing = [label for key, label, _ in MECHANISMS if not recorded[key]]
    note = ""
    if missing:
        note = (f"{' and '.join(missing).capitalize()}: not recorded in the warehouse yet (–); what they saved is "
                f"counted in routing until a column records it (docs/analysts.md, <code>savings_per_row</code>).")
        if not recorded["batch_saving_usd"] and t["batch_priced_rows"]:
            note += (f" {t['batch_priced_rows']:,} rows were answered at provider batch prices "
                     f"(<code>results.price_basis</code>); their discount is in routing.")
    return _table(mech, [("mechanism", "mechanism"), ("usd", "usd"), ("recorded", "recorded")]), per_night, note


def render_dashboard(data: dict) -> str:
    t = data["total"]
    saving_pct = 100 * t["net_saving_usd"] / t["baseline_cost_usd"] if t["baseline_cost_usd"] else 0.0
    cards = [("runs", f"{t['runs']:,}"), ("requests", f"{t['requests']:,}"),
             ("cost (rows + judge)", f"${t['cost_usd'] + t['judge_cost_usd']:.4f}"),
             ("judge (quality assurance)", f"${t['judge_cost_usd']:.4f}"),
             ("all-premium", f"${t['baseline_cost_usd']:.4f}"), ("saving (net of the judge)", f"{saving_pct:.1f}%")]
    card_html = "".join(f'<div class="card"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}'
                        f"</div></div>" for k, v in cards)
    plot_html = "".join(f'<figure id="plot-{pid}">{svg}</figure>' for pid, svg in plots(data))
    mech, per_night, mech_note = _mechanism_tables(data)
    quality = [{**q, "quality_alert": q["quality_alert"] or ("met" if q["min_quality"] is not None else None)}
               for q in data["quality"]]
    span = f"{data['nights'][0]} to {data['nights'][-1]}" if data["nights"] else "no runs"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sluice dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}td:first-child{{white-space:nowrap}}section{{overflow-x:auto}}
</style></head>
<body><header><h1>Sluice dashboard</h1>
<p>{html.escape(span)} · {data['days']} nights up to the latest run · per night (UTC date of the run's start) and
dataset</p></header>
<main><div class="cards">{card_html}</div>
<section><h2>Plots</h2><div class="plots">{plot_html}</div></section>
<section id="nights"><h2>Per night and dataset</h2>{_table(data["rows"], COLUMNS, digits=4)}
<p class="note">cost / 1k req counts every input row as a request (rows never sent cost nothing); tokens / req and
latency are over requests sent; cost is the rows', the judge's spend (quality assurance) is its own column
(– where no run had a judge); error rate = failed rows / rows; accuracy is weighted by graded rows
(<code>runs.accuracy</code>), all-premium accuracy where the baseline's answers are known.</p></section>
<section id="quality"><h2>Quality estimate per run</h2>{_table(quality, QUALITY_COLUMNS, digits=4)}
<p class="note">The share of answers judged as good as the premium tier's, from the shadow sample judged by shape
(numbers, option letters, JSON), with its 95% Wilson interval and the pairs it rests on (<code>runs.quality_*</code>);
free-text pairs are put to the catalogue's judge tier where there is one, else left out (unjudged), as are verdicts
that did not parse. Measured accuracy is against references, where the
dataset has them: the estimate says "as good as premium", not "correct".</p></section>
<section id="savings"><h2>Spend against all-premium, by mechanism, per night and dataset (USD)</h2>{per_night}
<p class="note">saving = all-premium − spend = dedup + cache + routing + batch discount + trimming − waste;
net saving = saving − judge: the judge's spend (quality assurance, <code>runs.judge_cost_usd</code>) is the runs',
in no row and no tier, and drawn on top of the stack.</p>
</section>
<section id="mechanisms"><h2>Saving by mechanism (USD, every night)</h2>{mech}
<p class="note">{mech_note}</p></section>
{tag_section(data["tags"], data["nights"])}
<section id="utilisation"><h2>Self-hosted tiers</h2>{_table(data["utilisation"], UTILISATION_COLUMNS, digits=4)}
<p class="note">billed worker time per tier (<code>utilisation</code>): engine start is idle for the batch; busy =
generating s / billed s.</p></section>
<p class="note">Generated by sluice dashboard {_fmt(datetime.now(timezone.utc))}.</p>
</main></body></html>
"""


def write_dashboard(warehouse: str | Path, out: str | Path, days: int = 30, tag_key: str | None = None) -> Path:
    """Render the dashboard of the warehouse (migrated first if an older Sluice wrote it; then read-only) into OUT;
    the per-tag section shows `tag_key` (default: the key most rows of the window carry)."""
    from sluice.warehouse.db import connect

    upgrade_if_outdated(warehouse)
    with connect(warehouse, read_only=True) as con:
        data = dashboard_data(con, days, tag_key)
    return write_page(render_dashboard(data), out, "dashboard")
