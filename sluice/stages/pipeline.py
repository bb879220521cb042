"""The table stages in order, with the hand-off file each writes in the run folder.

Each is a module with `run(table, settings, ctx) -> table` and `describe(table) -> list[str]` (log lines).
"""

from __future__ import annotations

from types import ModuleType

from sluice.stages import dedup, ingest, route

TABLE_STAGES: dict[str, ModuleType] = {"ingest": ingest, "dedup": dedup, "route": route}
HANDOFFS = {"ingest": "ingested.parquet", "dedup": "deduped.parquet", "route": "routed.parquet"}
