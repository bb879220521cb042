"""The runs people look back on: `sluice runs` (the last runs, one line each) and `sluice runs show RUN_ID`.

    list_runs(warehouse, runs_dir, limit=20, dataset=None) -> polars DataFrame, newest first
    run_summary(warehouse, run_id) -> dict: the summary the run printed when it landed (summary_lines)

Landed runs come from the warehouse (`runs`, `savings_per_run`), opened read-only. A run folder under `runs_dir`
whose manifest says it has not landed is listed as `unfinished` (started, killed or still running): running
the same command again resumes it (README "Kill it anywhere, run it again").
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

RUN_COLUMNS = {
    "run_id": pl.String, "dataset": pl.String, "status": pl.String, "started_at": pl.Datetime("us", "UTC"),
    "wall_s": pl.Float64, "rows": pl.Int64, "cost_usd": pl.Float64, "baseline_cost_usd": pl.Float64,
    "saving_usd": pl.Float64, "saving_pct": pl.Float64, "accuracy": pl.Float64, "graded_rows": pl.Int64,
    "baseline_accuracy": pl.Float64, "failed": pl.Int64, "quarantined": pl.Int64,
    "quality_estimate": pl.Float64, "quality_low": pl.Float64, "quality_high": pl.Float64, "quality_n": pl.Int64,
}


class RunNotFound(LookupError):
    pass


def landed_runs(warehouse: str | Path, dataset: str | None = None) -> pl.DataFrame:
    """Every landed run with its totals, saving, accuracy and quality estimate; wall time = finished_at -
    started_at. A file written by an older Sluice is migrated first (as for the report)."""
    from sluice.reports.html import upgrade_if_outdated
    from sluice.warehouse.db import connect

    if warehouse is None or not Path(warehouse).is_file():
        return pl.DataFrame(schema=RUN_COLUMNS)
    upgrade_if_outdated(warehouse)
    with connect(warehouse, read_only=True) as con:
        df = con.execute("""
            SELECT u.run_id, u.dataset, 'landed' AS status,
                   u.started_at,
                   epoch(u.finished_at) - epoch(u.started_at) AS wall_s,
                   u.rows, u.cost_usd, u.baseline_cost_usd,
                   u.baseline_cost_usd - u.cost_usd AS saving_usd,
                   CASE WHEN u.baseline_cost_usd > 0
                        THEN 100.0 * (u.baseline_cost_usd - u.cost_usd) / u.baseline_cost_usd END AS saving_pct,
                   u.accuracy, u.graded_rows, u.baseline_accuracy, u.failed, u.quarantined,
                   u.quality_estimate, u.quality_low, u.quality_high, u.quality_n
            FROM runs u
            WHERE ? IS NULL OR u.dataset = ?
            ORDER BY u.started_at DESC NULLS LAST, u.run_id DESC
        """, [dataset, dataset]).pl()
    return _typed(df)


def unfinished_runs(runs_dir: str | Path | None, landed: set[str], dataset: str | None = None) -> pl.DataFrame:
    """Run folders with a manifest that has not landed (and whose run is not in the warehouse)."""
    from sluice.runs import read_manifest

    recs = []
    root = Path(runs_dir) if runs_dir else None
    if root is not None and root.is_dir():
        for d in sorted(root.iterdir()):
            m = read_manifest(d) if d.is_dir() else None
            if not m or m.get("status") == "landed" or d.name in landed:
                continue
            if dataset is not None and m.get("dataset") != dataset:
                continue
            recs.append({"run_id": d.name, "dataset": m.get("dataset"), "status": "unfinished",
                         "started_at": _parse_time(m.get("created_at"))})
    return _typed(pl.DataFrame(recs, schema={k: RUN_COLUMNS[k] for k in ("run_id", "dataset", "status",
                                                                          "started_at")}))


def list_runs(warehouse: str | Path | None, runs_dir: str | Path | None = None, limit: int = 20,
              dataset: str | None = None) -> pl.DataFrame:
    """The last `limit` runs, newest first: landed ones from the warehouse, unfinished ones from run folders."""
    landed = landed_runs(warehouse, dataset) if warehouse else _typed(pl.DataFrame())
    unfinished = unfinished_runs(runs_dir, set(landed["run_id"].to_list()), dataset)
    both = pl.concat([landed, unfinished], how="vertical")
    return both.sort(["started_at", "run_id"], descending=True, nulls_last=True).head(limit)


def run_summary(warehouse: str | Path, run_id: str) -> dict:
    """RUN_ID's summary as it printed when the run landed: `summarise` over its landed rows, plus what `runs`
    recorded beside it (the all-premium baseline's accuracy, the quality estimate, timestamps)."""
    from sluice.reports.html import upgrade_if_outdated
    from sluice.stages.land.results import summarise
    from sluice.stages.land.trimmed import trim_summary
    from sluice.warehouse.db import connect

    upgrade_if_outdated(warehouse)
    with connect(warehouse, read_only=True) as con:
        cur = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
        cols = [d[0] for d in cur.description]
        found = cur.fetchall()
        if not found:
            known = [r[0] for r in con.execute(
                "SELECT run_id FROM runs ORDER BY started_at DESC NULLS LAST LIMIT 5").fetchall()]
            raise RunNotFound(f"no run {run_id!r} in the warehouse (latest: {', '.join(known) or 'none'})")
        run = dict(zip(cols, found[0], strict=True))
        results = con.execute("SELECT * FROM results WHERE run_id = ? ORDER BY row_index, row_id", [run_id]).pl()
        cut = con.execute("SELECT count(*), count(*) FILTER (usage_estimated), sum(cost_usd) FROM attempts "
                          "WHERE run_id = ? AND status = 'interrupted'", [run_id]).fetchone()
    summary = summarise(results) if results.height else _empty_summary()
    if cut and cut[0]:  # requests a kill cut off, and prompt trimming: their own lines, as the run printed them
        summary.update(interrupted_requests=cut[0], interrupted_estimated=cut[1], interrupted_cost_usd=cut[2])
    summary.update(trim_summary(results) if results.height and "trim_tokens_saved" in results.columns else {})
    if run.get("baseline_graded_rows"):
        n, acc = int(run["baseline_graded_rows"]), run.get("baseline_accuracy")
        summary.update(baseline_graded=n, baseline_accuracy=acc,
                       baseline_correct=round(acc * n) if acc is not None else 0)
    summary.update(recorded_quality(run, results))
    for k in ("routing", "quality_loop"):  # the router it used, the quality loop's decision (sluice/stages/route/loop.py)
        if run.get(k):
            summary[k] = json.loads(run[k])
    started, finished = run.get("started_at"), run.get("finished_at")
    wall = (finished - started).total_seconds() if started and finished else None
    return {**summary, "run_id": run_id, "dataset": run["dataset"], "source": run.get("source"),
            "started_at": started, "finished_at": finished, "wall_s": wall}


def recorded_quality(run: dict, results: pl.DataFrame) -> dict:
    """The quality estimate `runs` recorded (sluice/stages/land/estimate.py), in the summary's terms
    (sluice.reports.summary.quality_lines); nothing for runs landed before it existed. The rows it covers are the
    answered rows of the tiers with an estimate; the measured accuracy of those rows is not recorded, so the check
    against references shows the per-tier one only."""
    per_tier = json.loads(run["quality_per_tier"]) if run.get("quality_per_tier") else {}
    if not per_tier:
        return {}
    out = {k: run.get(k) for k in ("quality_estimate", "quality_low", "quality_high", "quality_n",
                                   "quality_unjudged", "min_quality", "quality_alert")}
    out["quality_per_tier"] = per_tier
    out["quality_rows"] = sum(int(e.get("rows") or 0) for e in per_tier.values() if e.get("estimate") is not None)
    out["quality_answered_rows"] = results.filter(pl.col("tier").is_not_null()).height if results.height else 0
    return out


def _empty_summary() -> dict:
    return {"rows": 0, "duplicates": 0, "quarantined": 0, "failed": 0, "duplicates_by_kind": {},
            "rows_per_tier": {}, "cost_per_tier_usd": {}, "cost_usd": 0.0, "baseline_cost_usd": 0.0,
            "saving_usd": 0.0, "saving_pct": 0.0, "graded": 0}


def _typed(df: pl.DataFrame) -> pl.DataFrame:
    """RUN_COLUMNS in order, with their types; started_at in UTC whatever the connection's time zone."""
    if not df.width:
        return pl.DataFrame(schema=RUN_COLUMNS)
    if "started_at" in df.columns and isinstance(df.schema["started_at"], pl.Datetime):
        tz = df.schema["started_at"].time_zone
        at = pl.col("started_at").dt.cast_time_unit("us")
        df = df.with_columns(at.dt.convert_time_zone("UTC") if tz else at.dt.replace_time_zone("UTC"))
    return df.select([(pl.col(c) if c in df.columns else pl.lit(None)).cast(t).alias(c)
                      for c, t in RUN_COLUMNS.items()])


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
