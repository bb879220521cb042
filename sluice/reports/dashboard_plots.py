"""The dashboard's plots (sluice/reports/dashboard.py): inline SVG drawn with the run report's helpers.

Every drawn series carries an SVG id (matplotlib's `gid`), `<key>-<dataset>[-<tier>]`, so the dashboard's test can
read each plotted point back and hold it against SQL on the same warehouse. The x axis is the night (its index
among the nights shown); per-run marks (the quality estimate) sit side by side around their night.
"""

from __future__ import annotations

from sluice.reports.html import _colours, _figure, _svg

# (savings_per_row column, label, the `results` column that records it; None: always recorded)
MECHANISMS = [("dedup_saving_usd", "dedup", None), ("cache_saving_usd", "cache", None),
              ("routing_saving_usd", "routing", None), ("batch_saving_usd", "batch discount", "batch_discount_usd"),
              ("trim_saving_usd", "trimming", "trim_saving_usd")]
MECHANISM_COLOURS = {"dedup": "#4C78A8", "cache": "#F58518", "routing": "#54A24B", "batch discount": "#B279A2",
                     "trimming": "#72B7B2"}
SPEND_COLOUR = "#9aa0aa"
JUDGE_COLOUR = "#B3261E"


def _nothing(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in these nights", ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _nights_axis(ax, nights: list[str], ylabel: str, legend: str = "best") -> None:
    ax.set_xticks(range(len(nights)), nights)
    ax.set_xlim(-0.5, len(nights) - 0.5)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, frameon=False, loc=legend)


def _lines(data: dict, series: list[tuple[str, str, str]], title: str, ylabel: str, salt: str,
           what: str = "runs") -> str:
    """One line per dataset and series (key, label suffix, line style) over the nights; gid `<key>-<dataset>`."""
    fig, ax = _figure(6.4, 3.2)
    colours = _colours(data["datasets"])
    nights = data["nights"]
    drawn = False
    for ds in data["datasets"]:
        pts = {r["night"]: r for r in data["rows"] if r["dataset"] == ds}
        for key, suffix, style in series:
            xs = [i for i, n in enumerate(nights) if n in pts and pts[n][key] is not None]
            if not xs:
                continue
            drawn = True
            ax.plot(xs, [float(pts[nights[i]][key]) for i in xs], marker="o" if style == "-" else ".", ls=style,
                    color=colours[ds], alpha=1.0 if style == "-" else 0.7, label=f"{ds}{suffix}", gid=f"{key}-{ds}")
    if drawn:
        _nights_axis(ax, nights, ylabel)
    else:
        _nothing(ax, what)
    ax.set_title(title)
    return _svg(fig, salt)


def _name_bars(bars, key: str, dataset: str, rows: list[dict]) -> None:
    for r, patch in zip(rows, bars.patches, strict=True):
        patch.set_gid(f"{key}-{dataset}-{r['night']}")


def plot_spend(data: dict) -> str:
    """Per night, one bar per dataset: its spend, then on top what each recorded mechanism saved; the all-premium
    baseline as a black tick (spend + savings = all-premium + waste, so the stack reaches the tick but for waste).
    The judge's spend (quality assurance, the runs' own line) on top of the stack, when any run had a judge: paid
    beyond the rows, it lifts the stack above the tick by its amount (gid `judge_cost_usd-<dataset>-<night>`)."""
    fig, ax = _figure(6.4, 3.2)
    nights, datasets = data["nights"], data["datasets"]
    if not nights:
        _nothing(ax, "runs")
    else:
        width = 0.8 / len(datasets)
        judged = any(r["judge_cost_usd"] for r in data["rows"])
        for j, ds in enumerate(datasets):
            pts = {r["night"]: r for r in data["rows"] if r["dataset"] == ds}
            idx = [i for i, n in enumerate(nights) if n in pts]
            xs = [i - 0.4 + width * (j + 0.5) for i in idx]
            rows = [pts[nights[i]] for i in idx]
            bottom = [float(r["cost_usd"] or 0) for r in rows]
            bars = ax.bar(xs, bottom, width * 0.9, color=SPEND_COLOUR, label="spend" if j == 0 else None)
            _name_bars(bars, "spend", ds, rows)
            for key, label, _ in MECHANISMS:
                if not data["recorded"][key]:
                    continue
                vals = [float(r[key] or 0) for r in rows]
                bars = ax.bar(xs, vals, width * 0.9, bottom=bottom, color=MECHANISM_COLOURS[label],
                              label=label if j == 0 else None)
                _name_bars(bars, key, ds, rows)
                bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
            if judged:
                bars = ax.bar(xs, [float(r["judge_cost_usd"] or 0) for r in rows], width * 0.9, bottom=bottom,
                              color=JUDGE_COLOUR, label="judge (quality assurance)" if j == 0 else None)
                _name_bars(bars, "judge_cost_usd", ds, rows)
            ax.plot(xs, [float(r["baseline_cost_usd"] or 0) for r in rows], ls="none", marker="_", markersize=14,
                    color="#1d2330", label="all-premium" if j == 0 else None, gid=f"baseline-{ds}")
            for x in xs:
                ax.annotate(ds, (x, 0), xytext=(0, -2), textcoords="offset points", ha="center", va="top",
                            fontsize=6, color="#5b6475")
        ax.set_xticks(range(len(nights)), nights)
        ax.tick_params(axis="x", pad=10)
        ax.set_xlim(-0.5, len(nights) - 0.5)
        ax.set_ylabel("USD")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room above the stacks for the legend
        ax.legend(fontsize=7, frameon=False, ncol=3, loc="upper left")
    ax.set_title("Spend against all-premium, saving by mechanism")
    return _svg(fig, "spend")


def plot_utilisation(data: dict) -> str:
    """Busy share (generating s / billed s) of each self-hosted tier, per dataset; gid `busy-<dataset>-<tier>`."""
    fig, ax = _figure(6.4, 3.2)
    nights = data["nights"]
    groups = sorted({(u["dataset"], u["tier"]) for u in data["utilisation"]})
    colours = _colours(data["datasets"])
    styles = ["-", "--", ":", "-."]
    tiers = sorted({t for _, t in groups})
    for ds, tier in groups:
        pts = {u["night"]: u for u in data["utilisation"] if (u["dataset"], u["tier"]) == (ds, tier)}
        xs = [i for i, n in enumerate(nights) if n in pts and pts[n]["busy"] is not None]
        ax.plot(xs, [float(pts[nights[i]]["busy"]) for i in xs], marker="o", color=colours[ds],
                ls=styles[tiers.index(tier) % len(styles)], label=f"{ds} {tier}", gid=f"busy-{ds}-{tier}")
    if groups:
        _nights_axis(ax, nights, "busy share of billed time")
        ax.set_ylim(0, 1.05)
    else:
        _nothing(ax, "self-hosted tiers")
    ax.set_title("Self-hosted tiers: busy share of billed time")
    return _svg(fig, "utilisation")


def quality_positions(data: dict) -> dict[str, float]:
    """x of each run's mark: its night's index, runs of the night spread side by side (by dataset, then start)."""
    pos = {}
    for i, night in enumerate(data["nights"]):
        runs = sorted((q for q in data["quality"] if q["night"] == night), key=lambda q: q["dataset"])
        for k, q in enumerate(runs):
            pos[q["run_id"]] = i + (k - (len(runs) - 1) / 2) * (0.5 / max(len(runs), 1))
    return pos


def plot_quality(data: dict) -> str:
    """Each run's quality estimate (a dot) with its 95% interval (a bar), and its measured accuracy (a cross) where
    graded. gids: `quality-<dataset>` (estimates), `interval-<dataset>` (bars), `measured-<dataset>` (accuracy)."""
    fig, ax = _figure(6.4, 3.2)
    colours = _colours(data["datasets"])
    pos = quality_positions(data)
    drawn = False
    for ds in data["datasets"]:
        est = [q for q in data["quality"] if q["dataset"] == ds and q["quality_estimate"] is not None]
        if est:
            drawn = True
            xs = [pos[q["run_id"]] for q in est]
            ax.vlines(xs, [q["quality_low"] for q in est], [q["quality_high"] for q in est], color=colours[ds],
                      lw=2, alpha=0.45, gid=f"interval-{ds}")
            ax.plot(xs, [q["quality_estimate"] for q in est], ls="none", marker="o", color=colours[ds],
                    label=f"{ds} estimate [95%]", gid=f"quality-{ds}")
        graded = [q for q in data["quality"] if q["dataset"] == ds and q["accuracy"] is not None]
        if graded:
            drawn = True
            ax.plot([pos[q["run_id"]] for q in graded], [q["accuracy"] for q in graded], ls="none", marker="x",
                    markersize=7, color=colours[ds], label=f"{ds} measured accuracy", gid=f"measured-{ds}")
    if drawn:
        _nights_axis(ax, data["nights"], "share acceptable", legend="lower left")
        ax.set_ylim(0, 1.05)
    else:
        _nothing(ax, "judged shadow pairs or graded rows")
    ax.set_title("Quality estimate per run (95% interval)")
    return _svg(fig, "quality")


def plots(data: dict) -> list[tuple[str, str]]:
    return [
        ("cost-per-1k", _lines(data, [("cost_per_1k_usd", "", "-"), ("baseline_per_1k_usd", " all-premium", "--")],
                               "Cost per 1,000 requests", "USD", "cost")),
        ("spend", plot_spend(data)),
        ("quality", plot_quality(data)),
        ("accuracy", _lines(data, [("accuracy", "", "-"), ("baseline_accuracy", " all-premium", "--")],
                            "Accuracy (graded rows)", "accuracy", "accuracy", what="graded rows")),
        ("tokens", _lines(data, [("tokens_per_request", "", "-")], "Tokens per request sent",
                          "input + output tokens", "tokens", what="requests sent")),
        ("latency", _lines(data, [("p50_ms", " p50", "-"), ("p90_ms", " p90", "--"), ("p99_ms", " p99", ":")],
                           "Latency of answered requests", "ms", "latency", what="answered requests")),
        ("errors", _lines(data, [("error_rate", " failed", "-"), ("quarantine_rate", " quarantined", "--")],
                          "Error and quarantine rates", "share of rows", "errors")),
        ("utilisation", plot_utilisation(data)),
    ]
