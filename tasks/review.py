"""The review task: a tier's retry or escalation decision (`sluice.stages.review.review_tier`)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.catalogue import Catalogue
from sluice.config import RouterSettings
from sluice.stages.review import review_tier


@task(name="review", cache_policy=NO_CACHE)
def review(
    run_dir: Path, tier_name: str, catalogue: Catalogue, router: RouterSettings, default_max_tokens: int,
    step: str,
) -> Path | None:
    """Step "retry" or "escalate" for `tier_name`; returns the partition to send (None: nothing)."""
    part, note = review_tier(run_dir, tier_name, catalogue, router, default_max_tokens, step)
    if note:
        get_run_logger().info(note)
    return part
