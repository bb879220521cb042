"""Interrupted requests on the bill: what a killed run had sent and never saved, added to its rows.

The infer stage turns a killed shard's sent log into `interrupted` attempts before it sends the rows again
(sluice/stages/infer/interrupted.py: `answers/[<kind>/]tier=<name>/interrupted/shard-NNNNN-<try>.parquet`). Here
each one becomes what every other request is: an `attempts` row (status `interrupted`, numbered just before the
request that replaced it, `usage_estimated` when no answer came back), and part of its row's tokens, cost and
attempt count in `results`, since the provider billed it. A row whose only requests were interrupted (never sent
again) lands `failed` with the reason.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from sluice.contracts.columns import ATTEMPT_KINDS, INTERRUPTED
from sluice.runs import answers_dir
from sluice.stages.land.results import _KIND_ORDER

_SUMMED = ("input_tokens", "output_tokens", "cost_usd", "trim_saving_usd")


def read_interrupted(run_dir: Path) -> pl.DataFrame | None:
    """Every interrupted attempt of the run, with its `kind` (None: there are none)."""
    parts = [pl.from_arrow(pq.read_table(p)).with_columns(pl.lit(kind).alias("kind"))
             for kind in ATTEMPT_KINDS
             for p in sorted(answers_dir(run_dir, kind).glob("tier=*/interrupted/shard-*.parquet"))]
    parts = [p for p in parts if isinstance(p, pl.DataFrame) and p.height]
    return pl.concat(parts, how="diagonal_relaxed") if parts else None


def add_interrupted(final: pl.DataFrame, every: pl.DataFrame, interrupted: pl.DataFrame | None,
                    tier_order: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(`final`, `every`) of `combine_attempts` with the interrupted attempts added (module docstring)."""
    if interrupted is None or not interrupted.height:
        return final, every
    per_row = interrupted.group_by("row_id").agg(
        *(pl.col(c).sum().alias(f"_i_{c}") for c in _SUMMED), pl.len().cast(pl.Int32).alias("_i_n"),
        pl.col("usage_estimated").any().alias("_i_est"), pl.col("tier").last(), pl.col("model").last(),
        pl.col("error").last())
    lost = per_row.join(final.select("row_id"), on="row_id", how="anti")
    if lost.height:  # sent, cut off, never sent again: a failed row that still cost what the provider billed
        final = pl.concat([final, lost.select(
            "row_id", "tier", "model", "error", pl.lit("failed").alias("status"),
            *(pl.lit(0).cast(final.schema[c]).alias(c) for c in _SUMMED if c in final.columns),
            pl.lit(0, pl.Int32).alias("attempts"), pl.lit(False).alias("usage_estimated"))], how="diagonal_relaxed")
    final = final.join(per_row.drop("tier", "model", "error"), on="row_id", how="left").with_columns(
        *((pl.col(c).fill_null(0) + pl.col(f"_i_{c}").fill_null(0)).cast(final.schema[c]).alias(c)
          for c in _SUMMED if c in final.columns),
        (pl.col("attempts").fill_null(0) + pl.col("_i_n").fill_null(0)).cast(pl.Int32).alias("attempts"),
        (pl.col("usage_estimated").fill_null(False) | pl.col("_i_est").fill_null(False)).alias("usage_estimated"),
    ).drop([c for c in per_row.columns if c.startswith("_i_")])
    # numbered in the order they happened: an interrupted request just before the one that replaced it
    rank = {t: i for i, t in enumerate(tier_order)}
    both = pl.concat([every.drop("attempt"), interrupted.select([c for c in every.columns if c != "attempt"])],
                     how="diagonal_relaxed")
    both = both.with_columns(
        (pl.col("kind") == "shadow").cast(pl.Int8).alias("_s"),
        pl.col("tier").replace_strict(rank, default=len(rank)).alias("_t"),
        pl.col("kind").replace_strict(_KIND_ORDER, default=3).alias("_k"),
        (pl.col("status") != INTERRUPTED).cast(pl.Int8).alias("_r"),
    ).sort(["row_id", "_s", "_t", "_k", "_r"], maintain_order=True)
    both = both.with_columns((pl.int_range(pl.len()).over("row_id") + 1).cast(every.schema["attempt"])
                             .alias("attempt"))
    return final, both.select(every.columns)


def interrupted_summary(interrupted: pl.DataFrame | None) -> dict:
    """The run's interrupted requests: how many, how many estimated, what they cost (in the run's total)."""
    if interrupted is None or not interrupted.height:
        return {}
    return {"interrupted_requests": interrupted.height,
            "interrupted_estimated": int(interrupted["usage_estimated"].fill_null(False).sum()),
            "interrupted_cost_usd": float(interrupted["cost_usd"].sum())}
