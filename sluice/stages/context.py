"""What a stage needs to know about the run besides its input table and the settings."""

from __future__ import annotations

from dataclasses import dataclass

from models.catalogue import Catalogue
from sluice.contracts.shapes import RequestDefaults
from sluice.stages.mapping import Cluster


@dataclass(frozen=True)
class StageContext:
    catalogue: Catalogue  # this run's tiers (deadline applied), cheapest first
    source: str | None = None  # the dataset file ingest reads
    defaults: RequestDefaults | None = None  # dataset-level request options (schema, temperature)
    cache_warehouse: str | None = None  # answers landed by earlier runs, reused by dedup (None: no cache)
    # answer(rows) and judge (or None) for dedup's checks of large clusters (tasks.verify_clusters); None: unchecked
    verify_clusters: object | None = None
    # where the map/reduce stages (dedup's near partitions, route) run their partitions: a cluster
    # (`sluice.stages.mapping.Cluster`, flows/cluster.py for `cluster.engine = "dask"`); None: this process
    cluster: Cluster | None = None
    # a folder the cluster's workers reach under the same path (the run folder): spills and part files
    shared_dir: str | None = None
