"""The run report: one self-contained HTML page (inline SVG plots, inline CSS, no network) for one run.

    sluice report RUN_ID -o report.html

It reads the warehouse read-only (the views of docs/analysts.md): the key numbers, forecast against actual when
`sluice plan` was run first, cost by tier, the savings waterfall, latency and token distributions, errors, and
the self-hosted workers' utilisation and break-even; when the dataset had references, accuracy per tier next to
the cost (the numbers of the view `quality_per_run`). `summary_table` is the same key table as a list of rows,
for the Prefect table artifact of the flow run.
"""

from __future__ import annotations

import html
import io
import re
from datetime import datetime, timezone
from pathlib import Path

import duckdb

TIER_COLOURS = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#EECA3B"]


# --- data -----------------------------------------------------------------------------------------------------


def _records(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


class ReportError(LookupError):
    pass


def report_data(con: duckdb.DuckDBPyConnection, run_id: str) -> dict:
    run = _records(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])
    if not run:
        known = [r[0] for r in con.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 5").fetchall()]
        raise ReportError(f"no run {run_id!r} in the warehouse (latest: {', '.join(known) or 'none'})")
    from sluice.reports.forecast import compare_forecast

    has_forecasts = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'forecasts'").fetchone()[0]
    return {
        "run": run[0],
        "savings": _records(con, "SELECT * FROM savings_per_run WHERE run_id = ?", [run_id])[0],
        "tiers": _records(con, """
            SELECT coalesce(tier, '(not sent)') AS tier, string_agg(DISTINCT model, ', ') AS model,
                   count(*) AS rows,
                   count(*) FILTER (status = 'ok') AS ok,
                   count(*) FILTER (status = 'failed') AS failed,
                   sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                   sum(cost_usd) AS cost_usd, sum(baseline_cost_usd) AS baseline_cost_usd,
                   count(correct) AS graded, avg(CAST(correct AS DOUBLE)) AS accuracy,
                   quantile_cont(latency_ms, 0.5) FILTER (status = 'ok') AS p50_ms,
                   quantile_cont(latency_ms, 0.9) FILTER (status = 'ok') AS p90_ms,
                   quantile_cont(latency_ms, 0.99) FILTER (status = 'ok') AS p99_ms
            FROM results WHERE run_id = ? GROUP BY 1 ORDER BY bool_or(tier IS NULL), 1""", [run_id]),
        "requests": _records(con, """
            SELECT tier, status, latency_ms, input_tokens, output_tokens FROM results
            WHERE run_id = ? AND tier IS NOT NULL""", [run_id]),
        "statuses": _records(con, """
            SELECT coalesce(tier, '(not sent)') AS tier, status, count(*) AS rows FROM results
            WHERE run_id = ? GROUP BY ALL ORDER BY ALL""", [run_id]),
        "errors": _records(con, """
            SELECT status, coalesce(tier, '-') AS tier, error, count(*) AS rows FROM results
            WHERE run_id = ? AND status IN ('failed', 'quarantined')
            GROUP BY ALL ORDER BY rows DESC, error LIMIT 15""", [run_id]),
        "utilisation": _records(con, "SELECT * FROM utilisation WHERE run_id = ? ORDER BY tier", [run_id]),
        "breakeven": _records(con, "SELECT * FROM breakeven WHERE run_id = ?", [run_id]),
        "forecast": compare_forecast(con, run_id) if has_forecasts else None,
    }


# --- plots ----------------------------------------------------------------------------------------------------


def _figure(width: float = 6.4, height: float = 3.4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "font.family": "sans-serif"})
    return plt.subplots(figsize=(width, height))


def _svg(fig, salt: str) -> str:
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = salt  # ids stay unique across the page's SVGs
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: the SVG is inlined


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this run", ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _colours(tiers: list[str]) -> dict[str, str]:
    return {t: TIER_COLOURS[i % len(TIER_COLOURS)] for i, t in enumerate(tiers)}


def plot_cost_by_tier(data: dict) -> str:
    fig, ax = _figure()
    tiers = [t for t in data["tiers"] if t["tier"] != "(not sent)"]
    if not tiers:
        _empty(ax, "requests sent")
    else:
        names = [t["tier"] for t in tiers]
        x = range(len(names))
        ax.bar([i - 0.2 for i in x], [t["cost_usd"] or 0 for t in tiers], width=0.4, label="actual cost",
               color="#4C78A8")
        ax.bar([i + 0.2 for i in x], [t["baseline_cost_usd"] or 0 for t in tiers], width=0.4,
               label="same rows on the baseline tier", color="#BBBBBB")
        ax.set_xticks(list(x), names)
        ax.set_ylabel("USD")
        ax.set_ylim(0, max(max(t["cost_usd"] or 0, t["baseline_cost_usd"] or 0) for t in tiers) * 1.25 or 1)
        ax.legend(frameon=False, loc="upper left", ncols=2)
    ax.set_title("Cost by tier")
    return _svg(fig, "cost")


def plot_savings_waterfall(data: dict) -> str:
    s = data["savings"]
    steps = [("dedup", s["dedup_saving_usd"]), ("cache", s["cache_saving_usd"]),
             ("routing", s["routing_saving_usd"]), ("trimming", s["trim_saving_usd"]),
             ("batch discount", s["batch_saving_usd"]), ("failed spend", -(s["waste_usd"] or 0))]
    fig, ax = _figure(7.2, 3.6)
    base = float(s["baseline_cost_usd"] or 0)
    labels = ["all-premium"]
    ax.bar(0, base, color="#888888")
    level = base
    for i, (name, amount) in enumerate(steps, start=1):
        amount = float(amount or 0)
        new = level - amount
        ax.bar(i, abs(amount) if amount else base * 0.002, bottom=min(level, new),
               color="#54A24B" if amount >= 0 else "#E45756")
        ax.text(i, max(level, new), f"{'-' if amount >= 0 else '+'}${abs(amount):.4g}", ha="center",
                va="bottom", fontsize=8)
        labels.append(name)
        level = new
    ax.bar(len(steps) + 1, float(s["cost_usd"] or 0), color="#4C78A8")
    labels.append("actual")
    ax.text(0, base, f"${base:.4g}", ha="center", va="bottom", fontsize=8)
    ax.text(len(steps) + 1, float(s["cost_usd"] or 0), f"${float(s['cost_usd'] or 0):.4g}", ha="center",
            va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.set_ylabel("USD")
    ax.set_title("Savings waterfall: from all-premium to what the run cost")
    return _svg(fig, "waterfall")


def plot_latency(data: dict) -> str:
    fig, ax = _figure()
    by: dict[str, list[float]] = {}
    for r in data["requests"]:
        if r["status"] == "ok" and r["latency_ms"] is not None:
            by.setdefault(r["tier"], []).append(r["latency_ms"] / 1000.0)
    if not by:
        _empty(ax, "answered requests")
    else:
        colours = _colours(sorted(by))
        top = max(max(v) for v in by.values()) or 1.0
        bins = [top * i / 30 for i in range(31)]  # shared bins: tiers compare bar for bar
        for tier in sorted(by):
            ax.hist(by[tier], bins=bins, alpha=0.6, label=f"{tier} ({len(by[tier])})", color=colours[tier])
        ax.set_xlabel("latency (s)")
        ax.set_ylabel("requests")
        ax.legend(frameon=False)
    ax.set_title("Latency distribution by tier")
    return _svg(fig, "latency")


def plot_tokens(data: dict) -> str:
    fig, ax = _figure()
    ins = [r["input_tokens"] for r in data["requests"] if r["input_tokens"]]
    outs = [r["output_tokens"] for r in data["requests"] if r["output_tokens"]]
    if not ins and not outs:
        _empty(ax, "tokens")
    else:
        top = max(ins + outs)
        bins = [top * i / 24 for i in range(25)]
        ax.hist(ins, bins=bins, alpha=0.6, label=f"input (mean {sum(ins) / max(len(ins), 1):.0f})", color="#4C78A8")
        ax.hist(outs, bins=bins, alpha=0.6, label=f"output (mean {sum(outs) / max(len(outs), 1):.0f})",
                color="#F58518")
        ax.set_xlabel("tokens per request")
        ax.set_ylabel("requests")
        ax.legend(frameon=False)
    ax.set_title("Tokens per request")
    return _svg(fig, "tokens")


def plot_errors(data: dict) -> str:
    fig, ax = _figure()
    statuses = ["ok", "duplicate", "failed", "quarantined"]
    extra = sorted({r["status"] for r in data["statuses"]} - set(statuses))
    statuses += extra
    tiers = list(dict.fromkeys(r["tier"] for r in data["statuses"]))
    colours = {"ok": "#54A24B", "duplicate": "#72B7B2", "failed": "#E45756", "quarantined": "#EECA3B"}
    counts = {(r["tier"], r["status"]): r["rows"] for r in data["statuses"]}
    bottom = [0] * len(tiers)
    for st in statuses:
        vals = [counts.get((t, st), 0) for t in tiers]
        if any(vals):
            ax.bar(tiers, vals, bottom=bottom, label=st, color=colours.get(st, "#999999"))
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    failed = sum(counts.get((t, "failed"), 0) + counts.get((t, "quarantined"), 0) for t in tiers)
    ax.set_ylabel("rows")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(f"Row fates by tier ({failed} failed or quarantined)")
    return _svg(fig, "errors")


# --- HTML -----------------------------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:20px 32px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#c5cad6;font-size:13px}main{padding:20px 32px;max-width:1280px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:20px}
.card{background:#fff;border-radius:8px;padding:12px 16px;min-width:150px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
.card .v{font-size:22px;font-weight:600}.card .k{font-size:12px;color:#5b6475}
.card.good .v{color:#2f7d32}
section{background:#fff;border-radius:8px;padding:16px 20px;margin-bottom:20px;box-shadow:0 1px 2px rgba(0,0,0,.08)}
h2{font-size:16px;margin:0 0 12px}table{border-collapse:collapse;font-size:13px;width:100%}
th,td{padding:5px 10px;border-bottom:1px solid #e6e8ec;text-align:right}th{background:#fafbfc}
td:first-child,th:first-child{text-align:left}.plots{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.plots figure{margin:0}.plots svg{width:100%;height:auto}.wide{grid-column:1 / -1}
td.t,th.t{text-align:left}.note{color:#5b6475;font-size:12px}.bad{color:#b3261e}.ok{color:#2f7d32}
"""


def _fmt(v, digits: int = 6) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and abs(v) < 10 ** -digits:
            return f"{v:.3g}"
        return f"{v:,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{v:,.0f}"
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return html.escape(str(v))


def _table(rows: list[dict], columns: list[tuple[str, str]] | None = None, digits: int = 6) -> str:
    if not rows:
        return '<p class="note">nothing to show</p>'
    columns = columns or [(c, c.replace("_", " ")) for c in rows[0]]
    text = {c for c, _ in columns if any(isinstance(r.get(c), str) for r in rows)}  # left-aligned columns
    head = "".join(f"<th{' class=t' if c in text else ''}>{html.escape(label)}</th>" for c, label in columns)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=t' if c in text else ''}>{_fmt(r.get(c), digits)}</td>"
                         for c, _ in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(data: dict) -> str:
    run, s = data["run"], data["savings"]
    cards = [
        ("rows", f"{s['rows']:,}", ""),
        ("total cost", f"${float(s['cost_usd'] or 0):.4f}", ""),
        ("all-premium cost", f"${float(s['baseline_cost_usd'] or 0):.4f}", ""),
        ("saving", f"{float(s['saving_pct'] or 0):.1f}%", "good"),
        ("duplicates", f"{run['duplicates']}", ""),
        ("failed / quarantined", f"{run['failed']} / {run['quarantined']}", ""),
    ]
    graded = sum(t.get("graded") or 0 for t in data["tiers"])
    if graded:  # answers graded against the dataset's references: accuracy next to cost
        correct = sum((t.get("accuracy") or 0) * (t.get("graded") or 0) for t in data["tiers"])
        cards.insert(4, ("accuracy (graded rows)", f"{correct / graded:.1%} of {graded:,}", ""))
    card_html = "".join(f'<div class="card {c}"><div class="v">{html.escape(v)}</div>'
                        f'<div class="k">{html.escape(k)}</div></div>' for k, v, c in cards)
    key_table = _table(data["tiers"], [
        ("tier", "tier"), ("model", "model"), ("rows", "rows"), ("ok", "ok"), ("failed", "failed"),
        ("input_tokens", "input tokens"), ("output_tokens", "output tokens"), ("cost_usd", "cost (USD)"),
        ("baseline_cost_usd", "all-premium (USD)"),
        *([("graded", "graded"), ("accuracy", "accuracy")] if graded else []),
        ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"), ("p99_ms", "p99 ms")])
    savings_rows = [{"part": k.replace("_usd", "").replace("_", " "), "usd": float(s[k] or 0)} for k in (
        "baseline_cost_usd", "dedup_saving_usd", "cache_saving_usd", "routing_saving_usd", "trim_saving_usd",
        "batch_saving_usd", "waste_usd", "cost_usd", "saving_usd")]
    fc = data["forecast"]
    if fc is None:
        forecast_html = ('<p class="note">No forecast for this run. Run <code>sluice plan DATASET.parquet</code> '
                         'before <code>sluice run</code> to compare forecast and actual here.</p>')
    else:
        verdict = ("ok", "within") if fc["cost_within_15pct"] else ("bad", "outside")
        err = fc["cost_error_pct"]
        forecast_html = (
            f'<p>Total cost forecast error: <b class="{verdict[0]}">'
            f'{"–" if err is None else f"{err:+.1f}%"}</b> ({verdict[1]} ±15%); forecast '
            f'<code>{html.escape(fc["forecast_id"])}</code> made {_fmt(fc["forecast_created_at"])}.</p>'
            + _table([{**r, "error_pct": None if r["error_pct"] is None else round(r["error_pct"], 1)}
                      for r in fc["rows"]], [("metric", "metric"), ("forecast", "forecast"), ("actual", "actual"),
                                  ("error_pct", "error %")])
        )
    plots = [
        ("cost-by-tier", plot_cost_by_tier(data), ""),
        ("savings-waterfall", plot_savings_waterfall(data), ""),
        ("latency", plot_latency(data), ""),
        ("tokens", plot_tokens(data), ""),
        ("errors", plot_errors(data), ""),
    ]
    plot_html = "".join(f'<figure id="plot-{pid}" class="{cls}">{svg}</figure>' for pid, svg, cls in plots)
    util = _table(data["utilisation"], [
        ("tier", "tier"), ("rows", "rows"), ("billed_seconds", "billed s"), ("engine_start_s", "engine start s"),
        ("generate_s", "generating s"), ("busy_fraction", "busy"), ("cost_usd", "cost (USD)"),
        ("output_tokens_per_s", "output tok/s")], digits=4)
    breakeven = _table(data["breakeven"], [
        ("self_hosted_rows", "self-hosted rows"), ("self_hosted_usd", "self-hosted (USD)"),
        ("api_usd", "same rows on the API (USD)"), ("start_usd", "engine start (USD)"),
        ("self_hosting_cheaper", "self-hosting cheaper"), ("breakeven_rows", "break-even rows")])
    errors = _table(data["errors"], [("status", "status"), ("tier", "tier"), ("error", "reason"),
                                     ("rows", "rows")])
    title = f"Sluice run {run['run_id']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body><header><h1>{html.escape(title)}</h1>
<p>dataset <b>{html.escape(run['dataset'])}</b> · source {_fmt(run['source'])} · started {_fmt(run['started_at'])}
 · finished {_fmt(run['finished_at'])}</p></header>
<main><div class="cards">{card_html}</div>
<section id="key-table"><h2>Tiers</h2>{key_table}</section>
<section id="forecast"><h2>Forecast against actual</h2>{forecast_html}</section>
<section><h2>Plots</h2><div class="plots">{plot_html}</div></section>
<section id="savings"><h2>Savings attribution (USD)</h2>{_table(savings_rows)}
<p class="note">saving = all-premium − cost = dedup + cache + routing + trimming + batch discount − waste
(docs/analysts.md).</p></section>
<section id="errors-table"><h2>Errors</h2>{errors}</section>
<section id="utilisation"><h2>Self-hosted workers</h2>{util}{breakeven}</section>
<p class="note">Generated by sluice report {_fmt(datetime.now(timezone.utc))}.</p>
</main></body></html>
"""


def write_report(warehouse: str | Path, run_id: str, out: str | Path) -> Path:
    """Render RUN_ID's report from the warehouse (migrated first if an older Sluice wrote it; then read-only) into
    OUT."""
    from sluice.warehouse.db import connect

    upgrade_if_outdated(warehouse)
    with connect(warehouse, read_only=True) as con:
        data = report_data(con, run_id)
    return write_page(render_html(data), out, "report")


def upgrade_if_outdated(warehouse: str | Path) -> bool:
    """A file written by an older Sluice (an older schema version, or views missing) is migrated in place, in a
    short write, so that the pages can read every column and view they show; a current file is only read.
    Returns whether it was migrated."""
    from sluice.warehouse.db import SCHEMA_VERSION, connect, schema_version
    from sluice.warehouse.views import VIEW_NAMES

    with connect(warehouse, read_only=True) as con:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        outdated = schema_version(con) < SCHEMA_VERSION or not set(VIEW_NAMES) <= views
    if outdated:
        with connect(warehouse):
            pass
    return outdated


def write_page(text: str, out: str | Path, what: str) -> Path:
    """Write a self-contained page (the report, the dashboard), refusing one that would reach the network."""
    if re.search(r"""(src|href)=["']https?://""", text):
        raise AssertionError(f"the {what} must not reference the network")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
