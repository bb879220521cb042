"""The `router_training` table: labels the router learns from, kept in the warehouse next to `results`.

One row per (run, row) that has a verdict on the cheap tier's answer: from the shadow sample (premium also answered,
`source = 'shadow'`), from a human or judge review (`'review'`), or imported from a labelled file (`'import'`).
`premium_ok` is null when only the cheap answer was judged.

The table is created by the warehouse's migrations (sluice/warehouse/migrations.py): open the warehouse with
`sluice.warehouse.db.connect`, which applies them, before adding labels.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl


def add_labels(con: duckdb.DuckDBPyConnection, labels: pl.DataFrame) -> int:
    """Upsert labels (columns run_id, row_id, prompt, cheap_ok, premium_ok, source) through a connection opened
    with `sluice.warehouse.db.connect`; returns rows written."""
    cols = ["run_id", "row_id", "prompt", "cheap_ok", "premium_ok", "source"]
    df = labels.select([pl.col(c) if c in labels.columns else pl.lit(None).alias(c) for c in cols])
    con.register("_labels", df.to_arrow())
    try:
        con.execute(f"INSERT OR REPLACE INTO router_training ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _labels")
    finally:
        con.unregister("_labels")
    return df.height


def read_labels(warehouse: str | Path) -> pl.DataFrame:
    """All stored labels (an older warehouse is migrated first, so the table exists, perhaps empty)."""
    from sluice.warehouse.db import connect

    with connect(warehouse) as con:  # waits politely if another process is writing
        return con.execute(
            "SELECT run_id, row_id, prompt, cheap_ok, premium_ok, source FROM router_training ORDER BY run_id, row_id"
        ).pl()
