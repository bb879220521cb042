"""Land: one `results` row per input row, every attempt in `attempts`, the run in `runs`.

    results.py  combine a row's attempts, assemble the results table, land it in one transaction
    grading.py  each row's answer against its reference (correct, grade_reason); the run's accuracy per tier
    labels.py   router labels from the shadow pairs
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from sluice.contracts.columns import ATTEMPT_KINDS
from sluice.runs import answers_dir, write_parquet
from sluice.stages.land.labels import labels_from_shadow
from sluice.stages.land.results import assemble_results, combine_attempts, land_results

__all__ = ["assemble_results", "combine_attempts", "land_results", "land_run"]


def land_run(run_dir: Path, warehouse: str, run: dict, tier_order: list[str] | None = None) -> tuple[dict, int]:
    """Land a run from its folder: the routed rows, every tier's answers of every attempt kind and the review's
    escalation decisions; returns the run's summary and the number of rows landed."""
    routed = pq.read_table(run_dir / "routed.parquet")
    attempts = [(kind, pq.read_table(p)) for kind in ATTEMPT_KINDS
                for p in sorted(answers_dir(run_dir, kind).glob("tier=*/shard-*.parquet"))]
    escalated = [pl.read_parquet(p, columns=["row_id", "escalated_from", "cascade_reason"])
                 for p in sorted((run_dir / "escalated").glob("tier=*.parquet"))]
    final, every, pairs = combine_attempts(
        attempts, tier_order or sorted({str(t) for _, a in attempts for t in a["tier"].to_pylist()}),
        pl.concat(escalated) if escalated else None)
    results = assemble_results(routed, final, run["run_id"], run["dataset"])
    write_parquet(results.to_arrow(), run_dir / "results.parquet")
    labels = None
    if pairs.height:
        prompts = results.select("row_id", "prompt")
        labels = labels_from_shadow(pairs.join(prompts, on="row_id").select(
            pl.lit(run["run_id"]).alias("run_id"), "row_id", "prompt",
            pl.col("response").alias("cheap_response"), pl.col("_shadow_response").alias("premium_response")))
    return land_results(warehouse, results, run, attempts=every, labels=labels), results.height
