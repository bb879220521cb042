"""Plan: what a dataset will cost before a cent is spent, and afterwards how close that forecast was.

`forecast_dataset` runs the cheap stages for real, as the flow does (ingest; exact, near and semantic dedup, and the
cache when asked; the router) and estimates the expensive one (inference) per tier:

    input tokens   the tier model's own tokenizer with its chat template when the model is a local folder (the demo's
                   `packaged:` model once `sluice prepare` has converted it); otherwise ~ characters / 4 + a small
                   per-message overhead
    output tokens  max_tokens (the row's, else the default) x the tier's fill ratio, learned from answered rows of
                   earlier runs in the warehouse (sum output_tokens / sum max_tokens): for that max_tokens value
                   when the tier has MIN_BUCKET_ROWS such rows, else over all the tier's rows, else over every
                   tier's rows (that max_tokens value first), else DEFAULT_FILL_RATIO
    API cost       tokens x the tier's list prices
    self-hosted    (engine start + output tokens / throughput) x the worker's $/hour; throughput (output tokens per
                   second of generation) and engine start are learned from `runs.billing` of earlier runs (view
                   `utilisation`), else DEFAULT_OUTPUT_TOKENS_PER_S and DEFAULT_ENGINE_START_S. A tier that runs the
                   same engine settings as the self-hosted tier before it reuses its engine: no second start
    baseline       every non-quarantined row priced on the baseline tier (duplicates included)
    savings        dedup: baseline of the duplicates' canonical rows; cache: the earlier answers' baseline (or
                   the estimate, also for rows whose request key is in the `cache` table); routing: baseline of the
                   routed rows - forecast cost

The assumptions (token counters, learned fill ratios and throughput, the DEFAULT_* constants) live in
`sluice.reports.assumptions`.

The forecast is stored in `forecasts` (keyed by run id when given, else matched to a run by dataset) so that
`compare_forecast` (and `sluice report`) can put forecast and actual side by side after the run.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import polars as pl

from models.catalogue import Catalogue, Tier
from models.pricing import cost_usd, worker_price
from sluice.contracts.shapes import conversation_texts
from sluice.reports.assumptions import (
    DEFAULT_OUTPUT_TOKENS_PER_S,
    Counter,
    TierAssumptions,
    _local_model_folder,
    load_history,
    token_counter,
)

# --- forecast -----------------------------------------------------------------------------------------------


def _api_cost_usd(t: Tier, input_tokens: int, output_tokens: int) -> float:
    """List price, or the provider's batch price when the tier always goes through its batch API."""
    batch = (getattr(t, "batch_api", "off") == "always" and getattr(t, "batch_input_usd_per_1m", None) is not None
             and getattr(t, "batch_output_usd_per_1m", None) is not None)
    return t.token_cost_usd(input_tokens, output_tokens, batch=batch)


def _engine_key(t: Tier) -> tuple:
    # the settings that decide whether the vLLM worker can reuse the previous tier's engine (backends/vllm_offline)
    return (t.model, t.dtype, t.quantization, t.max_model_len, t.enforce_eager, t.seed)


def forecast_routed(
    routed: pl.DataFrame,
    catalogue: Catalogue,
    assumptions: dict[str, TierAssumptions],
    counters: dict[str, Counter],
    default_max_tokens: int,
    cache_keys: set[str] | None = None,
) -> dict:
    """The forecast for rows that went through ingest, dedup and routing (columns of the `routed.parquet`)."""
    base = catalogue.baseline_tier
    df = routed.with_columns(pl.col("max_tokens").fill_null(default_max_tokens).alias("_max"))
    if cache_keys:
        from sluice.contracts.columns import with_shape_columns
        from sluice.stages.dedup.deduplicate import request_key

        df = with_shape_columns(df).with_columns(request_key(default_max_tokens).cast(pl.String).alias("_key"))
        hit = (pl.col("status") == "pending") & pl.col("_key").is_in(list(cache_keys))
    else:
        hit = pl.lit(False)
    df = df.with_columns(hit.alias("_cache_hit"))

    quarantined = int((df["status"] == "quarantined").sum())
    duplicates = df.filter(pl.col("status") == "duplicate")
    cache_hits = df.filter(pl.col("_cache_hit"))
    sent = df.filter((pl.col("status") == "pending") & ~pl.col("_cache_hit"))

    tiers: dict[str, dict] = {}
    row_baseline: dict[str, float] = {}  # row_id -> baseline of the row (for duplicates and cache hits)
    prev_key = None
    total_cost = 0.0
    routed_baseline = 0.0
    for t in catalogue.tiers:
        part = sent.filter(pl.col("tier") == t.name)
        a = assumptions[t.name]
        if part.height == 0:
            continue
        ins = counters[t.name](part["system"].to_list(), conversation_texts(part))
        outs = [round(m * a.fill_for(m)) for m in part["_max"].to_list()]
        in_tok, out_tok = sum(ins), sum(outs)
        base_rows = [base.token_cost_usd(i, o) for i, o in zip(ins, outs, strict=True)]
        row_baseline.update(zip(part["row_id"].to_list(), base_rows, strict=True))
        info: dict = {"rows": part.height, "input_tokens": in_tok, "output_tokens": out_tok}
        if t.self_hosted:
            key = _engine_key(t)
            start = 0.0 if key == prev_key else float(a.engine_start_s or 0.0)
            prev_key = key
            gen = out_tok / float(a.output_tokens_per_s or DEFAULT_OUTPUT_TOKENS_PER_S)
            info.update(engine_start_s=start, generate_s=gen, billed_seconds=start + gen,
                        cost_usd=cost_usd(worker_price(t.name, catalogue.worker_usd_per_hour(t)), seconds=start + gen))
        else:
            info["cost_usd"] = _api_cost_usd(t, in_tok, out_tok)
        info["baseline_cost_usd"] = sum(base_rows)
        tiers[t.name] = info
        total_cost += info["cost_usd"]
        routed_baseline += info["baseline_cost_usd"]

    ba = assumptions[base.name]

    def estimated_baseline(rows: pl.DataFrame) -> list[float]:
        # what answering these rows on the baseline tier would cost, with that tier's estimates
        if rows.height == 0:
            return []
        ins = counters[base.name](rows["system"].to_list(), conversation_texts(rows))
        return [base.token_cost_usd(i, round(m * ba.fill_for(m)))
                for i, m in zip(ins, rows["_max"].to_list(), strict=True)]

    # cache hits marked by dedup (dup_kind "cache"): the earlier row's baseline when dedup carried it, else estimated
    kind = pl.col("dup_kind") if "dup_kind" in df.columns else pl.lit(None, pl.String)
    cached_dups = duplicates.filter(kind == "cache")
    cache_values = estimated_baseline(cached_dups)
    if "cache_baseline_cost_usd" in cached_dups.columns:
        cache_values = [c if c is not None else e
                        for c, e in zip(cached_dups["cache_baseline_cost_usd"].to_list(), cache_values, strict=True)]
    row_baseline.update(zip(cached_dups["row_id"].to_list(), cache_values, strict=True))
    cache_saving = sum(cache_values) + sum(estimated_baseline(cache_hits))
    # in-batch duplicates (exact, near, semantic) cost what their canonical row would have cost on the baseline
    copies = duplicates.filter((kind != "cache") | kind.is_null())
    orphans = copies.filter(~pl.col("dup_of").is_in(list(row_baseline)))
    dedup_saving = sum(row_baseline[r] for r in copies["dup_of"].to_list() if r in row_baseline)
    dedup_saving += sum(estimated_baseline(orphans))
    baseline = routed_baseline + dedup_saving + cache_saving
    return {
        "rows": df.height,
        "duplicates": copies.height,
        "quarantined": quarantined,
        "cache_hits": cached_dups.height + cache_hits.height,
        "input_tokens": sum(v["input_tokens"] for v in tiers.values()),
        "output_tokens": sum(v["output_tokens"] for v in tiers.values()),
        "cost_usd": total_cost,
        "baseline_cost_usd": baseline,
        "dedup_saving_usd": dedup_saving,
        "cache_saving_usd": cache_saving,
        "routing_saving_usd": routed_baseline - total_cost,
        "tiers": tiers,
        "assumptions": {k: vars(v) for k, v in assumptions.items()},
    }


def dedup_and_route(
    rows, catalogue: Catalogue, router, default_max_tokens: int, cache_warehouse: str | Path | None = None
) -> pl.DataFrame:
    """The flow's cheap stages exactly as its tasks run them (`sluice.stages.pipeline`): dedup with the run's
    default stages (a cache when a warehouse is given), then routing with the router settings given."""
    from sluice.config import Settings
    from sluice.stages.context import StageContext
    from sluice.stages.pipeline import TABLE_STAGES

    settings = Settings(default_max_tokens=default_max_tokens, router=router)
    ctx = StageContext(catalogue=catalogue, cache_warehouse=str(cache_warehouse) if cache_warehouse else None)
    routed = rows
    for name in ("dedup", "route"):
        routed = TABLE_STAGES[name].run(routed, settings, ctx)
    df = pl.from_arrow(routed)
    assert isinstance(df, pl.DataFrame)
    return df


def forecast_dataset(
    dataset_path: str | Path,
    catalogue: Catalogue,
    data_dir: str | Path,
    default_max_tokens: int,
    router,
    con: duckdb.DuckDBPyConnection | None = None,
    history: tuple[dict[str, TierAssumptions], set[str] | None] | None = None,
    cache_warehouse: str | Path | None = None,
) -> dict:
    """Ingest, dedup and route DATASET for real (cheap), then forecast inference per tier (see module doc).

    What is learned from the warehouse comes from `con`, or from `history` (`load_history`, read earlier) so
    that no connection stays open while tokenizing.
    """
    from sluice.stages.ingest.read import read_prompts

    df = dedup_and_route(read_prompts(dataset_path), catalogue, router, default_max_tokens, cache_warehouse)
    assumptions, cache_keys = history or load_history(con, catalogue, default_max_tokens)
    counters: dict[str, Counter] = {}
    by_folder: dict[str, tuple[Counter, str]] = {}
    for t in catalogue.tiers:
        folder = str(_local_model_folder(t, Path(data_dir)))
        if folder not in by_folder:  # tiers on the same model share one tokenizer
            by_folder[folder] = token_counter(t, Path(data_dir))
        counters[t.name], assumptions[t.name].tokenizer = by_folder[folder]
    return forecast_routed(df, catalogue, assumptions, counters, default_max_tokens, cache_keys)


def store_forecast(
    con: duckdb.DuckDBPyConnection, forecast: dict, dataset: str, source: str | None, run_id: str | None = None
) -> str:
    """Record a forecast (replacing an earlier one for the same run id); returns its id."""
    fid = uuid.uuid4().hex[:12]
    con.execute("BEGIN TRANSACTION")
    try:
        if run_id:
            con.execute("DELETE FROM forecasts WHERE run_id = ?", [run_id])
        con.execute(
            """INSERT INTO forecasts (forecast_id, run_id, dataset, source, created_at, rows, duplicates, quarantined,
               cache_hits, input_tokens, output_tokens, cost_usd, baseline_cost_usd, dedup_saving_usd,
               cache_saving_usd, routing_saving_usd, tiers, assumptions)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [fid, run_id, dataset, source, datetime.now(timezone.utc), forecast["rows"], forecast["duplicates"],
             forecast["quarantined"], forecast["cache_hits"], forecast["input_tokens"], forecast["output_tokens"],
             forecast["cost_usd"], forecast["baseline_cost_usd"], forecast["dedup_saving_usd"],
             forecast["cache_saving_usd"], forecast["routing_saving_usd"], json.dumps(forecast["tiers"]),
             json.dumps(forecast["assumptions"])],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return fid


# --- forecast vs actual -------------------------------------------------------------------------------------


def find_forecast(con: duckdb.DuckDBPyConnection, run_id: str) -> dict | None:
    """The forecast made for this run id, else the latest one for its dataset made before the run started."""
    cur = con.execute(
        """SELECT f.* FROM forecasts f, runs r
           WHERE r.run_id = ? AND (f.run_id = r.run_id OR (f.run_id IS NULL AND f.dataset = r.dataset
                 AND (r.started_at IS NULL OR f.created_at <= r.started_at)))
           ORDER BY (f.run_id IS NOT NULL) DESC, f.created_at DESC LIMIT 1""",
        [run_id],
    )
    row = cur.fetchone()
    if row is None:
        return None
    rec = dict(zip([d[0] for d in cur.description], row, strict=True))
    rec["tiers"] = json.loads(rec["tiers"]) if rec["tiers"] else {}
    rec["assumptions"] = json.loads(rec["assumptions"]) if rec["assumptions"] else {}
    return rec


def _pct(forecast: float | None, actual: float | None) -> float | None:
    if forecast is None or actual is None or actual == 0:
        return None
    return 100.0 * (forecast - actual) / actual


def compare_forecast(con: duckdb.DuckDBPyConnection, run_id: str) -> dict | None:
    """Forecast against actual for one run: a list of {metric, forecast, actual, error_pct} rows, None without one.

    error_pct = 100 x (forecast - actual) / actual. `cost_within_15pct` is the acceptance check of `sluice plan`.
    """
    f = find_forecast(con, run_id)
    if f is None:
        return None
    s = con.execute(
        """SELECT rows, baseline_cost_usd, cost_usd, dedup_saving_usd, cache_saving_usd, routing_saving_usd
           FROM savings_per_run WHERE run_id = ?""", [run_id]
    ).fetchone()
    dups = con.execute(
        "SELECT count(*) FROM results WHERE run_id = ? AND dup_kind IS NOT NULL AND dup_kind <> 'cache'", [run_id]
    ).fetchone()[0]
    per_tier = {
        t: (n, i, o, c) for t, n, i, o, c in con.execute(
            """SELECT tier, count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM results
               WHERE run_id = ? AND tier IS NOT NULL GROUP BY tier""", [run_id]
        ).fetchall()
    }
    rows = [
        ("rows", f["rows"], s[0]),
        ("duplicates", f["duplicates"], dups),
        ("input tokens", f["input_tokens"], sum(v[1] for v in per_tier.values())),
        ("output tokens", f["output_tokens"], sum(v[2] for v in per_tier.values())),
        ("total cost (USD)", f["cost_usd"], s[2]),
        ("all-premium cost (USD)", f["baseline_cost_usd"], s[1]),
        ("dedup saving (USD)", f["dedup_saving_usd"], s[3]),
        ("cache saving (USD)", f["cache_saving_usd"], s[4]),
        ("routing saving (USD)", f["routing_saving_usd"], s[5]),
    ]
    for tier in sorted(set(f["tiers"]) | set(per_tier)):
        ft = f["tiers"].get(tier, {})
        at = per_tier.get(tier, (0, 0, 0, 0.0))
        rows.append((f"rows on {tier}", ft.get("rows", 0), at[0]))
        rows.append((f"cost on {tier} (USD)", ft.get("cost_usd", 0.0), at[3]))
    table = [{"metric": m, "forecast": fv, "actual": av, "error_pct": _pct(fv, av)} for m, fv, av in rows]
    cost_err = _pct(f["cost_usd"], s[2])
    return {
        "forecast_id": f["forecast_id"],
        "forecast_created_at": f["created_at"],
        "rows": table,
        "cost_error_pct": cost_err,
        "cost_within_15pct": cost_err is not None and abs(cost_err) <= 15.0,
    }
