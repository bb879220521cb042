"""`sluice dedup FILE -o OUT`: a whole Parquet file marked by the dedup stage, every input column kept (copied over
in batches)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from sluice.config import load_settings
from sluice.contracts.columns import DUP_COLUMNS
from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate
from sluice.stages.ingest.read import read_prompts


def dedup_file(
    dataset: str | Path, output: str | Path, cfg: DedupConfig = DedupConfig(), warehouse: str | Path | None = None,
    batch_rows: int = 1 << 16,
) -> dict[str, int]:
    """`sluice dedup`: every input row with all its columns plus row_id, dup_of, dup_kind, dup_score (quarantined
    rows keep nulls); returns counts per dup_kind. The input's own columns are copied batch_rows rows at a time
    (the whole file is never held twice)."""
    where = load_settings().cluster  # SLUICE_CLUSTER=dask: the near stage's partitions on Dask (flows/cluster.py)
    if where.engine == "dask":
        from flows.cluster import dedup_on_cluster

        marked = dedup_on_cluster(where, read_prompts(dataset), cfg, warehouse)
    else:
        marked = deduplicate(read_prompts(dataset), cfg, warehouse, columns=["row_index", "row_id", *DUP_COLUMNS])
    added = pl.from_arrow(marked.select(["row_index", "row_id", *DUP_COLUMNS]))
    del marked
    assert isinstance(added, pl.DataFrame)
    added = added.sort("row_index").drop("row_index")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    writer, lo = None, 0
    with pq.ParquetFile(dataset, pre_buffer=False) as pf:  # pre-buffered chunks stay cached (ingest/read.py)
        try:
            for batch in pf.iter_batches(batch_size=batch_rows):
                raw = pl.from_arrow(batch)
                assert isinstance(raw, pl.DataFrame)
                part = pl.concat([raw.drop([c for c in ("row_id", *DUP_COLUMNS) if c in raw.columns]),
                                  added.slice(lo, raw.height)], how="horizontal").to_arrow()
                writer = writer or pq.ParquetWriter(output, part.schema)
                writer.write_table(part)
                lo += raw.height
        finally:
            if writer is not None:
                writer.close()
    counts = {"rows": added.height}
    for kind in ("exact", "near", "semantic", "cache"):
        counts[kind] = int((added["dup_kind"] == kind).sum())
    return counts
