"""The land task: the run into the warehouse (`sluice.stages.land.land_run`), its summary as Prefect artifacts, and
its HTML report (`sluice report`) written into the run folder and linked from a Prefect artifact; its answered
rows are added to the cache index (`sluice.stages.dedup.cache_index`) that later runs look earlier answers up in."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from models.catalogue import Tier
from sluice.contracts.columns import DEFAULT_MAX_TOKENS
from sluice.reports.html import write_report
from sluice.reports.summary import summary_markdown, summary_table
from sluice.stages.dedup.cache_index import index_answers
from sluice.stages.dedup.deduplicate import request_fingerprint, request_key
from sluice.stages.land import land_run
from tasks.progress import stage_finished, stage_started

REPORT_FILE = "report.html"


@task(name="land", cache_policy=NO_CACHE)
def land(run_dir: Path, warehouse: str, run: dict, tier_order: list[str] | None = None,
         baseline: Tier | None = None, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict:
    stage_started("land")
    summary, rows = land_run(run_dir, warehouse, run, tier_order, baseline)
    try:  # an unindexed run is read whole by later lookups (slower, same hits): never the run's failure
        index_answers(warehouse, request_key(default_max_tokens), request_fingerprint(default_max_tokens),
                      default_max_tokens, runs=[run["run_id"]])
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("cache index not updated: %s: %s", type(exc).__name__, exc)
    stage_finished("land", rows)
    get_run_logger().info("landed %d rows into %s (results)", rows, warehouse)
    create_markdown_artifact(
        key="sluice-run-summary", markdown=summary_markdown(summary, run), description="Sluice run summary"
    )
    create_table_artifact(
        key="sluice-run-tiers", table=summary_table(summary), description="Sluice run: rows and cost per tier"
    )
    publish_report(Path(run_dir), warehouse, run["run_id"])
    return summary


def publish_report(run_dir: Path, warehouse: str, run_id: str) -> Path | None:
    """The run's HTML report into its folder (`report.html`) and a Prefect link artifact to it. A report that
    cannot be drawn or linked is logged, never the run's failure: the run is landed, and `sluice report RUN_ID`
    draws it again from the warehouse."""
    logger = get_run_logger()
    try:
        path = write_report(warehouse, run_id, run_dir / REPORT_FILE).resolve()
    except Exception as exc:  # noqa: BLE001 - the page is a view of the landed run
        logger.warning("run report not written: %s: %s (sluice report %s draws it)", type(exc).__name__, exc, run_id)
        return None
    try:
        create_link_artifact(link=path.as_uri(), link_text=f"report of run {run_id}", key="sluice-run-report",
                             description=f"Sluice run report (self-contained HTML): {path}")
    except Exception as exc:  # noqa: BLE001 - the file is written; only the link is missing
        logger.warning("run report artifact not created: %s: %s", type(exc).__name__, exc)
    logger.info("run report: %s", path)
    return path
