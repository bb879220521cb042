"""The router that learns every night, and the quality floor's loop: what a run routes with, decided before it
routes (`plan_routing`: the promoted router, the premium share the loop raised), and after it lands, retraining
the router on the new labels and recording all of it on the run (`retrain_router`, `record_routing`). The
decisions are `sluice.stages.route.loop` and `sluice.stages.route.versions`."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from sluice.config import RouterSettings, Settings
from sluice.stages.route.loop import plan_routing as plan
from sluice.stages.route.loop import routed_premium_share
from sluice.stages.route.versions import retrain
from sluice.warehouse.routers import record_run_routing


@task(name="plan-routing", cache_policy=NO_CACHE)
def plan_routing(settings: Settings, dataset: str) -> tuple[RouterSettings, dict, dict | None]:
    """(router settings for the run, what it routes with, the quality loop's decision or None)."""
    assert settings.warehouse is not None
    router, routing, decision = plan(settings.router, settings.warehouse, settings.data_dir / "routers", dataset)
    logger = get_run_logger()
    logger.info("router: %s; routing by %s", routing["router"], routing["mode"])
    if decision:
        logger.warning("quality loop: %s %s -> %s: %s", decision["setting"], decision["from"], decision["to"],
                       decision["why"])
    return router, routing, decision


@task(name="retrain-router", cache_policy=NO_CACHE)
def retrain_router(warehouse: str, router: RouterSettings, run_dir: Path, run_id: str) -> dict:
    """A new router version when enough labels have arrived; a failure is logged and returned, never raised:
    the run has landed, and its router can learn tomorrow."""
    try:
        outcome = retrain(warehouse, router, run_dir / "router-candidate", run_id)
    except Exception as exc:  # noqa: BLE001 - any failure to retrain is recorded, not the run's failure
        get_run_logger().exception("router not retrained")
        return {"trained": False, "failed": True, "reason": f"retraining failed: {type(exc).__name__}: {exc}"}
    get_run_logger().info("router %s: %s", f"version {outcome['version']}" if outcome["trained"] else "not retrained",
                          outcome["reason"])
    return outcome


@task(name="record-routing", cache_policy=NO_CACHE)
def record_routing(warehouse: str, run_dir: Path, run_id: str, premium_tier: str, routing: dict,
                   decision: dict | None) -> dict:
    """`runs.router_version`, `runs.routing` (with the share of rows routed to premium) and `runs.quality_loop`."""
    routed = pl.read_parquet(run_dir / "routed.parquet", columns=["tier"])
    routing = {**routing, "routed_premium_share": routed_premium_share(routed, premium_tier)}
    record_run_routing(warehouse, run_id, routing.get("router_version"), routing, decision)
    return routing
