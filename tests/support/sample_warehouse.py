"""A small hand-built warehouse whose every view has numbers worked out by hand (tests and docs examples).

Two runs of dataset `ds`, landed through `land_results` like a real run:

run r1 (2026-01-05 10:00 UTC): small worker billed 100 s (40 s engine start, 60 s generating) = $0.0025;
premium API $0.009.
    row  status       tier     in   out  latency  cost    baseline  dup
    r1   ok           small    100   40    100    0.0010  0.0040
    r2   ok           small    200   60    200    0.0010  0.0060
    r3   failed       small     50    0    300    0.0005  0
    r4   ok           premium  300  100   1000    0.0050  0.0050
    r5   ok           premium  100   50   2000    0.0040  0.0040
    r6   duplicate    -          0    0      -    0       0.0040    exact of r1
    r7   duplicate    -          0    0      -    0       0.0030    cache
    r8   quarantined  -          0    0      -    0       0

Chargeback tags: run r1 is tagged team=search; rows r4 (team=ads: its own value wins) and r5 (feature=faq) and
s1 (team=search) carry their own; run r2 has no run tags.

run r2 (2026-01-06 09:00 UTC): small worker billed 50 s (engine reused, 50 s generating) = $0.0020.
    s1   ok           small    100   80    400    0.0010  0.0050
    s2   ok           small    100   20    500    0.0010  0.0020
    s3   duplicate    -          0    0      -    0       0.0050    near of s1
    s4   failed       premium    0    0     50    0       0
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from sluice.stages.land.results import land_results
from sluice.warehouse.db import RESULT_COLUMNS

R1 = [
    # row_id, status, tier, model, in, out, latency, cost, baseline, dup_of, dup_kind, max_tokens, error
    ("r1", "ok", "small", "small-model", 100, 40, 100.0, 0.0010, 0.0040, None, None, None, None),
    ("r2", "ok", "small", "small-model", 200, 60, 200.0, 0.0010, 0.0060, None, None, 100, None),
    ("r3", "failed", "small", "small-model", 50, 0, 300.0, 0.0005, 0.0, None, None, None, "engine died"),
    ("r4", "ok", "premium", "premium-model", 300, 100, 1000.0, 0.0050, 0.0050, None, None, None, None),
    ("r5", "ok", "premium", "premium-model", 100, 50, 2000.0, 0.0040, 0.0040, None, None, None, None),
    ("r6", "duplicate", None, "small-model", 0, 0, None, 0.0, 0.0040, "r1", "exact", None, None),
    ("r7", "duplicate", None, "premium-model", 0, 0, None, 0.0, 0.0030, None, "cache", None, None),
    ("r8", "quarantined", None, None, 0, 0, None, 0.0, 0.0, None, None, None, "prompt is null"),
]
R2 = [
    ("s1", "ok", "small", "small-model", 100, 80, 400.0, 0.0010, 0.0050, None, None, None, None),
    ("s2", "ok", "small", "small-model", 100, 20, 500.0, 0.0010, 0.0020, None, None, None, None),
    ("s3", "duplicate", None, "small-model", 0, 0, None, 0.0, 0.0050, "s1", "near", None, None),
    ("s4", "failed", "premium", "premium-model", 0, 0, 50.0, 0.0, 0.0, None, None, None, "HTTP 500: boom"),
]
RUNS = {
    "r1": {
        "run_id": "r1", "dataset": "ds", "source": "ds.parquet",
        "started_at": datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc),
        "finished_at": datetime(2026, 1, 5, 10, 5, tzinfo=timezone.utc),
        "billing": {
            "small": {"rows": 3.0, "billed_seconds": 100.0, "cost_usd": 0.0025, "engine_start_s": 40.0,
                      "generate_s": 60.0},
            "premium": {"rows": 2.0, "billed_seconds": 0.0, "cost_usd": 0.009},
        },
        "tags": {"team": "search"},
    },
    "r2": {
        "run_id": "r2", "dataset": "ds", "source": "ds.parquet",
        "started_at": datetime(2026, 1, 6, 9, 0, tzinfo=timezone.utc),
        "finished_at": datetime(2026, 1, 6, 9, 2, tzinfo=timezone.utc),
        "billing": {
            "small": {"rows": 2.0, "billed_seconds": 50.0, "cost_usd": 0.0020, "engine_start_s": 0.0,
                      "generate_s": 50.0},
            "premium": {"rows": 1.0, "billed_seconds": 0.0, "cost_usd": 0.0},
        },
    },
}


def results_frame(run_id: str, rows: list[tuple]) -> pl.DataFrame:
    recs = []
    for i, (rid, status, tier, model, inp, out, lat, cost, base, dup_of, kind, mx, err) in enumerate(rows):
        recs.append({
            "run_id": run_id, "dataset": "ds", "row_id": rid, "prompt": f"prompt {rid}",
            "response": None if status in ("failed", "quarantined") else f"answer {rid}", "tier": tier,
            "model": model, "status": status, "dup_of": dup_of, "input_tokens": inp, "output_tokens": out,
            "latency_ms": lat, "cost_usd": cost, "baseline_cost_usd": base, "system": None, "max_tokens": mx,
            "dup_kind": kind, "dup_score": None if kind is None else 0.95, "route_score": None,
            "route_reason": None, "error": err, "finish_reason": "stop" if status == "ok" else None,
            "row_index": i,
        })
    schema = {"input_tokens": pl.Int64, "output_tokens": pl.Int64, "latency_ms": pl.Float64, "max_tokens": pl.Int32,
              "dup_score": pl.Float64, "route_score": pl.Float64, "row_index": pl.Int64, "cost_usd": pl.Float64,
              "baseline_cost_usd": pl.Float64, "temperature": pl.Float64, "schema_valid": pl.Boolean,
              "attempts": pl.Int32, "escalated": pl.Boolean, "shadow": pl.Boolean, "shadow_agrees": pl.Boolean,
              "shadow_cost_usd": pl.Float64, "cached_input_tokens": pl.Int64, "usage_estimated": pl.Boolean,
              "mean_logprob": pl.Float64}
    str_cols = {c: pl.String for c in RESULT_COLUMNS if c not in schema}
    return pl.DataFrame(recs, schema={c: {**schema, **str_cols}[c] for c in RESULT_COLUMNS})


# the rows' own chargeback tags (JSON text, as ingest writes them)
ROW_TAGS = {"r4": '{"team": "ads"}', "r5": '{"feature": "faq"}', "s1": '{"team": "search"}'}


def with_row_tags(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col("row_id").replace_strict(ROW_TAGS, default=None, return_dtype=pl.String)
                           .alias("tags"))


def build_sample_warehouse(path: str | Path) -> Path:
    path = Path(path)
    land_results(path, with_row_tags(results_frame("r1", R1)), RUNS["r1"])
    land_results(path, with_row_tags(results_frame("r2", R2)), RUNS["r2"])
    return path


# --- more runs, for the `genai_usage` view and the dashboard (additive: the warehouse above is unchanged) -------

GENAI_ROWS = [  # run g1 of dataset `ds2`: every request in `attempts` (escalation, shadow, replay, batch)
    ("g1", "ok", "premium", "claude-x", 220, 80, 1000.0, 0.0032, 0.0030, None, None, None, None),
    ("g2", "ok", "small", "small-model", 170, 45, 80.0, 0.0021, 0.0020, None, None, None, None),
    ("g3", "ok", "mid", "mixtral", 50, 10, 0.0, 0.0004, 0.0010, None, None, None, None),
]
GENAI_ATTEMPTS = [
    # row_id, attempt, kind, tier, model, status, in, out, latency, cost
    ("g1", 1, "first", "small", "small-model", "ok", 100, 30, 100.0, 0.0002),
    ("g1", 2, "escalation", "premium", "claude-x", "ok", 120, 50, 900.0, 0.0030),
    ("g2", 1, "first", "small", "small-model", "ok", 80, 20, 80.0, 0.0001),
    ("g2", 2, "shadow", "premium", "claude-x", "ok", 90, 25, 700.0, 0.0020),
    ("g3", 1, "first", "mid", "mixtral", "ok", 50, 10, 0.0, 0.0004),
]
GENAI_RUN = {
    "run_id": "g1", "dataset": "ds2", "source": "ds2.parquet",
    "started_at": datetime(2026, 1, 7, 8, 0, tzinfo=timezone.utc),
    "finished_at": datetime(2026, 1, 7, 8, 1, tzinfo=timezone.utc),
    "billing": {
        "small": {"rows": 2.0, "billed_seconds": 10.0, "cost_usd": 0.0003, "engine_start_s": 2.0, "generate_s": 8.0},
        "mid": {"rows": 1.0, "billed_seconds": 0.0, "cost_usd": 0.0004, "replay_hits": 1.0},
        "premium/escalation": {"rows": 1.0, "billed_seconds": 0.0, "cost_usd": 0.003, "batch_api_rows": 1.0},
        "premium/shadow": {"rows": 1.0, "billed_seconds": 0.0, "cost_usd": 0.002},
    },
}


def land_genai_run(path: str | Path) -> Path:
    """Land run g1 (above) into `path`: its final answers' pricing facts, and each request in `attempts`."""
    path = Path(path)
    res = results_frame("g1", GENAI_ROWS).with_columns(
        pl.lit("ds2").alias("dataset"),
        pl.Series("price_basis", ["batch", "worker", "list"]),
        pl.Series("cached_input_tokens", [30, 0, 0], pl.Int64),
        pl.Series("attempts", [2, 2, 1], pl.Int32),
        pl.Series("escalated", [True, False, False]),
        pl.Series("shadow", [False, True, False]),
    )
    cols = ["row_id", "attempt", "kind", "tier", "model", "status", "input_tokens", "output_tokens", "latency_ms",
            "cost_usd"]
    attempts = pl.DataFrame([dict(zip(cols, a, strict=True)) for a in GENAI_ATTEMPTS]).with_columns(
        pl.col("attempt").cast(pl.Int32), pl.lit(None, pl.String).alias("error"),
        pl.lit(None, pl.Boolean).alias("schema_valid"), pl.lit(None, pl.Float64).alias("mean_logprob"),
        pl.lit("answer").alias("response"), pl.lit("g1").alias("run_id"))
    land_results(path, res, GENAI_RUN, attempts=attempts)
    return path


# Nights x datasets for the dashboard: (run_id, dataset, night, hour, rows of the sample runs above, graded).
# Dataset `qa` has references: its ok rows are graded (the first one wrong), and its all-premium baseline's
# answers are known (baseline accuracy 1.0).
DASHBOARD_RUNS = [
    ("n1-ds", "ds", 5, 10, R1, False), ("n1-qa", "qa", 5, 11, R2, True),
    ("n2-ds", "ds", 6, 9, R2, False), ("n2-qa", "qa", 6, 12, R1, True),
    ("n3-ds", "ds", 7, 8, R1, False), ("n3-ds-b", "ds", 7, 20, R2, False), ("n3-qa", "qa", 7, 10, R2, True),
]
# Each run's judged shadow pairs for its quality estimate (sluice/stages/land/estimate.py): (acceptable, judged,
# unjudged). n1-qa had no judged pair (not estimated); n3-ds-b ran under a floor of 0.8 that its lower bound misses.
DASHBOARD_QUALITY = {"n1-ds": (3, 4, 1), "n1-qa": (0, 0, 2), "n2-ds": (4, 5, 0), "n2-qa": (2, 3, 0),
                     "n3-ds": (5, 6, 0), "n3-ds-b": (1, 2, 0), "n3-qa": (3, 4, 1)}
DASHBOARD_MIN_QUALITY = {"n3-ds-b": 0.8}
# The judge of free-text shadow pairs ran on two runs: its spend (USD) is the run's own line (runs.judge_cost_usd,
# part of runs.cost_usd), in no row's cost.
DASHBOARD_JUDGE = {"n2-ds": 0.0004, "n3-ds-b": 0.0003}


def dashboard_quality(run_id: str) -> dict:
    """The run's quality estimate as `land_results` takes it: acceptable / judged with its Wilson interval."""
    from sluice.stats import wilson_interval

    ok, n, unjudged = DASHBOARD_QUALITY[run_id]
    low, high = wilson_interval(ok, n) if n else (None, None)
    est = ok / n if n else None
    small = {"rows": 2, "ok_rows": 2, "n": n, "acceptable": ok, "estimate": est, "low": low, "high": high}
    return {"quality_estimate": est, "quality_low": low, "quality_high": high, "quality_n": n,
            "quality_unjudged": unjudged, "quality_per_tier": {"small": small}}


def build_dashboard_warehouse(path: str | Path) -> Path:
    """Seven runs over three nights (2026-01-05 to 07) and two datasets, with the rows of runs r1 and r2 (their
    chargeback tags: ROW_TAGS, and run r1's team=search on the runs made of its rows), each run's quality estimate
    (DASHBOARD_QUALITY) and the judge's spend where it ran (DASHBOARD_JUDGE)."""
    path = Path(path)
    for run_id, dataset, day, hour, rows, graded in DASHBOARD_RUNS:
        base = RUNS["r1"] if rows is R1 else RUNS["r2"]
        started = datetime(2026, 1, day, hour, 0, tzinfo=timezone.utc)
        res = with_row_tags(results_frame(run_id, rows)).with_columns(pl.lit(dataset).alias("dataset"))
        quality = None
        if graded:
            ok = res["status"] == "ok"
            first_ok = ok & (ok.cum_sum() == 1)
            res = res.with_columns(
                pl.when(ok).then(pl.lit("x")).otherwise(None).alias("reference"),
                pl.when(ok).then(pl.lit("exact")).otherwise(None).alias("grader"),
                pl.when(ok).then(~first_ok).otherwise(None).cast(pl.Boolean).alias("correct"),
            )
            n = int(ok.sum())
            quality = {"baseline_graded": n, "baseline_correct": n, "baseline_accuracy": 1.0}
        run = {**base, "run_id": run_id, "dataset": dataset, "started_at": started,
               "finished_at": started + (base["finished_at"] - base["started_at"])}
        if run_id in DASHBOARD_MIN_QUALITY:
            run["min_quality"] = DASHBOARD_MIN_QUALITY[run_id]
        judge = None
        if run_id in DASHBOARD_JUDGE:
            judge = {"judge_tier": "premium", "judge_cost_usd": DASHBOARD_JUDGE[run_id], "judge_requests": 4,
                     "judge_pairs": 2}
        land_results(path, res, run, baseline_quality=quality, quality_estimate=dashboard_quality(run_id),
                     judge=judge)
    return path
