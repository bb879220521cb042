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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

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


def load_cache_entries(warehouse: str | Path, cfg: CacheConfig, default_max_tokens: int) -> pl.DataFrame:
    """Answered rows of earlier runs still valid under `cfg`, newest first, one per distinct request.

    Columns: cache_ref ("<run_id>/<row_id>"), prompt, system, max_tokens (effective), cache_response, cache_model,
    cache_tier, cache_baseline_cost_usd, finished_at.
    """
    empty = pl.DataFrame(schema={"cache_ref": pl.String, "prompt": pl.String, "system": pl.String,
                                 "max_tokens": pl.Int32, "history": pl.String, "temperature": pl.Float64,
                                 "stop": pl.String, "response_schema": pl.String, "cache_response": pl.String, "cache_model": pl.String,
                                 "cache_tier": pl.String, "cache_baseline_cost_usd": pl.Float64})
    if not Path(warehouse).is_file():
        return empty
    from sluice.warehouse.db import connect

    query = """
        SELECT r.run_id || '/' || r.row_id AS cache_ref, r.prompt, r.system,
               coalesce(r.max_tokens, ?)::INTEGER AS max_tokens, r.history, r.temperature, r.stop,
               r.response_schema, r.response AS cache_response,
               r.model AS cache_model, r.tier AS cache_tier, r.baseline_cost_usd AS cache_baseline_cost_usd
        FROM results r JOIN runs USING (run_id)
        WHERE r.status = 'ok' AND r.response IS NOT NULL AND r.tier IS NOT NULL
          AND runs.finished_at >= now() - to_microseconds(CAST(? * 86400e6 AS BIGINT))
          AND (? IS NULL OR runs.finished_at >= ?::TIMESTAMPTZ)
        ORDER BY runs.finished_at DESC, r.row_index
    """
    with connect(warehouse, read_only=True) as con:
        tables = {t[0] for t in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if not {"results", "runs"} <= tables:
            return empty
        cutoff = cfg.invalidated_before
        entries = con.execute(query, [default_max_tokens, cfg.ttl_days, cutoff, cutoff]).pl()
    if cfg.served_models is not None:
        served = pl.DataFrame({"cache_tier": list(cfg.served_models), "cache_model": list(cfg.served_models.values())})
        entries = entries.join(served, on=["cache_tier", "cache_model"], how="semi", maintain_order="left")
    return entries.select(empty.columns).cast(dict(empty.schema))
