"""Deferred rows are never lost: the next run of the dataset answers them first.

The rows an earlier run deferred for its budget (`sluice.warehouse.deferred.outstanding_deferred`) are put in
front of tonight's ingested rows, as requests like any other:
    row_id         `<deferring run>/<its row id>` (the row's own id, never `<run>/<run>/...` when deferred again)
    deferred_from  `<deferring run>/<row id there>`: the results row it answers, which stops being outstanding
    row_index      negative (-n .. -1, in the order they were deferred): before every row of the file, and never
                   an index into tonight's file (their own input columns travel in `meta`)
Being first, a carried row is the canonical one when tonight's file asks the same again (dedup keeps the first
occurrence), and it is routed and answered with tonight's rows, under tonight's budget.
"""

from __future__ import annotations

import polars as pl


def carry_deferred(ingested: pl.DataFrame, deferred: pl.DataFrame) -> pl.DataFrame:
    """`deferred` (the warehouse's outstanding rows) as pending rows in front of `ingested`."""
    own_id = (pl.when(pl.col("deferred_from").is_not_null())
              .then(pl.col("row_id").str.splitn("/", 2).struct.field("field_1"))
              .otherwise(pl.col("row_id")))
    n = deferred.height
    carried = deferred.with_columns(
        (pl.col("run_id") + "/" + own_id).alias("row_id"),
        (pl.col("run_id") + "/" + pl.col("row_id")).alias("deferred_from"),
        pl.int_range(-n, 0, dtype=pl.Int64).alias("row_index"),
        pl.lit("pending").alias("status"),
        pl.lit(None, pl.String).alias("error"),
    ).drop("run_id")
    clash = set(carried["row_id"].to_list()) & set(ingested["row_id"].to_list())
    if clash:
        raise ValueError(f"rows deferred by an earlier run would take ids the input already has: {sorted(clash)[:3]}")
    carried = carried.select([c for c in ingested.columns if c in carried.columns]
                             + [c for c in ("meta", "deferred_from") if c not in ingested.columns])
    return pl.concat([carried.cast({c: t for c, t in ingested.schema.items() if c in carried.columns}), ingested],
                     how="diagonal_relaxed")
