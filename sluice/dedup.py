"""Dedup: answer each distinct request once.

Exact stage: two rows are the same request when their normalised prompt, normalised system prompt and
effective `max_tokens` are equal (Unicode NFKC, case-folded, whitespace collapsed). The first row of each group
is canonical and goes on to routing and inference; the others get `dup_of` = the canonical `row_id`,
`dup_kind` = "exact", `dup_score` = 1.0 and status "duplicate": they are answered from the canonical row at
cost 0.

Everything here is vectorised in polars, so the stage stays linear in rows.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

DUP_COLUMNS = {"dup_of": pl.String, "dup_kind": pl.String, "dup_score": pl.Float64}


def normalise(expr: pl.Expr) -> pl.Expr:
    """Text equal up to Unicode form, case and whitespace maps to the same string."""
    return (
        expr.fill_null("")
        .str.normalize("NFKC")
        .str.to_lowercase()
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def request_key(default_max_tokens: int) -> pl.Expr:
    """A 64-bit fingerprint of everything in the row that changes the answer."""
    return pl.concat_str(
        [
            normalise(pl.col("system")),
            normalise(pl.col("prompt")),
            pl.col("max_tokens").fill_null(default_max_tokens).cast(pl.String),
        ],
        separator="\x1f",
    ).hash(seed=0x51_1CE)


def exact_duplicates(rows: pa.Table, default_max_tokens: int = 256) -> pa.Table:
    """Mark exact duplicates among pending rows; returns the rows with dup_of / dup_kind / dup_score added."""
    df = pl.from_arrow(rows)
    assert isinstance(df, pl.DataFrame)
    for name, dtype in DUP_COLUMNS.items():
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=dtype).alias(name))
    pending = pl.col("status") == "pending"
    df = df.with_columns(
        pl.when(pending).then(request_key(default_max_tokens)).otherwise(None).alias("_key")
    ).with_columns(
        pl.col("row_id").first().over("_key", order_by="row_index").alias("_canonical")
    )
    is_dup = pending & (pl.col("_canonical") != pl.col("row_id"))
    df = df.with_columns(
        pl.when(is_dup).then(pl.col("_canonical")).otherwise(pl.col("dup_of")).alias("dup_of"),
        pl.when(is_dup).then(pl.lit("exact")).otherwise(pl.col("dup_kind")).alias("dup_kind"),
        pl.when(is_dup).then(pl.lit(1.0)).otherwise(pl.col("dup_score")).alias("dup_score"),
        pl.when(is_dup).then(pl.lit("duplicate")).otherwise(pl.col("status")).alias("status"),
    ).drop("_key", "_canonical")
    return df.to_arrow()
