"""The dashboard: every night's runs, per dataset, in one self-contained HTML file (inline SVG, no network).

    sluice dashboard -o dashboard.html [--warehouse PATH] [--days 30]

Over the runs that started within `days` nights of the latest run (UTC dates of `runs.started_at`), per night and
dataset: cost per 1,000 requests against the all-premium baseline, tokens per request sent, latency p50/p90/p99
of answered requests, error (failed) and quarantine rates, the self-hosted tiers' utilisation (view
`utilisation`), accuracy where graded (`runs.accuracy`, weighted by graded rows) beside the all-premium
baseline's, and the saving split by mechanism (view `savings_per_row`): dedup, cache, routing. Batch discounts
and prompt trimming are not recorded yet: they show as 0, with a note. The plots reuse the run report's
helpers (sluice/reports/html.py).
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from sluice.reports.html import CSS, _colours, _empty, _figure, _fmt, _records, _svg, _table, write_page

NIGHTS_SQL = """
WITH sel AS (
    SELECT run_id, dataset, CAST(timezone('UTC', started_at) AS DATE) AS night, accuracy, graded_rows,
           baseline_accuracy, baseline_graded_rows
    FROM runs
    WHERE started_at IS NOT NULL
      AND CAST(timezone('UTC', started_at) AS DATE)
          > (SELECT max(CAST(timezone('UTC', started_at) AS DATE)) FROM runs) - CAST(? AS INTEGER)
), q AS (
    SELECT night, dataset, count(*) AS runs,
           sum(accuracy * graded_rows) FILTER (graded_rows > 0) / nullif(sum(graded_rows), 0) AS accuracy,
           sum(coalesce(graded_rows, 0)) AS graded_rows,
           sum(baseline_accuracy * baseline_graded_rows) FILTER (baseline_graded_rows > 0)
               / nullif(sum(baseline_graded_rows), 0) AS baseline_accuracy
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
       u.billed_seconds AS self_hosted_billed_s,
       u.generate_s / nullif(u.billed_seconds, 0) AS self_hosted_busy,
       q.accuracy, q.graded_rows, q.baseline_accuracy
FROM r JOIN q USING (night, dataset) LEFT JOIN u USING (night, dataset)
ORDER BY r.night, r.dataset
"""

# (column, label) of the per-night table, in order
COLUMNS = [
    ("night", "night"), ("dataset", "dataset"), ("runs", "runs"), ("requests", "requests"),
    ("cost_usd", "cost (USD)"), ("baseline_cost_usd", "all-premium (USD)"),
    ("spend_pct_of_baseline", "spend % of all-premium"), ("cost_per_1k_usd", "cost / 1k req"),
    ("baseline_per_1k_usd", "all-premium / 1k req"), ("tokens_per_request", "tokens / req"),
    ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms"), ("error_rate", "error rate"),
    ("quarantine_rate", "quarantine rate"), ("self_hosted_busy", "self-hosted busy"),
    ("accuracy", "accuracy"), ("baseline_accuracy", "all-premium accuracy"),
]
MECHANISMS = [("dedup_saving_usd", "dedup"), ("cache_saving_usd", "cache"), ("routing_saving_usd", "routing"),
              ("batch_saving_usd", "batch discount"), ("trim_saving_usd", "trimming")]


def dashboard_data(con: duckdb.DuckDBPyConnection, days: int = 30) -> dict:
    rows = _records(con, NIGHTS_SQL, [int(days)])
    for r in rows:
        r["night"] = r["night"].isoformat()
    datasets = sorted({r["dataset"] for r in rows})
    nights = sorted({r["night"] for r in rows})
    total = {k: sum(float(r[k] or 0) for r in rows) for k in (
        "cost_usd", "baseline_cost_usd", "saving_usd", "waste_usd", *(m for m, _ in MECHANISMS))}
    total["requests"] = sum(r["requests"] for r in rows)
    total["runs"] = sum(r["runs"] for r in rows)
    return {"rows": rows, "datasets": datasets, "nights": nights, "total": total, "days": days}


# --- plots ----------------------------------------------------------------------------------------------------


def _per_dataset_lines(data: dict, key: str, title: str, ylabel: str, baseline_key: str | None = None,
                       salt: str = "") -> str:
    fig, ax = _figure(6.4, 3.2)
    colours = _colours(data["datasets"])
    nights = data["nights"]
    drawn = False
    for ds in data["datasets"]:
        pts = {r["night"]: r for r in data["rows"] if r["dataset"] == ds}
        xs = [i for i, n in enumerate(nights) if n in pts and pts[n][key] is not None]
        if not xs:
            continue
        drawn = True
        ax.plot(xs, [float(pts[nights[i]][key]) for i in xs], marker="o", color=colours[ds], label=ds)
        if baseline_key:
            bx = [i for i in xs if pts[nights[i]][baseline_key] is not None]
            ax.plot(bx, [float(pts[nights[i]][baseline_key]) for i in bx], ls="--", color=colours[ds],
                    alpha=0.6, label=f"{ds} all-premium")
    if not drawn:
        _empty(ax, ylabel)
    else:
        ax.set_xticks(range(len(nights)), nights, rotation=0)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, frameon=False)
    ax.set_title(title)
    return _svg(fig, salt or key)


def plot_savings(data: dict) -> str:
    fig, ax = _figure(6.4, 3.2)
    nights = data["nights"]
    if not nights:
        _empty(ax, "runs")
    else:
        bottom = [0.0] * len(nights)
        colours = _colours([label for _, label in MECHANISMS])
        for key, label in MECHANISMS[:3]:
            vals = [sum(float(r[key] or 0) for r in data["rows"] if r["night"] == n) for n in nights]
            ax.bar(range(len(nights)), vals, bottom=bottom, color=colours[label], label=label)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_xticks(range(len(nights)), nights)
        ax.set_ylabel("USD saved against all-premium")
        ax.legend(fontsize=7, frameon=False)
    ax.set_title("Saving by mechanism, per night")
    return _svg(fig, "savings")


def plot_latency(data: dict) -> str:
    fig, ax = _figure(6.4, 3.2)
    nights = data["nights"]
    series = {}
    for q in ("p50_ms", "p90_ms", "p99_ms"):  # the worst dataset of the night
        series[q] = [max((float(r[q]) for r in data["rows"] if r["night"] == n and r[q] is not None), default=None)
                     for n in nights]
    if not any(v is not None for vals in series.values() for v in vals):
        _empty(ax, "answered requests")
    else:
        for q, vals in series.items():
            xs = [i for i, v in enumerate(vals) if v is not None]
            ax.plot(xs, [vals[i] for i in xs], marker="o", label=q.replace("_ms", ""))
        ax.set_xticks(range(len(nights)), nights)
        ax.set_ylabel("ms (worst dataset of the night)")
        ax.legend(fontsize=7, frameon=False)
    ax.set_title("Latency of answered requests")
    return _svg(fig, "latency")


def plots(data: dict) -> list[tuple[str, str]]:
    return [
        ("cost-per-1k", _per_dataset_lines(data, "cost_per_1k_usd", "Cost per 1,000 requests", "USD",
                                           "baseline_per_1k_usd")),
        ("savings", plot_savings(data)),
        ("latency", plot_latency(data)),
        ("accuracy", _per_dataset_lines(data, "accuracy", "Accuracy (graded rows)", "accuracy",
                                        "baseline_accuracy")),
    ]


# --- page -----------------------------------------------------------------------------------------------------


def render_dashboard(data: dict) -> str:
    t = data["total"]
    saving_pct = 100 * t["saving_usd"] / t["baseline_cost_usd"] if t["baseline_cost_usd"] else 0.0
    cards = [("runs", f"{t['runs']:,}"), ("requests", f"{t['requests']:,}"), ("cost", f"${t['cost_usd']:.4f}"),
             ("all-premium", f"${t['baseline_cost_usd']:.4f}"), ("saving", f"{saving_pct:.1f}%")]
    card_html = "".join(f'<div class="card"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}'
                        f"</div></div>" for k, v in cards)
    plot_html = "".join(f'<figure id="plot-{pid}">{svg}</figure>' for pid, svg in plots(data))
    rows = [{**r, "night": r["night"]} for r in data["rows"]]
    mech = [{"mechanism": label, "usd": round(t[key], 6)} for key, label in MECHANISMS]
    mech += [{"mechanism": "waste (failed, quarantined)", "usd": round(-t["waste_usd"], 6)},
             {"mechanism": "total saving", "usd": round(t["saving_usd"], 6)}]
    span = f"{data['nights'][0]} to {data['nights'][-1]}" if data["nights"] else "no runs"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Sluice dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body><header><h1>Sluice dashboard</h1>
<p>{html.escape(span)} · {data['days']} nights up to the latest run · per night (UTC date of the run's start) and
dataset</p></header>
<main><div class="cards">{card_html}</div>
<section><h2>Plots</h2><div class="plots">{plot_html}</div></section>
<section id="nights"><h2>Per night and dataset</h2>{_table(rows, COLUMNS, digits=4)}
<p class="note">cost / 1k req counts every input row as a request (rows never sent cost nothing); tokens / req and
latency are over requests sent; error rate = failed rows / rows; accuracy is weighted by graded rows
(<code>runs.accuracy</code>), all-premium accuracy where the baseline's answers are known.</p></section>
<section id="mechanisms"><h2>Saving by mechanism (USD)</h2>{_table(mech)}
<p class="note">Batch discounts and prompt trimming are not recorded in the warehouse yet: they show as 0 and are
counted in routing until they are (docs/analysts.md, <code>savings_per_row</code>).</p></section>
<p class="note">Generated by sluice dashboard {_fmt(datetime.now(timezone.utc))}.</p>
</main></body></html>
"""


def write_dashboard(warehouse: str | Path, out: str | Path, days: int = 30) -> Path:
    """Render the dashboard of the warehouse (read-only) into OUT."""
    from sluice.warehouse.db import connect

    with connect(warehouse, read_only=True) as con:
        data = dashboard_data(con, days)
    return write_page(render_dashboard(data), out, "dashboard")
