"""Ingest: a Parquet dataset into the row schema (`sluice.contracts.columns.ROW_SCHEMA`).

    read.py     file-level checks (IngestError) and row validation (quarantine with a reason), 64k rows at a time
    batch.py    the row checks of one slice of rows, as Arrow compute over its columns
    columns.py  decoding the rarer input columns value by value, with per-row reasons
"""

from __future__ import annotations

import pyarrow as pa

from sluice.config import Settings
from sluice.stages.context import StageContext
from sluice.stages.ingest.read import IngestError, read_prompts, validate_prompts, widest_context_window

__all__ = ["IngestError", "describe", "read_prompts", "run", "validate_prompts"]


def run(table: pa.Table | None, settings: Settings, ctx: StageContext) -> pa.Table:
    """Read `ctx.source` (the first stage has no input table). Rows too long for every tier's context window
    (when the catalogue states them all) are quarantined here, before anything is spent on them."""
    window = widest_context_window(ctx.catalogue) if ctx.catalogue is not None else None
    return read_prompts(ctx.source, max_prompt_chars=settings.max_prompt_chars, max_context_tokens=window,
                        default_max_tokens=settings.default_max_tokens, defaults=ctx.defaults)


def describe(rows: pa.Table) -> list[str]:
    bad = rows.num_rows - sum(1 for s in rows["status"].to_pylist() if s == "pending")
    errors = [e for e in rows["error"].to_pylist() if e][:20]
    return [f"ingested {rows.num_rows} rows ({bad} quarantined)", *(f"quarantined: {e}" for e in errors)]
