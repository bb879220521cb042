"""What a stage needs to know about the run besides its input table and the settings."""

from __future__ import annotations

from dataclasses import dataclass

from models.catalogue import Catalogue
from sluice.contracts.shapes import RequestDefaults


@dataclass(frozen=True)
class StageContext:
    catalogue: Catalogue  # this run's tiers (deadline applied), cheapest first
    source: str | None = None  # the dataset file ingest reads
    defaults: RequestDefaults | None = None  # dataset-level request options (schema, temperature)
    cache_warehouse: str | None = None  # answers landed by earlier runs, reused by dedup (None: no cache)
    # answer(rows) and judge (or None) for dedup's checks of large clusters (tasks.verify_clusters); None: unchecked
    verify_clusters: object | None = None
