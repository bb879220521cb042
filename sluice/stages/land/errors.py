"""The `errors` table's rows for a run: one per failure it met, landed with it (and replaced with it).

    attempts    every request that failed or answered invalidly: stage `infer` (first answers, escalations) or
                `review` (schema retries, shadow answers, the judge's requests), its tier, attempt number and reason
    ingest      every quarantined row (attempt 0: nothing was sent), with ingest's reason naming file and row
    budget      every row the run's budget deferred (`deferred`; attempt 0): the next run answers it
    land        every failed row no failed attempt explains: a duplicate whose canonical row failed, a row no answer
                came back for (attempt 0); a failed row landed without its attempts (callers that pass none) is
                stage `infer`, under its tier and its attempt count
"""

from __future__ import annotations

import polars as pl

# which stage an attempt's failure belongs to: the first answers and escalations are inference, a schema retry, a
# shadow answer and the judge's verdict on a shadow pair are the review's passes
_ATTEMPT_STAGE = {"first": "infer", "escalation": "infer", "retry": "review", "shadow": "review", "judge": "review"}
ERROR_SCHEMA = {"stage": pl.String, "tier": pl.String, "row_id": pl.String, "error": pl.String, "attempt": pl.Int32}


def error_rows(results: pl.DataFrame, attempts: pl.DataFrame | None) -> pl.DataFrame:
    """Columns stage, tier, row_id, error, attempt (see the module's docstring), in no particular order."""
    parts = [pl.DataFrame(schema=ERROR_SCHEMA)]
    explained: list[str] = []
    if attempts is not None and attempts.height:
        bad = attempts.filter((pl.col("status") != "ok") & pl.col("error").is_not_null())
        parts.append(bad.select(pl.col("kind").replace_strict(_ATTEMPT_STAGE, default="infer").alias("stage"),
                                "tier", "row_id", "error", pl.col("attempt").cast(pl.Int32)))
        explained = bad.filter(~pl.col("kind").is_in(["shadow", "judge"]))["row_id"].to_list()
    unanswered = results.filter(pl.col("status").is_in(["quarantined", "deferred"]) & pl.col("error").is_not_null())
    parts.append(unanswered.select(
        pl.when(pl.col("status") == "quarantined").then(pl.lit("ingest")).otherwise(pl.lit("budget")).alias("stage"),
        pl.lit(None, pl.String).alias("tier"), "row_id", "error", pl.lit(0, pl.Int32).alias("attempt")))
    attempt_count = pl.col("attempts") if "attempts" in results.columns else pl.lit(None, pl.Int32)
    failed = results.filter((pl.col("status") == "failed") & ~pl.col("row_id").is_in(explained))
    parts.append(failed.select(
        pl.when(pl.col("tier").is_null()).then(pl.lit("land")).otherwise(pl.lit("infer")).alias("stage"),
        "tier", "row_id", pl.col("error").fill_null("failed (no reason recorded)"),
        pl.when(pl.col("tier").is_null()).then(0).otherwise(attempt_count.fill_null(1).clip(lower_bound=1))
        .cast(pl.Int32).alias("attempt")))
    return pl.concat(parts, how="vertical_relaxed")
