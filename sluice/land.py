"""Land: one `results` row per input row, every row accounted for, in one short DuckDB transaction.

    answered rows   status "ok" or "failed" (with the backend's reason), their tier, tokens, latency, cost
    duplicates      status "duplicate": the canonical row's answer, cost 0, no tokens sent; baseline is what the
                    premium tier would have charged to answer it again (the canonical row's baseline)
    quarantined     status "quarantined" with the ingest reason; nothing sent, nothing charged
    cache hits      status "duplicate", dup_kind "cache", dup_of "<run_id>/<row_id>" of an earlier night's row: its
                    response and model copied (carried by dedup in cache_response / cache_model), cost 0,
                    baseline = the earlier row's baseline; in-batch duplicates of a cache hit get the same answer

Re-landing a run replaces its rows (delete + insert in one transaction): never duplicates.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa

from sluice.infer import ANSWER_SCHEMA
from sluice.warehouse import RESULT_COLUMNS, connect

ANSWER_FIELDS = ["response", "model", "input_tokens", "output_tokens", "latency_ms", "cost_usd",
                 "baseline_cost_usd", "finish_reason"]


def assemble_results(routed: pa.Table, answers: list[pa.Table], run_id: str, dataset: str) -> pl.DataFrame:
    rows = pl.from_arrow(routed)
    assert isinstance(rows, pl.DataFrame)
    ans = pl.from_arrow(pa.concat_tables(answers) if answers else ANSWER_SCHEMA.empty_table())
    assert isinstance(ans, pl.DataFrame)
    if ans["row_id"].is_duplicated().any():
        raise ValueError("a row was answered twice; refusing to land (it would be charged twice)")

    own = ans.select(["row_id", "status", "error", "tier", *ANSWER_FIELDS]).rename(
        {"status": "a_status", "error": "a_error", "tier": "a_tier"}
    )
    canon = ans.select(
        pl.col("row_id").alias("dup_of"),
        pl.col("status").alias("c_status"),
        pl.col("error").alias("c_error"),
        pl.col("response").alias("c_response"),
        pl.col("model").alias("c_model"),
        pl.col("baseline_cost_usd").alias("c_baseline"),
    )
    rows, canon = _with_cache_hits(rows, canon)
    df = rows.join(own, on="row_id", how="left").join(canon, on="dup_of", how="left", maintain_order="left")

    pending = pl.col("status") == "pending"
    dup = pl.col("status") == "duplicate"
    unanswered = pending & pl.col("a_status").is_null()
    status = (
        pl.when(unanswered).then(pl.lit("failed"))
        .when(pending).then(pl.col("a_status"))
        .when(dup & (pl.col("c_status") != "ok")).then(pl.lit("failed"))
        .otherwise(pl.col("status"))
    )
    error = (
        pl.when(unanswered).then(pl.lit("no answer was produced for this row"))
        .when(pending).then(pl.col("a_error"))
        .when(dup & (pl.col("c_status") != "ok"))
        .then(pl.format("canonical row {} failed: {}", pl.col("dup_of"), pl.col("c_error")))
        .otherwise(pl.col("error"))
    )
    zero = pl.lit(0, dtype=pl.Int64)
    out = df.with_columns(
        pl.lit(run_id).alias("run_id"),
        pl.lit(dataset).alias("dataset"),
        pl.when(pending).then(pl.col("response")).when(dup).then(pl.col("c_response")).alias("response"),
        pl.when(pending).then(pl.col("a_tier")).alias("tier"),
        pl.when(pending).then(pl.col("model")).when(dup).then(pl.col("c_model")).alias("model"),
        pl.when(pending).then(pl.col("input_tokens")).otherwise(zero).fill_null(0).alias("input_tokens"),
        pl.when(pending).then(pl.col("output_tokens")).otherwise(zero).fill_null(0).alias("output_tokens"),
        pl.when(pending).then(pl.col("latency_ms")).alias("latency_ms"),
        pl.when(pending).then(pl.col("cost_usd")).otherwise(0.0).fill_null(0.0).alias("cost_usd"),
        pl.when(pending).then(pl.col("baseline_cost_usd")).when(dup).then(pl.col("c_baseline"))
        .otherwise(0.0).fill_null(0.0).alias("baseline_cost_usd"),
        pl.when(pending).then(pl.col("finish_reason")).alias("finish_reason"),
        status.alias("status"),
        error.alias("error"),
    )
    return out.select(RESULT_COLUMNS).sort("row_index")


def _with_cache_hits(rows: pl.DataFrame, canon: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cache hits answer like canonical rows: their answer (copied from the earlier night) joins the canonical
    answers under their own row_id, so an in-batch duplicate of a cache hit gets it too; the hit itself takes it
    from its own cache_* columns."""
    if "cache_response" not in rows.columns:
        return rows, canon
    hit = (pl.col("status") == "duplicate") & (pl.col("dup_kind") == "cache")
    from_cache = rows.filter(hit).select(
        pl.col("row_id").alias("dup_of"),
        pl.lit("ok").alias("c_status"),
        pl.lit(None, pl.String).alias("c_error"),
        pl.col("cache_response").alias("c_response"),
        pl.col("cache_model").alias("c_model"),
        pl.col("cache_baseline_cost_usd").alias("c_baseline"),
    )
    own_answer = rows.filter(hit).select(
        pl.col("dup_of"),
        pl.lit("ok").alias("c_status"),
        pl.lit(None, pl.String).alias("c_error"),
        pl.col("cache_response").alias("c_response"),
        pl.col("cache_model").alias("c_model"),
        pl.col("cache_baseline_cost_usd").alias("c_baseline"),
    ).unique("dup_of", keep="first")
    canon = pl.concat([canon, from_cache.cast(dict(canon.schema)), own_answer.cast(dict(canon.schema))])
    return rows.drop("cache_response", "cache_model", "cache_baseline_cost_usd"), canon


def summarise(results: pl.DataFrame) -> dict:
    by_tier = (
        results.filter(pl.col("tier").is_not_null())
        .group_by("tier")
        .agg(pl.len().alias("rows"), pl.col("cost_usd").sum().alias("cost_usd"))
        .sort("tier")
    )
    cost = float(results["cost_usd"].sum())
    baseline = float(results["baseline_cost_usd"].sum())
    return {
        "rows": results.height,
        "duplicates": int((results["status"] == "duplicate").sum()),
        "quarantined": int((results["status"] == "quarantined").sum()),
        "failed": int((results["status"] == "failed").sum()),
        "rows_per_tier": {r["tier"]: r["rows"] for r in by_tier.to_dicts()},
        "cost_per_tier_usd": {r["tier"]: r["cost_usd"] for r in by_tier.to_dicts()},
        "cost_usd": cost,
        "baseline_cost_usd": baseline,
        "saving_usd": baseline - cost,
        "saving_pct": (100.0 * (baseline - cost) / baseline) if baseline > 0 else 0.0,
    }


def land_results(
    warehouse: str | Path,
    results: pl.DataFrame,
    run: dict,
) -> None:
    """Replace this run's rows in the warehouse and record the run, in one short transaction.

    The rows are first staged as a Parquet part beside the warehouse (`<warehouse>.staging/`), before the file
    is opened: the lock is then held only for the delete + insert, and a writer that finds the file locked by
    another process waits and retries (`sluice.warehouse.connect`). Re-landing a run replaces its rows.
    """
    run_id = run["run_id"]
    if results["row_id"].is_duplicated().any():
        raise ValueError(f"run {run_id}: duplicate row_id in results; refusing to land")
    summary = summarise(results)
    staging = Path(f"{warehouse}.staging")
    staging.mkdir(parents=True, exist_ok=True)
    staged = staging / f"{run_id}-{os.getpid()}-{secrets.token_hex(3)}.parquet"
    results.write_parquet(staged)
    try:
        with connect(warehouse) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute("DELETE FROM results WHERE run_id = ?", [run_id])
                # by name: every column of `results` (RESULT_COLUMNS and any added by a later migration)
                con.execute("INSERT INTO results BY NAME SELECT * FROM read_parquet(?)", [str(staged)])
                con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
                con.execute(
                    "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        run_id,
                        run["dataset"],
                        run.get("source"),
                        run.get("started_at"),
                        run.get("finished_at") or datetime.now().astimezone(),
                        summary["rows"],
                        summary["duplicates"],
                        summary["quarantined"],
                        summary["failed"],
                        summary["cost_usd"],
                        summary["baseline_cost_usd"],
                        json.dumps(run.get("billing", {})),
                    ],
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    finally:
        staged.unlink(missing_ok=True)
