"""The `router_training` table: labels the router learns from, kept in the warehouse next to `results`.

One row per (run, row) that has a verdict on the cheap tier's answer: from the shadow sample (premium also answered,
`source = 'shadow'`), from a human or judge review (`'review'`), or imported from a labelled file (`'import'`).
`premium_ok` is null when only the cheap answer was judged.

`ROUTER_TRAINING_DDL` is the whole schema, in one place, for the warehouse's migrations to adopt.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

ROUTER_TRAINING_DDL = """
CREATE TABLE IF NOT EXISTS router_training (
    run_id VARCHAR NOT NULL,
    row_id VARCHAR NOT NULL,
    prompt VARCHAR NOT NULL,
    cheap_ok BOOLEAN NOT NULL,
    premium_ok BOOLEAN,
    source VARCHAR NOT NULL,
    labelled_at TIMESTAMPTZ DEFAULT now(),
    PRIMARY KEY (run_id, row_id)
)
"""


def ensure_router_training(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(ROUTER_TRAINING_DDL)


def add_labels(con: duckdb.DuckDBPyConnection, labels: pl.DataFrame) -> int:
    """Upsert labels (columns run_id, row_id, prompt, cheap_ok, premium_ok, source); returns rows written."""
    ensure_router_training(con)
    cols = ["run_id", "row_id", "prompt", "cheap_ok", "premium_ok", "source"]
    df = labels.select([pl.col(c) if c in labels.columns else pl.lit(None).alias(c) for c in cols])
    con.register("_labels", df.to_arrow())
    try:
        con.execute(f"INSERT OR REPLACE INTO router_training ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _labels")
    finally:
        con.unregister("_labels")
    return df.height


def read_labels(warehouse: str | Path) -> pl.DataFrame:
    """All stored labels (the table is created, empty, when missing)."""
    con = duckdb.connect(str(warehouse))
    try:
        ensure_router_training(con)
        return con.execute(
            "SELECT run_id, row_id, prompt, cheap_ok, premium_ok, source FROM router_training ORDER BY run_id, row_id"
        ).pl()
    finally:
        con.close()
