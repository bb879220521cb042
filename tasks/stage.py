"""One Prefect task for every table stage: read the hand-off, call `run(table, settings, ctx)`, write the result
atomically in the run folder (so a later stage, or a resumed run, never depends on memory an earlier one held)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sluice.config import Settings
from sluice.runs import write_parquet
from sluice.stages.context import StageContext
from sluice.stages.pipeline import HANDOFFS, TABLE_STAGES
from tasks.progress import stage_finished, stage_started


@task(name="stage", task_run_name="{name}", cache_policy=NO_CACHE)
def run_stage(name: str, run_dir: Path, settings: Settings, ctx: StageContext, in_path: Path | None = None) -> Path:
    """Run table stage `name` on `in_path` (None for ingest, which reads `ctx.source`); returns its hand-off."""
    stage = TABLE_STAGES[name]
    stage_started(name, pq.read_metadata(in_path).num_rows if in_path is not None else None)
    table = stage.run(pq.read_table(in_path) if in_path is not None else None, settings, ctx)
    out = write_parquet(table, run_dir / HANDOFFS[name])
    stage_finished(name, table.num_rows)
    logger = get_run_logger()
    first, *rest = stage.describe(table)
    logger.info(first)
    for line in rest:
        logger.warning(line)
    return out
