"""`sluice dedup FILE -o OUT`: a whole Parquet file marked by the dedup stage, every input column kept (copied over
in batches). With `--cluster dask` (or `--cluster-address`, SLUICE_CLUSTER*) the near stage's partitions run on a
Dask cluster (flows/cluster.py, docs/cluster.md), with the same marks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from sluice.cli.router import ClusterAddressOpt, ClusterOpt, _fail, cluster_settings, console

if TYPE_CHECKING:
    from sluice.config import ClusterSettings
    from sluice.stages.dedup.deduplicate import DedupConfig


def dedup_command(
    dataset: Annotated[Path, typer.Argument(help="Parquet file with a `prompt` column")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Parquet file to write")],
    only: Annotated[str, typer.Option(help="stages, comma-separated: exact,near,semantic,cache")] = "exact,near,semantic",
    warehouse: Annotated[Optional[Path], typer.Option(help="DuckDB warehouse of earlier runs (cache stage)")] = None,
    default_max_tokens: Annotated[int, typer.Option(help="max_tokens of rows that set none")] = 256,
    max_false_hit: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="upper 95% bound on the semantic rule's false-hit rate (calibrated)")] = 0.01,
    cluster: ClusterOpt = None,
    cluster_address: ClusterAddressOpt = None,
) -> None:
    """Mark duplicates: every input row, its columns plus row_id, dup_of, dup_kind, dup_score."""

    from sluice.stages.dedup.calibrate import calibrate
    from sluice.stages.dedup.deduplicate import DedupConfig, calibrated
    from sluice.stages.dedup.verdicts import team_verdicts
    from sluice.stages.ingest.read import IngestError

    stages = tuple(s.strip() for s in only.split(",") if s.strip())
    try:
        where = cluster_settings(cluster, cluster_address)
    except ValueError as exc:
        _fail(str(exc))
    try:
        rule = calibrate(max_false_hit, team_verdicts(warehouse)).rule
        console.print(f"semantic rule for max false-hit rate {max_false_hit}: {rule.describe()}", highlight=False,
                      soft_wrap=True)
        counts = dedup_file(dataset, output, calibrated(DedupConfig(stages=stages,
                                                                    default_max_tokens=default_max_tokens), rule),
                            warehouse=warehouse, cluster=where)
    except (IngestError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"{output}: {counts['rows']} rows, " + ", ".join(f"{k} {v}" for k, v in counts.items() if k != "rows"))


def dedup_file(
    dataset: str | Path, output: str | Path, cfg: "DedupConfig | None" = None, warehouse: str | Path | None = None,
    batch_rows: int = 1 << 16, cluster: "ClusterSettings | None" = None,
) -> dict[str, int]:
    """`sluice dedup`: every input row with all its columns plus row_id, dup_of, dup_kind, dup_score (quarantined
    rows keep nulls); returns counts per dup_kind. The input's own columns are copied batch_rows rows at a time
    (the whole file is never held twice). `cluster`: where the near stage's partitions run (None: the settings',
    SLUICE_CLUSTER*)."""
    import polars as pl
    import pyarrow.parquet as pq

    from sluice.config import load_settings
    from sluice.contracts.columns import DUP_COLUMNS
    from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate
    from sluice.stages.ingest.read import read_prompts

    cfg = cfg or DedupConfig()
    where = cluster or load_settings().cluster
    if where.engine == "dask":  # the near stage's partitions on Dask (flows/cluster.py)
        from flows.cluster import dedup_on_cluster

        marked = dedup_on_cluster(where, read_prompts(dataset), cfg, warehouse)
    else:
        # read inside, so the stage holds the only copy of the prompts (it drops the long ones after near)
        marked = deduplicate(lambda: read_prompts(dataset), cfg, warehouse,
                             columns=["row_index", "row_id", *DUP_COLUMNS])
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
