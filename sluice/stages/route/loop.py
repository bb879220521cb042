"""What a run routes with, decided before it routes: the promoted router, and the quality floor's closed loop.

The router: the one given (`--router`, `RouterSettings.model`), else the warehouse's promoted version
(`sluice.stages.route.versions.promoted_router`; `RouterSettings.use_promoted`), else the heuristic gatekeeper.

The loop (README "Quality without references"), from the dataset's last landed run:
    its quality lower bound fell under its floor (`--min-quality`; `runs.quality_alert` set)
        -> this run's premium share is that run's premium share + `RouterSettings.quality_step` (0.1), capped at
           1.0. That run's premium share is the one it was given (by `--premium-share` or by the loop), or, when
           it routed by score thresholds, the share of its routed rows the thresholds sent to premium: the
           thresholds give way to a share.
    it held its floor with a share the loop had raised
        -> this run keeps that share: the raise is what made it hold (the rule raises "until the lower bound
           clears the floor"; stepping back down would undo it the next night).
    a run with a budget keeps its budget: a budget caps the spend, so the share cannot be raised under it; the
    decision says so. A configured share above the loop's is used as it is. No floor on the last run, no last
    run, or a step of 0: nothing to decide.
Every decision is recorded on the run (`runs.quality_loop`: setting, from, to, why, after_run) and printed in its
summary.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from sluice.config import RouterSettings
from sluice.stages.route.learned import RouterError, load_router
from sluice.stages.route.versions import promoted_router
from sluice.warehouse.routers import last_run


def plan_routing(settings: RouterSettings, warehouse: str | Path, cache_dir: Path,
                 dataset: str) -> tuple[RouterSettings, dict, dict | None]:
    """(the router settings this run uses, what it routes with, the loop's decision or None)."""
    routing: dict = {"router": "heuristic gatekeeper", "router_version": None}
    if settings.model is not None:
        routing["router"] = f"given: {settings.model}"
    elif settings.use_promoted:
        found = promoted_router(warehouse, cache_dir)
        if found is not None:
            version, folder = found
            try:
                load_router(folder)
            except RouterError as exc:  # a version this Sluice cannot read: route as if none were promoted
                routing["router"] = f"heuristic gatekeeper (promoted version {version} unusable: {exc})"
            else:
                settings = settings.model_copy(update={"model": folder})
                routing.update(router=f"version {version} (promoted)", router_version=version)
    settings, decision = quality_loop(last_run(warehouse, dataset), settings)
    mode = "budget" if settings.budget_usd is not None else "share" if settings.premium_share is not None \
        else "thresholds"
    routing.update(mode=mode, premium_share=settings.premium_share, budget_usd=settings.budget_usd)
    return settings, routing, decision


def quality_loop(last: dict | None, settings: RouterSettings) -> tuple[RouterSettings, dict | None]:
    """The loop's rule (module docstring) for a run after `last` (`sluice.warehouse.routers.last_run`)."""
    if last is None or last.get("min_quality") is None or settings.quality_step == 0:
        return settings, None
    after, floor, low = last["run_id"], last["min_quality"], last.get("quality_low")
    routing, before = last.get("routing") or {}, last.get("quality_loop") or {}
    share = routing.get("premium_share")
    if share is None:
        share = routing.get("routed_premium_share")
    if last.get("quality_alert"):
        if settings.budget_usd is not None:
            return settings, {"setting": "budget_usd", "from": settings.budget_usd, "to": settings.budget_usd,
                              "after_run": after, "why": f"run {after}: {last['quality_alert']}; a budget caps the "
                              "spend, so the premium share cannot be raised under it: raise --budget-usd"}
        if share is None:
            return settings, {"setting": "premium_share", "from": None, "to": settings.premium_share,
                              "after_run": after, "why": f"run {after}: {last['quality_alert']}; it recorded no "
                              "premium share to raise"}
        target = min(1.0, round(share + settings.quality_step, 6))
        why = (f"run {after}: {last['quality_alert']}: its premium share {share:.2f} + {settings.quality_step:g}"
               + (" (capped at 1.0)" if share + settings.quality_step > 1.0 else ""))
    elif before.get("setting") == "premium_share" and share is not None:
        target = share
        why = f"run {after} held its floor {floor:.2f} (lower bound {low:.2f}) at the premium share {share:.2f} " \
              "the loop raised it to: kept"
    else:
        return settings, None
    configured = settings.premium_share
    if configured is not None and configured >= target:
        return settings, {"setting": "premium_share", "from": configured, "to": configured, "after_run": after,
                          "why": f"{why}; the configured share {configured:.2f} is already at least that"}
    decision = {"setting": "premium_share", "from": share, "to": target, "after_run": after,
                "configured": configured, "why": why}
    return RouterSettings.model_validate({**settings.model_dump(), "premium_share": target}), decision


def routed_premium_share(routed: pl.DataFrame, premium_tier: str) -> float | None:
    """The share of the routed rows the router sent to `premium_tier` (None when nothing was routed)."""
    sent = routed.filter(pl.col("tier").is_not_null())
    return round(float((sent["tier"] == premium_tier).mean()), 6) if sent.height else None  # type: ignore[arg-type]
