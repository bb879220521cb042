"""Cross-run answer cache: tonight's rows reuse answers landed in the warehouse on earlier nights.

An earlier row is a cache entry when it was answered (`status = 'ok'`, a response, a tier: duplicates and failures
are never entries), its run finished within the TTL, and the model that answered it is still the model the
catalogue serves for that tier: changing a tier's model (or its quantisation, which changes its model string in
a production catalogue) invalidates every answer it gave. `invalidated_before` drops everything older, for a
change the warehouse cannot see (new sampling defaults, a prompt-template fix).

Entries are matched by `sluice.stages.dedup.deduplicate` with the same stages as in-batch duplicates (exact, near, semantic) and the
same request fingerprint (system prompt, effective max_tokens, request shape) and content guards. A hit costs 0 and saves the
earlier row's baseline (what the premium tier would charge to answer it again).

The warehouse is opened read-only, read once, closed: DuckDB allows one writing process per file, and the run
that lands tonight's results needs it later.

`load_cache_entries` reads every valid entry (the reference path); a run reads only the entries that could match
tonight's rows, found through the cache index (`sluice.stages.dedup.cache_index`), with the same filters
(`entry_sql`) and order, so today's matchers decide the same hits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

ENTRY_SCHEMA = {"cache_ref": pl.String, "prompt": pl.String, "system": pl.String, "max_tokens": pl.Int32,
                "history": pl.String, "temperature": pl.Float64, "stop": pl.String, "response_schema": pl.String,
                "cache_response": pl.String, "cache_model": pl.String, "cache_tier": pl.String,
                "cache_baseline_cost_usd": pl.Float64}
ORDER = "runs.finished_at DESC, r.row_index, r.run_id"  # newest first: the first of equal requests is canonical
CACHE_COLUMNS = {"cache_response": pl.String, "cache_model": pl.String, "cache_baseline_cost_usd": pl.Float64}


@dataclass(frozen=True)
class CacheConfig:
    """ttl_days: answers older than this are not reused (world knowledge and products drift).
    served_models: tier -> model the catalogue serves now; None accepts any model (CLI use without a catalogue).
    invalidated_before: drop entries from runs that finished before this instant.
    """

    ttl_days: float = 30.0
    served_models: dict[str, str] | None = None
    invalidated_before: datetime | None = None


def entry_sql(valid: bool = True) -> str:
    """SELECT ... FROM ... WHERE of entries (ENTRY_SCHEMA's columns, then _run_id, _row_index, _finished_at);
    valid: only rows `cfg` still accepts (named parameters $default_max_tokens, $ttl_days, $cutoff, $any_model
    and a registered table _cache_served(tier, model): `entry_params`). Callers add conditions with AND."""
    filters = """
          AND runs.finished_at >= now() - to_microseconds(CAST($ttl_days * 86400e6 AS BIGINT))
          AND ($cutoff IS NULL OR runs.finished_at >= $cutoff::TIMESTAMPTZ)
          AND ($any_model OR EXISTS (SELECT 1 FROM _cache_served s WHERE s.tier = r.tier AND s.model = r.model))"""
    return f"""
        SELECT r.run_id || '/' || r.row_id AS cache_ref, r.prompt, r.system,
               coalesce(r.max_tokens, $default_max_tokens)::INTEGER AS max_tokens, r.history, r.temperature, r.stop,
               r.response_schema, r.response AS cache_response,
               r.model AS cache_model, r.tier AS cache_tier, r.baseline_cost_usd AS cache_baseline_cost_usd,
               r.run_id AS _run_id, r.row_index AS _row_index, runs.finished_at AS _finished_at
        FROM results r JOIN runs USING (run_id)
        WHERE r.status = 'ok' AND r.response IS NOT NULL AND r.tier IS NOT NULL {filters if valid else ""}"""


def entry_params(con, cfg: CacheConfig, default_max_tokens: int) -> dict:
    """The parameters of `entry_sql` (registers _cache_served on `con`)."""
    served = cfg.served_models or {}
    con.register("_cache_served", pl.DataFrame({"tier": list(served), "model": list(served.values())},
                                               schema={"tier": pl.String, "model": pl.String}).to_arrow())
    return {"default_max_tokens": default_max_tokens, "ttl_days": cfg.ttl_days, "cutoff": cfg.invalidated_before,
            "any_model": cfg.served_models is None}


def has_tables(con, names: set[str]) -> bool:
    return names <= {t[0] for t in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def empty_entries() -> pl.DataFrame:
    return pl.DataFrame(schema=ENTRY_SCHEMA)


def load_cache_entries(warehouse: str | Path, cfg: CacheConfig, default_max_tokens: int) -> pl.DataFrame:
    """Every answered row of earlier runs still valid under `cfg`, newest first (the reference path: it reads
    them all). Columns: ENTRY_SCHEMA's (cache_ref is "<run_id>/<row_id>", max_tokens the effective one)."""
    if not Path(warehouse).is_file():
        return empty_entries()
    from sluice.warehouse.db import connect

    with connect(warehouse, read_only=True) as con:
        if not has_tables(con, {"results", "runs"}):
            return empty_entries()
        entries = con.execute(entry_sql() + f" ORDER BY {ORDER}", entry_params(con, cfg, default_max_tokens)).pl()
    return entries.select(list(ENTRY_SCHEMA)).cast(ENTRY_SCHEMA)
