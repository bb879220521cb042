"""The review tasks: a tier's retry or escalation decision (`sluice.stages.review.review_tier`), and the judge of
the run's free-text shadow pairs (`sluice.stages.review.judge_shadow_pairs`)."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.backends import release_engines
from models.catalogue import Catalogue
from sluice.config import RouterSettings
from sluice.stages.review import judge_shadow_pairs, review_tier
from sluice.stages.review.judge import JUDGE_MAX_TOKENS, JUDGE_SYSTEM
from tasks.budget import judge_admission, settle
from tasks.progress import stage_advanced, stage_finished, stage_started


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


@task(name="judge", cache_policy=NO_CACHE)
def judge(run_dir: Path, catalogue: Catalogue, data_dir: str) -> dict[str, dict]:
    """Ask the catalogue's judge tier about the run's free-text shadow pairs; returns its billing line as
    {"<tier>/judge": billing} (empty: no judge, or nothing to judge). The judge never fails the run."""
    tier = catalogue.judge_tier
    if tier is None:
        return {}
    stage = f"judge {tier.name}"
    stage_started(stage)
    try:
        # with a budget, the judge's requests are reserved first, and its bill settled (tasks.budget)
        admit = judge_admission(run_dir, tier.name, JUDGE_SYSTEM, JUDGE_MAX_TOKENS)
        key, billing = judge_shadow_pairs(run_dir, catalogue, data_dir, admit=admit)
        if key is not None and billing is not None:
            settle(run_dir, key, billing)
    finally:
        if tier.self_hosted:
            release_engines()  # the judge ran after the last tier: nothing else needs the engine
    if key is None or billing is None:
        stage_finished(stage, 0)
        return {}
    stage_advanced(stage, int(billing.get("pairs", 0)),
                   int(billing.get("input_tokens", 0) + billing.get("output_tokens", 0)), billing.get("cost_usd", 0.0))
    stage_finished(stage)
    outcomes = ", ".join(f"{k.removeprefix('pairs_')} {int(v)}" for k, v in billing.items()
                         if k.startswith("pairs_") and v)
    get_run_logger().info("judge %s: %d free-text shadow pairs asked in both orders (%s), $%.6f", tier.name,
                          int(billing.get("pairs", 0)), outcomes, billing.get("cost_usd", 0.0))
    return {key: billing}
