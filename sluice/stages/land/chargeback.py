"""Chargeback: the input's own columns travel with each row, and every row carries its tags.

    pass-through    every input column Sluice does not read (`sluice.contracts.columns.READ_INPUT_COLUMNS`)
                    is read again from the run's source file when the run lands, row by row (`row_index`):
                    appended unchanged (same Arrow types) to the run's results file, `results.parquet` (what the
                    drop box puts in `results/`), and kept in the warehouse as one JSON object per row,
                    `results.meta` ({column: value}). A column whose name a results column already has is
                    appended as `input_<name>` in the file (its own name in `meta`).
    tags            `results.tags`: the run's tags (`sluice run --tag`, a manifest's `tags`) overlaid by the row's
                    own (ingest's `tags` column); NULL when neither gives any (`sluice.contracts.tags`).

JSON of a pass-through value: numbers, strings, booleans, lists and structs as themselves, a map as an object,
dates and times in ISO 8601, decimals as strings (no precision lost), bytes as UTF-8 text (base64 when not
UTF-8), NaN and infinities as null. A source that is gone or no longer matches the run (another row count) lands
without pass-through (NULL `meta`), with a warning: the rows themselves are never held back for it.
"""

from __future__ import annotations

import base64
import json
import logging
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sluice.contracts.columns import READ_INPUT_COLUMNS
from sluice.contracts.tags import overlay

log = logging.getLogger(__name__)

_USED = set(READ_INPUT_COLUMNS)
_SCHEMA_DEPTH_LIMIT = 1024  # as ingest: deep nesting in a column Sluice only carries is allowed


def with_chargeback_columns(df: pl.DataFrame) -> pl.DataFrame:
    """Hand-offs written before chargeback existed (or built by hand) have no tags and no meta: both null; nor
    `deferred_from` (rows an earlier run deferred for its budget: sluice.stages.budget.carry)."""
    missing = [pl.lit(None, pl.String).alias(c) for c in ("tags", "meta", "deferred_from") if c not in df.columns]
    return df.with_columns(missing) if missing else df


def apply_run_tags(results: pl.DataFrame, run_tags: dict[str, str] | None) -> pl.DataFrame:
    """Each row's tags: the run's overlaid by the row's own (idempotent: landing again gives the same tags)."""
    results = with_chargeback_columns(results)
    if not run_tags:
        return results
    return results.with_columns(pl.Series("tags", [overlay(run_tags, t) for t in results["tags"].to_list()],
                                          pl.String))


def read_pass_through(source: str | Path | None, row_index: list[int]) -> pa.Table | None:
    """The source's unused columns, one row per entry of `row_index` (in that order; a negative index, a row
    carried from an earlier run, gets nulls); None when the source has none, or cannot be read back as the file
    the run ingested (a warning says why)."""
    if not source or not Path(source).is_file():
        if source:
            log.warning("%s: gone before landing; its own columns are not landed (results.meta is NULL)", source)
        return None
    try:
        pf = pq.ParquetFile(source, schema_depth_limit=_SCHEMA_DEPTH_LIMIT)
        with pf:
            indices = [i for i, name in enumerate(pf.schema_arrow.names) if name not in _USED]
            if not indices:
                return None
            table = pf.read(columns=[pf.schema_arrow.names[i] for i in indices])
    except Exception as exc:  # a corrupt column chunk in a column Sluice never needed: the rows land anyway
        log.warning("%s: its own columns could not be read back (%s); results.meta is NULL", source, exc)
        return None
    if row_index and max(row_index) >= table.num_rows:
        log.warning("%s: has %d rows, not the run's; its own columns are not landed", source, table.num_rows)
        return None
    return table.take(pa.array([i if i >= 0 else None for i in row_index], pa.int64()))


def meta_values(table: pa.Table) -> list[str | None]:
    """Per row, the pass-through columns as one JSON object ({column: value}; a repeated name keeps its last)."""
    columns = [(name, table.column(i).to_pylist()) for i, name in enumerate(table.column_names)]
    out: list[str | None] = []
    for r in range(table.num_rows):
        try:
            out.append(json.dumps({name: _jsonable(values[r]) for name, values in columns}, ensure_ascii=False,
                                  allow_nan=False))
        except (RecursionError, ValueError, TypeError) as exc:  # nesting deeper than Python's stack, say
            log.warning("row %d: its own columns cannot be written as JSON (%s); results.meta is NULL", r, exc)
            out.append(None)
    return out


def _jsonable(v: object) -> object:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(v).decode("ascii")
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list) and v and all(isinstance(p, tuple) and len(p) == 2 for p in v):  # an Arrow map
        return {str(k): _jsonable(x) for k, x in v}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def results_file(results: pl.DataFrame, passthrough: pa.Table | None) -> pa.Table:
    """The run's results file: the landed columns, then the pass-through columns with their own Arrow types."""
    table = results.to_arrow()
    if passthrough is None:
        return table
    taken = set(table.column_names)
    for i, name in enumerate(passthrough.column_names):
        out = name
        while out in taken:  # a results column of the same name (or a repeated input name)
            out = f"input_{out}"
        taken.add(out)
        table = table.append_column(pa.field(out, passthrough.schema.field(i).type), passthrough.column(i))
    return table
