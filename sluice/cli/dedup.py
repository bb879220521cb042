"""`sluice dedup FILE -o OUT`: a whole Parquet file marked by the dedup stage, every input column kept."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from sluice.contracts.columns import DUP_COLUMNS
from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate
from sluice.stages.ingest.read import read_prompts


def dedup_file(
    dataset: str | Path, output: str | Path, cfg: DedupConfig = DedupConfig(), warehouse: str | Path | None = None
) -> dict[str, int]:
    """`sluice dedup`: every input row with all its columns plus row_id, dup_of, dup_kind, dup_score (quarantined
    rows keep nulls); returns counts per dup_kind."""
    raw = pl.from_arrow(pq.read_table(dataset))
    assert isinstance(raw, pl.DataFrame)
    marked = pl.from_arrow(deduplicate(read_prompts(dataset), cfg, warehouse))
    assert isinstance(marked, pl.DataFrame)
    added = marked.select("row_index", "row_id", *DUP_COLUMNS).sort("row_index")
    out = pl.concat([raw.drop([c for c in ("row_id", *DUP_COLUMNS) if c in raw.columns]),
                     added.drop("row_index")], how="horizontal")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    out.write_parquet(output)
    counts = {"rows": out.height}
    for kind in ("exact", "near", "semantic", "cache"):
        counts[kind] = int((out["dup_kind"] == kind).sum())
    return counts
