"""The land task: the run into the warehouse (`sluice.stages.land.land_run`), its summary as Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from models.catalogue import Tier
from sluice.reports.summary import summary_markdown, summary_table
from sluice.stages.land import land_run
from tasks.progress import stage_finished, stage_started


@task(name="land", cache_policy=NO_CACHE)
def land(run_dir: Path, warehouse: str, run: dict, tier_order: list[str] | None = None,
         baseline: Tier | None = None) -> dict:
    stage_started("land")
    summary, rows = land_run(run_dir, warehouse, run, tier_order, baseline)
    stage_finished("land", rows)
    get_run_logger().info("landed %d rows into %s (results)", rows, warehouse)
    create_markdown_artifact(
        key="sluice-run-summary", markdown=summary_markdown(summary, run), description="Sluice run summary"
    )
    create_table_artifact(
        key="sluice-run-tiers", table=summary_table(summary), description="Sluice run: rows and cost per tier"
    )
    return summary
