"""Router labels from a run's shadow pairs: the premium answer is the reference for the cheap one."""

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
