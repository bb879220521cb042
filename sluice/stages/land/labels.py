"""Router labels from a run: its shadow pairs (the premium answer is the reference for the cheap one), and its
graded rows on the cheapest tier (the reference says whether the cheap answer was right)."""

from __future__ import annotations

import polars as pl

from sluice.contracts.answers import answers_agree


def labels_from_shadow(pairs: pl.DataFrame) -> pl.DataFrame:
    """`router_training` rows from shadow pairs (run_id, row_id, prompt, cheap_response, premium_response):
    cheap_ok is their agreement, premium_ok unknown (premium is the reference), source 'shadow'."""
    ok = [answers_agree(c, p) for c, p in zip(pairs["cheap_response"].to_list(), pairs["premium_response"].to_list())]
    return pairs.select("run_id", "row_id", "prompt").with_columns(
        pl.Series("cheap_ok", ok, dtype=pl.Boolean), pl.lit(None, pl.Boolean).alias("premium_ok"),
        pl.lit("shadow").alias("source"))


def labels_from_grades(results: pl.DataFrame, run_id: str, cheapest: str) -> pl.DataFrame:
    """`router_training` rows from the graded rows the cheapest tier answered and kept (not escalated): cheap_ok
    is the verdict against the reference, premium_ok unknown, source 'graded'."""
    graded = results.filter((pl.col("tier") == cheapest) & ~pl.col("escalated").fill_null(False)
                            & pl.col("correct").is_not_null() & pl.col("prompt").is_not_null())
    return graded.select(pl.lit(run_id).alias("run_id"), "row_id", "prompt", pl.col("correct").alias("cheap_ok"),
                         pl.lit(None, pl.Boolean).alias("premium_ok"), pl.lit("graded").alias("source"))
