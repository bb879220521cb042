"""The dashboard's chargeback section: per night and value of one tag key, cost per 1,000 requests and spend against
the all-premium baseline (views `savings_by_tag`, sluice/warehouse/tag_views.py).

    sluice dashboard -o dashboard.html [--tag-key team]

The key is the one asked for, else the key carried by the most rows in the window (ties: by name); none when no row
of the window has a tag. For a key, a night and dataset where any row carries it counts every one of its rows once,
those without the key under "(untagged)" (the view's rule), so per night the values add up to the datasets'
totals; datasets where no row carries the key that night are not in the section. Requests count every input row,
as in the per-night table. The judge's spend is the runs' (`runs.judge_cost_usd`), no row's: it has no tag here.
"""

from __future__ import annotations

import html
import re

import duckdb

from sluice.reports.dashboard_plots import SPEND_COLOUR, _nights_axis, _nothing
from sluice.reports.html import _colours, _figure, _records, _svg, _table

UNTAGGED = "(untagged)"
MAX_PLOTTED = 8  # tag values drawn (those with the most spend); the table lists every one

_IN_WINDOW = """night > (SELECT max(CAST(timezone('UTC', started_at) AS DATE)) FROM runs) - CAST(? AS INTEGER)"""

# the keys of the window with the rows that carry each, most first
KEYS_SQL = f"""
SELECT tag_key, sum(rows) FILTER (tag_value IS NOT NULL) AS tagged_rows
FROM savings_by_tag WHERE {_IN_WINDOW}
GROUP BY tag_key ORDER BY tagged_rows DESC, tag_key
"""

# per night and value of one key, over the datasets that list the key that night
TAG_SQL = f"""
SELECT night, tag_value, count(DISTINCT dataset) AS datasets, sum(rows) AS requests,
       sum(cost_usd) AS cost_usd, sum(baseline_cost_usd) AS baseline_cost_usd, sum(saving_usd) AS saving_usd,
       100.0 * sum(saving_usd) / nullif(sum(baseline_cost_usd), 0) AS saving_pct,
       1000.0 * sum(cost_usd) / sum(rows) AS cost_per_1k_usd,
       1000.0 * sum(baseline_cost_usd) / sum(rows) AS baseline_per_1k_usd
FROM savings_by_tag WHERE tag_key = ? AND {_IN_WINDOW}
GROUP BY ALL ORDER BY night, tag_value NULLS LAST
"""

TAG_COLUMNS = [
    ("night", "night"), ("value", "value"), ("datasets", "datasets"), ("requests", "requests"),
    ("cost_usd", "spend (USD)"), ("baseline_cost_usd", "all-premium (USD)"), ("saving_usd", "saving (USD)"),
    ("saving_pct", "saving %"), ("cost_per_1k_usd", "cost / 1k req"), ("baseline_per_1k_usd", "all-premium / 1k req"),
]
TAG_PLOTS = ["tag-cost-per-1k", "tag-spend"]


def tag_slug(value: str) -> str:
    """A tag value as it appears in the plots' SVG ids (`tag_spend-<slug>-<night>`)."""
    return re.sub(r"[^0-9A-Za-z_.]", "_", value)


def tag_data(con: duckdb.DuckDBPyConnection, days: int, tag_key: str | None = None) -> dict:
    """keys (key, tagged rows) of the window, the key shown (None: no tags), its rows per night and value, and the
    values in plotting order (most spend first)."""
    keys = [(k, int(n or 0)) for k, n in con.execute(KEYS_SQL, [int(days)]).fetchall()]
    key = tag_key if tag_key else next((k for k, n in keys if n > 0), None)
    rows = _records(con, TAG_SQL, [key, int(days)]) if key else []
    for r in rows:
        r["night"] = r["night"].isoformat()
        r["value"] = UNTAGGED if r["tag_value"] is None else r["tag_value"]
    spend: dict[str, float] = {}
    for r in rows:
        spend[r["value"]] = spend.get(r["value"], 0.0) + float(r["cost_usd"] or 0)
    values = sorted(spend, key=lambda v: (-spend[v], v == UNTAGGED, v))
    return {"key": key, "asked": tag_key, "keys": keys, "rows": rows, "values": values}


# --- plots ------------------------------------------------------------------------------------------------------


def plot_tag_cost(tags: dict, nights: list[str]) -> str:
    """Cost per 1,000 requests per value (solid) against its all-premium (dashed); gids
    `tag_cost_per_1k_usd-<slug>` and `tag_baseline_per_1k_usd-<slug>`."""
    fig, ax = _figure(6.4, 3.2)
    values = tags["values"][:MAX_PLOTTED]
    colours = _colours(values)
    for v in values:
        pts = {r["night"]: r for r in tags["rows"] if r["value"] == v}
        xs = [i for i, n in enumerate(nights) if n in pts]
        for key, suffix, style in (("cost_per_1k_usd", "", "-"), ("baseline_per_1k_usd", " all-premium", "--")):
            ax.plot(xs, [float(pts[nights[i]][key]) for i in xs], ls=style, marker="o" if style == "-" else ".",
                    color=colours[v], alpha=1.0 if style == "-" else 0.7, label=f"{v}{suffix}",
                    gid=f"tag_{key}-{tag_slug(v)}")
    if values:
        _nights_axis(ax, nights, "USD")
    else:
        _nothing(ax, "tagged rows")
    ax.set_title(f"Cost per 1,000 requests by {tags['key'] or 'tag'}")
    return _svg(fig, "tag-cost")


def plot_tag_spend(tags: dict, nights: list[str]) -> str:
    """Per night, one bar per value: its spend (gid `tag_spend-<slug>-<night>`), the all-premium baseline as a
    black tick (gid `tag_baseline-<slug>`)."""
    fig, ax = _figure(6.4, 3.2)
    values = tags["values"][:MAX_PLOTTED]
    colours = _colours(values)
    if not values:
        _nothing(ax, "tagged rows")
    else:
        width = 0.8 / len(values)
        for j, v in enumerate(values):
            pts = {r["night"]: r for r in tags["rows"] if r["value"] == v}
            idx = [i for i, n in enumerate(nights) if n in pts]
            xs = [i - 0.4 + width * (j + 0.5) for i in idx]
            rows = [pts[nights[i]] for i in idx]
            bars = ax.bar(xs, [float(r["cost_usd"] or 0) for r in rows], width * 0.9, color=colours[v],
                          edgecolor=SPEND_COLOUR, label=v)
            for r, patch in zip(rows, bars.patches, strict=True):
                patch.set_gid(f"tag_spend-{tag_slug(v)}-{r['night']}")
            ax.plot(xs, [float(r["baseline_cost_usd"] or 0) for r in rows], ls="none", marker="_", markersize=12,
                    color="#1d2330", label="all-premium" if j == 0 else None, gid=f"tag_baseline-{tag_slug(v)}")
        _nights_axis(ax, nights, "USD")
    ax.set_title(f"Spend against all-premium by {tags['key'] or 'tag'}")
    return _svg(fig, "tag-spend")


# --- section ------------------------------------------------------------------------------------------------------


def tag_section(tags: dict, nights: list[str]) -> str:
    """The page's chargeback section: two plots and the table, or a note saying why there is none."""
    others = ", ".join(f"<code>{html.escape(k)}</code> ({n:,} rows)" for k, n in tags["keys"])
    if tags["key"] is None:
        body = ('<p class="note">No row of the window carries a chargeback tag (<code>sluice run --tag '
                "KEY=VALUE</code>, or a <code>tags</code> column).</p>")
        return f'<section id="tags"><h2>Per tag</h2>{body}</section>'
    key = html.escape(tags["key"])
    how = "asked for with <code>--tag-key</code>" if tags["asked"] else "the key most rows carry"
    if not tags["rows"]:
        body = f'<p class="note">No row of the window carries the tag <code>{key}</code>. Keys: {others or "none"}.</p>'
        return f'<section id="tags"><h2>Per tag: {key}</h2>{body}</section>'
    plotted = ""
    if len(tags["values"]) > MAX_PLOTTED:
        plotted = f" The plots show the {MAX_PLOTTED} values with the most spend of {len(tags['values'])}."
    figures = "".join(f'<figure id="plot-{pid}">{svg}</figure>' for pid, svg in (
        ("tag-cost-per-1k", plot_tag_cost(tags, nights)), ("tag-spend", plot_tag_spend(tags, nights))))
    return f"""<section id="tags"><h2>Per tag: {key}</h2><div class="plots">{figures}</div>
{_table(tags["rows"], TAG_COLUMNS, digits=4)}
<p class="note">Per night and value of <code>{key}</code> ({how}; keys of the window: {others};
<code>sluice dashboard --tag-key KEY</code> for another), from <code>savings_by_tag</code>: where any row of a night
and dataset carries the key, every row of it counts once, those without it under {UNTAGGED}; requests count every
input row. The judge's spend is the runs', no row's, and so in no tag.{plotted}</p></section>"""
