"""Land: one `results` row per input row, every row accounted for, in one short DuckDB transaction.

    answered rows   status "ok" or "failed" (with the backend's reason), their tier, tokens, latency, cost
    duplicates      status "duplicate": the canonical row's answer, cost 0, no tokens sent; baseline is what the
                    premium tier would have charged to answer it again (the canonical row's baseline)
    quarantined     status "quarantined" with the ingest reason; nothing sent, nothing charged
    cache hits      status "duplicate", dup_kind "cache", dup_of "<run_id>/<row_id>" of an earlier night's row: its
                    response and model copied (carried by dedup in cache_response / cache_model), cost 0,
                    baseline = the earlier row's baseline; in-batch duplicates of a cache hit get the same answer

Every row with a `reference` is graded (sluice/stages/land/grading.py): `correct`, `grade_reason`, the `grader`
used; the run's accuracy, overall and per tier, goes to `summarise` and `runs`.
The run's quality estimate from its shadow pairs (sluice/stages/land/estimate.py), and its check against the run's
`min_quality` floor, join the summary and `runs` in `land_results`.

Rows answered more than once (a schema retry, a cascade escalation, a shadow answer: sluice/stages/review/decide.py) land once,
with the final answer (the last attempt that is not a shadow), `attempts`, `escalated`, `shadow`, and the sum of
every attempt's tokens and cost: what was spent on the row. Each attempt is also landed in `attempts`. An answer
still failing its schema after every attempt lands as "failed" with the validation error.

Chargeback (sluice/stages/land/chargeback.py): each row's tags are the run's (`run["tags"]`) overlaid by its own,
its input columns Sluice does not read are `meta`; the run's tags and its drop-box options land in `runs`.
The run's `errors` rows: sluice/stages/land/errors.py.

Re-landing a run replaces its rows (delete + insert in one transaction): never duplicates.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa

from sluice.contracts.columns import ANSWER_SCHEMA
from sluice.contracts.tags import tags_json
from sluice.stages.land.chargeback import apply_run_tags, with_chargeback_columns
from sluice.stages.land.checked import checks_spend
from sluice.stages.land.errors import error_rows
from sluice.stages.land.estimate import quality_check
from sluice.stages.land.grading import accuracy_summary, grade_results
from sluice.stages.land.judged import judge_spend
from sluice.stages.land.totals import saving
from sluice.stages.land.trimmed import restore_prompts
from sluice.stages.land.validated import validation_spend
from sluice.warehouse.db import ATTEMPT_COLUMNS, RESULT_COLUMNS, connect

ANSWER_FIELDS = ["response", "model", "input_tokens", "output_tokens", "latency_ms", "cost_usd",
                 "batch_discount_usd", "trim_saving_usd", "baseline_cost_usd", "finish_reason", "price_basis", "cached_input_tokens", "usage_estimated",
                 "mean_logprob", "parsed", "schema_valid", "attempts", "escalated", "escalated_from",
                 "cascade_reason", "shadow", "shadow_agrees", "shadow_cost_usd"]
# attempt kinds in the order they happen on one tier; tiers in catalogue order; shadow answers last
_KIND_ORDER = {"first": 0, "escalation": 0, "retry": 1, "shadow": 2}


def combine_attempts(attempts: list[tuple[str, pa.Table]], tier_order: list[str],
                     escalations: pl.DataFrame | None = None
                     ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(one answer per row, every attempt) from the answer tables of each kind ("first", "escalation", "retry",
    "shadow"). The row's answer is its last non-shadow attempt; its tokens, latency and cost add up all attempts
    (shadow latency excepted: nobody waited for it). `escalations`: row_id, escalated_from, cascade_reason of
    escalated rows (the review's decisions). Also returns the shadow pairs (row_id, response, _shadow_response,
    shadow_agrees) for `router_training`."""
    from sluice.contracts.answers import answers_agree

    parts = []
    for kind, table in attempts:
        if table.num_rows:
            df = pl.from_arrow(table)
            assert isinstance(df, pl.DataFrame)
            parts.append(df.with_columns(pl.lit(kind).alias("kind")))
    empty = pl.from_arrow(ANSWER_SCHEMA.empty_table()).with_columns(pl.lit(None, pl.String).alias("kind"))
    every = pl.concat([empty, *parts], how="diagonal_relaxed") if parts else empty
    rank = {t: i for i, t in enumerate(tier_order)}
    every = every.with_columns(
        pl.col("tier").replace_strict(rank, default=len(rank)).alias("_tier_rank"),
        pl.col("kind").replace_strict(_KIND_ORDER, default=3).alias("_kind_rank"),
        (pl.col("kind") == "shadow").cast(pl.Int8).alias("_is_shadow"),
    ).sort(["row_id", "_is_shadow", "_tier_rank", "_kind_rank"])
    every = every.with_columns((pl.int_range(pl.len()).over("row_id") + 1).alias("attempt"))
    dup = every.group_by("row_id", "kind", "tier").len().filter(pl.col("len") > 1)
    if dup.height:
        raise ValueError(f"row {dup['row_id'][0]} was answered twice as {dup['kind'][0]} on tier {dup['tier'][0]}; "
                         "refusing to land (it would be charged twice)")
    main = every.filter(pl.col("kind") != "shadow")
    # structured answers are compared by their parsed value, free text by its text
    shadow = every.filter(pl.col("kind") == "shadow").select(
        "row_id", pl.coalesce("parsed", "response").alias("_shadow_response"), pl.col("cost_usd").alias("shadow_cost_usd"),
        pl.col("status").alias("_shadow_status"))
    totals = every.group_by("row_id").agg(
        pl.col("input_tokens").sum(), pl.col("output_tokens").sum(), pl.col("cost_usd").sum(),
        pl.col("batch_discount_usd").sum(), pl.col("trim_saving_usd").sum(),
        pl.col("latency_ms").filter(pl.col("kind") != "shadow").sum().alias("latency_ms"),
        pl.len().cast(pl.Int32).alias("attempts"),
        (pl.col("kind") == "escalation").any().alias("escalated"),
    )
    final = main.group_by("row_id", maintain_order=True).last().drop(
        "input_tokens", "output_tokens", "cost_usd", "batch_discount_usd", "trim_saving_usd", "latency_ms", "attempt",
        "kind", "_tier_rank", "_kind_rank",
        "_is_shadow")
    final = final.join(totals, on="row_id", how="left").join(shadow, on="row_id", how="left")
    if escalations is not None and escalations.height:
        final = final.join(escalations.select("row_id", "escalated_from", "cascade_reason")
                           .unique("row_id", keep="first"), on="row_id", how="left")
    else:
        final = final.with_columns(pl.lit(None, pl.String).alias("escalated_from"),
                                   pl.lit(None, pl.String).alias("cascade_reason"))
    agrees = [
        None if s is None else (st == "ok" and answers_agree(p if p is not None else r, s))
        for r, p, s, st in zip(final["response"].to_list(), final["parsed"].to_list(),
                               final["_shadow_response"].to_list(), final["status"].to_list())
    ]  # status is the kept answer's: an invalid or failed cheap answer does not agree
    final = final.with_columns(
        pl.Series("shadow_agrees", agrees, pl.Boolean),
        pl.col("_shadow_status").is_not_null().alias("shadow"),
        pl.col("shadow_cost_usd").fill_null(0.0),
        # an answer still failing its schema after every attempt is a failed row, with the validation error
        pl.when(pl.col("status") == "invalid").then(pl.lit("failed")).otherwise(pl.col("status")).alias("status"),
    ).drop("_shadow_status")
    shadow_pairs = final.filter(pl.col("shadow")).select(
        "row_id", pl.coalesce("parsed", "response").alias("response"), "_shadow_response", "shadow_agrees")
    final = final.drop("_shadow_response")
    log_cols = ["row_id", "attempt", "kind", "tier", "model", "status", "error", "schema_valid", "input_tokens",
                "output_tokens", "latency_ms", "cost_usd", "mean_logprob", "response", "usage_estimated"]
    return final, every.select(log_cols), shadow_pairs


def assemble_results(routed: pa.Table, answers: list[pa.Table] | pl.DataFrame, run_id: str,
                     dataset: str) -> pl.DataFrame:
    """`answers`: answer tables of single-attempt rows, or one answer per row from `combine_attempts`."""
    from sluice.contracts.columns import with_shape_columns

    rows = with_chargeback_columns(with_shape_columns(pl.from_arrow(restore_prompts(routed))))  # prompt as it came
    if isinstance(answers, pl.DataFrame):
        ans = answers
    else:
        ans = pl.from_arrow(pa.concat_tables(answers, promote_options="default") if answers
                            else ANSWER_SCHEMA.empty_table())
        assert isinstance(ans, pl.DataFrame)
        ans = ans.with_columns(pl.when(pl.col("status") == "invalid").then(pl.lit("failed"))
                               .otherwise(pl.col("status")).alias("status"))
    for name, dtype in _ANSWER_DEFAULTS.items():
        if name not in ans.columns:
            ans = ans.with_columns(pl.lit(None, dtype).alias(name))
    if ans["row_id"].is_duplicated().any():
        raise ValueError("a row was answered twice; refusing to land (it would be charged twice)")

    own = ans.select(["row_id", "status", "error", "tier", *ANSWER_FIELDS]).rename(
        {"status": "a_status", "error": "a_error", "tier": "a_tier"}
    )
    rows = rows.drop([c for c in ("escalated_from", "cascade_reason") if c in rows.columns])
    canon = ans.select(
        pl.col("row_id").alias("dup_of"),
        pl.col("status").alias("c_status"),
        pl.col("error").alias("c_error"),
        pl.col("response").alias("c_response"),
        pl.col("model").alias("c_model"),
        pl.col("baseline_cost_usd").alias("c_baseline"),
        pl.col("parsed").alias("c_parsed"),
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
        *(pl.when(pending).then(pl.col(c)).otherwise(0.0).fill_null(0.0).alias(c)
          for c in ("batch_discount_usd", "trim_saving_usd")),
        pl.when(pending).then(pl.col("baseline_cost_usd")).when(dup).then(pl.col("c_baseline"))
        .otherwise(0.0).fill_null(0.0).alias("baseline_cost_usd"),
        pl.when(pending).then(pl.col("finish_reason")).alias("finish_reason"),
        pl.when(pending).then(pl.col("parsed")).when(dup).then(pl.col("c_parsed")).alias("parsed"),
        pl.when(pending & pl.col("a_status").is_not_null()).then(pl.col("attempts").fill_null(1))
        .otherwise(0).cast(pl.Int32).alias("attempts"),
        pl.when(pending).then(pl.col("escalated")).otherwise(False).fill_null(False).alias("escalated"),
        pl.when(pending).then(pl.col("shadow")).otherwise(False).fill_null(False).alias("shadow"),
        pl.when(pending).then(pl.col("shadow_cost_usd")).otherwise(0.0).fill_null(0.0).alias("shadow_cost_usd"),
        status.alias("status"),
        error.alias("error"),
    )
    out = grade_results(_parse_reused_answers(out))
    return out.select(RESULT_COLUMNS).sort("row_index")


def _parse_reused_answers(df: pl.DataFrame) -> pl.DataFrame:
    """Answers reused from an earlier night (cache hits) carry no parsed value: check them against the row's
    schema here (the cache only matches rows with the same schema, so they pass unless the schema's meaning
    changed)."""
    from sluice.contracts.answers import validate_answer

    todo = df["response_schema"].is_not_null() & df["parsed"].is_null() & df["response"].is_not_null()
    if not todo.any():
        return df
    parsed = [validate_answer(r, sc)[0] if t else p for r, sc, p, t in
              zip(df["response"].to_list(), df["response_schema"].to_list(), df["parsed"].to_list(), todo.to_list())]
    return df.with_columns(pl.Series("parsed", parsed, pl.String))


_ANSWER_DEFAULTS = {
    "batch_discount_usd": pl.Float64, "trim_saving_usd": pl.Float64, "price_basis": pl.String, "cached_input_tokens": pl.Int64, "usage_estimated": pl.Boolean,
    "mean_logprob": pl.Float64, "parsed": pl.String, "schema_valid": pl.Boolean, "attempts": pl.Int32,
    "escalated": pl.Boolean, "escalated_from": pl.String, "cascade_reason": pl.String, "shadow": pl.Boolean,
    "shadow_agrees": pl.Boolean, "shadow_cost_usd": pl.Float64,
}


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
        pl.lit(None, pl.String).alias("c_parsed"),
    )
    own_answer = rows.filter(hit).select(
        pl.col("dup_of"),
        pl.lit("ok").alias("c_status"),
        pl.lit(None, pl.String).alias("c_error"),
        pl.col("cache_response").alias("c_response"),
        pl.col("cache_model").alias("c_model"),
        pl.col("cache_baseline_cost_usd").alias("c_baseline"),
        pl.lit(None, pl.String).alias("c_parsed"),
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
        "duplicates_by_kind": dict(sorted(Counter(
            k for k, st in zip(results["dup_kind"].to_list(), results["status"].to_list()) if st == "duplicate"
        ).items())),
        **_follow_up_counts(results),
        "rows_per_tier": {r["tier"]: r["rows"] for r in by_tier.to_dicts()},
        "cost_per_tier_usd": {r["tier"]: r["cost_usd"] for r in by_tier.to_dicts()},
        "cost_usd": cost,
        "baseline_cost_usd": baseline,
        **saving(cost, baseline),
        **accuracy_summary(results),  # graded, correct, accuracy, accuracy_per_tier (sluice.stages.land.grading)
    }


def _follow_up_counts(results: pl.DataFrame) -> dict:
    """Cascade, shadow and structured-output counts (0 for results landed without those columns)."""
    def count(expr: pl.Expr) -> int:
        return int(results.select(expr.fill_null(False).sum()).item())

    if "escalated" not in results.columns:
        return {}
    sent = pl.col("tier").is_not_null()
    return {
        "escalated": count(pl.col("escalated")),
        "shadow": count(pl.col("shadow")),
        "shadow_agreed": count(pl.col("shadow_agrees")),
        "shadow_cost_usd": float(results["shadow_cost_usd"].fill_null(0.0).sum()),
        "structured": count(pl.col("response_schema").is_not_null() & sent),
        "structured_valid": count(pl.col("response_schema").is_not_null() & sent & pl.col("parsed").is_not_null()),
    }


def land_results(
    warehouse: str | Path,
    results: pl.DataFrame,
    run: dict,
    attempts: pl.DataFrame | None = None,
    labels: pl.DataFrame | None = None,
    baseline_quality: dict | None = None,
    quality_estimate: dict | None = None,
    judge: dict | None = None,
) -> dict:
    """Replace this run's rows in the warehouse and record the run, in one short transaction; returns the run's
    summary (`summarise`), as recorded in `runs`.

    The rows are first staged as a Parquet part beside the warehouse (`<warehouse>.staging/`), before the file
    is opened: the lock is then held only for the delete + insert, and a writer that finds the file locked by
    another process waits and retries (`sluice.warehouse.db.connect`). Re-landing a run replaces its rows.
    """
    run_id = run["run_id"]
    results = apply_run_tags(results, run.get("tags"))  # sluice.stages.land.chargeback
    if results["row_id"].is_duplicated().any():
        raise ValueError(f"run {run_id}: duplicate row_id in results; refusing to land")
    summary = summarise(results)
    summary.update(judge_spend(summary, judge))  # the judge's own line, in the run's total (land/judged.py)
    summary.update(checks_spend(summary, run.get("billing")))  # the dedup cluster checks' too (land/checked.py)
    summary.update(validation_spend(summary, run.get("billing")))  # and validating tiers (land/validated.py)
    summary.update(baseline_quality or {})
    summary.update(quality_estimate or {})  # sluice.stages.land.estimate; against run["min_quality"], if set
    summary.update(quality_check(summary, run.get("min_quality")))
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
                con.execute("DELETE FROM errors WHERE run_id = ?", [run_id])
                errors = error_rows(results, attempts)
                if errors.height:
                    con.register("_errors", errors.with_columns(pl.lit(run_id).alias("run_id")).to_arrow())
                    con.execute("INSERT INTO errors (run_id, stage, tier, row_id, error, attempt) "
                                "SELECT run_id, stage, tier, row_id, error, attempt FROM _errors")
                    con.unregister("_errors")
                con.execute("DELETE FROM attempts WHERE run_id = ?", [run_id])
                if attempts is not None and attempts.height:
                    con.register("_attempts", attempts.with_columns(pl.lit(run_id).alias("run_id")).select(
                        [c for c in ATTEMPT_COLUMNS if c in attempts.columns or c == "run_id"]).to_arrow())
                    con.execute("INSERT INTO attempts BY NAME SELECT * FROM _attempts")
                    con.unregister("_attempts")
                if labels is not None and labels.height:
                    from sluice.warehouse.labels import add_labels

                    add_labels(con, labels)
                schemas = results.filter(pl.col("parsed").is_not_null())["response_schema"].drop_nulls()
                if schemas.len():
                    from sluice.warehouse.views import create_structured_view

                    create_structured_view(con, run["dataset"], schemas.mode().sort()[0])
                con.execute("DELETE FROM runs WHERE run_id = ?", [run_id])
                values = {
                    "run_id": run_id, "dataset": run["dataset"], "source": run.get("source"),
                    "started_at": run.get("started_at"),
                    "finished_at": run.get("finished_at") or datetime.now().astimezone(),
                    "rows": summary["rows"], "duplicates": summary["duplicates"],
                    "quarantined": summary["quarantined"], "failed": summary["failed"],
                    "cost_usd": summary["cost_usd"], "baseline_cost_usd": summary["baseline_cost_usd"],
                    "billing": json.dumps(run.get("billing", {})),
                    "accuracy": summary["accuracy"], "graded_rows": summary["graded"],
                    "accuracy_per_tier": json.dumps(summary["accuracy_per_tier"]),
                    "baseline_accuracy": summary.get("baseline_accuracy"),
                    "baseline_graded_rows": summary.get("baseline_graded"),
                    **{c: summary.get(c) for c in ("quality_estimate", "quality_low", "quality_high", "quality_n",
                                                   "quality_unjudged", "min_quality", "quality_alert",
                                                   "quality_unparseable", "quality_judge_failed", "judge_tier",
                                                   "judge_cost_usd")},
                    "quality_per_tier": json.dumps(summary.get("quality_per_tier") or {}),
                    "tags": tags_json(run.get("tags")),
                    "submission": json.dumps(run["submission"]) if run.get("submission") else None,
                }
                con.execute(f"INSERT INTO runs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                            list(values.values()))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    finally:
        staged.unlink(missing_ok=True)
    return summary
