"""The dashboard task: `sluice dashboard` refreshed after a drop-box pass landed something."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sluice.reports.dashboard import write_dashboard


@task(name="refresh-dashboard", cache_policy=NO_CACHE)
def refresh_dashboard(warehouse: str, out: Path) -> Path | None:
    """Rewrite `out` from the warehouse; a dashboard that cannot be drawn never fails the pass that landed runs."""
    try:
        path = write_dashboard(warehouse, out)
    except Exception as exc:  # noqa: BLE001 - the runs are landed; the page is a view of them
        get_run_logger().warning("dashboard not refreshed: %s: %s", type(exc).__name__, exc)
        return None
    get_run_logger().info("dashboard refreshed: %s", path)
    return path
