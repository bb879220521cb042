"""Inference tasks: a tier's partition answered here or dispatched to a work pool; a run that waits on its provider
batches, polling them, and landing their record. Engines are reached only through the backend interface
(`models.backends`). The check a tier with a `reference_tier` passes first is in tasks/validate.py."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.backends import ProviderBatchPending, make_backend, release_engines
from models.catalogue import Catalogue
from sluice.runs import answers_dir, mark_waiting, read_manifest
from sluice.stages.infer import (
    answer_shard,
    claim_shard,
    clear_claims,
    infer_tier_shards,
    shard_answered,
    shard_count,
    sum_billings,
    tier_billing,
)
from tasks.progress import stage_advanced, stage_finished, stage_started


def _unless_waiting(task, task_run, state) -> bool:
    """Retry a failed tier, unless it failed only to wait on its provider batches (not a failure: see below)."""
    try:
        state.result()
    except ProviderBatchPending:
        return False
    except BaseException:
        return True
    return True


# Retried once: a dead engine or a broken connection fails the whole shard before its answers are written, so a
# retry re-runs the shard without double-charging (answers are only written, and costs only counted, on success;
# a shard's provider batches are journaled, and its retry polls them). A tier that does not wait for its provider
# batches (`batch_wait = false`) raises ProviderBatchPending once they are submitted: the run ends waiting on them.
@task(name="infer-tier", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5, retry_condition_fn=_unless_waiting)
def infer_tier(
    tier_name: str,
    partition: Path,
    run_dir: Path,
    catalogue: Catalogue,
    data_dir: str,
    default_max_tokens: int,
    shard_rows: int = 256,
    kind: str = "first",
) -> dict[str, float]:
    """Answer a tier's partition: its routed rows (`kind` "first"), or rows the review sent to it again
    ("retry", "escalation", "shadow"; answers under answers/<kind>/)."""
    logger = get_run_logger()
    tier = catalogue.tier(tier_name)
    rows = pq.read_metadata(partition).num_rows
    logger.info("tier %s: %d rows (%s) -> %s backend, model %s", tier.name, rows, kind, tier.backend, tier.model)
    if tier.replayed:
        logger.info("tier %s: replayed from %s (recorded answers, no network)", tier.name, tier.answers)
    stage = f"infer {tier.name}" if kind == "first" else f"{kind} {tier.name}"
    stage_started(stage, rows)
    backend = make_backend(tier, data_dir=data_dir)
    try:
        billing = infer_tier_shards(
            partition, answers_dir(run_dir, kind), tier, catalogue, backend, default_max_tokens, shard_rows,
            on_shard=lambda n, tokens, cost: stage_advanced(stage, n, tokens, cost),
        )
    except ProviderBatchPending as wait:
        logger.info("tier %s: %d rows with the provider in batch(es) %s; the run waits on them (collect-batches "
                    "resumes it when they have ended)", tier.name, wait.rows, ", ".join(wait.batch_ids))
        raise
    except BaseException:
        release_engines()  # a failed shard may have left the engine dead: the retry starts a fresh one
        raise
    finally:
        backend.close()
    stage_finished(stage)
    logger.info(
        "tier %s: done, billed %.1f s, $%.6f", tier.name, billing.get("billed_seconds", 0.0), billing["cost_usd"]
    )
    if tier.replayed:
        logger.info("tier %s: %d rows replayed, %d without a recorded answer (failed)", tier.name,
                    billing.get("replay_hits", 0), billing.get("replay_misses", 0))
    return billing


@task(name="dispatch-tier", cache_policy=NO_CACHE)
def dispatch_tier(
    tier_name: str, partition: Path, run_dir: Path, deployment: str, shard_rows: int,
    catalogue_path: str | None, data_dir: str, default_max_tokens: int, kind: str = "first",
) -> dict[str, float]:
    """Scale out: one flow run of the `infer-shard` deployment per unanswered shard, taken by whichever workers
    of its pool are free; wait for all, then add up the shards' billing files. Every pass is dispatched alike:
    the routed rows ("first") and the review's follow-ups ("escalation", "shadow", "retry")."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    stage = f"infer {tier_name}" if kind == "first" else f"{kind} {tier_name}"
    stage_started(stage, pq.read_metadata(partition).num_rows)
    tier_dir = answers_dir(run_dir, kind) / f"tier={tier_name}"
    shards = shard_count(partition, shard_rows)
    if cleared := clear_claims(tier_dir):  # left by workers of an earlier try that died holding them
        logger.info("tier %s: %d stale shard claim(s) cleared", tier_name, cleared)
    todo = [k for k in range(shards) if not shard_answered(tier_dir, k)]
    params = {"run_dir": str(run_dir.resolve()), "tier_name": tier_name, "partition": str(partition.resolve()),
              "shard_rows": shard_rows, "default_max_tokens": default_max_tokens, "kind": kind,
              "catalogue": str(Path(catalogue_path).resolve()) if catalogue_path else None,
              "data_dir": str(Path(data_dir).resolve())}
    submitted = [run_deployment(deployment, parameters={**params, "shard": k}, timeout=0) for k in todo]
    logger.info("tier %s (%s): %d shards dispatched to %s", tier_name, kind, len(submitted), deployment)
    failed = []
    with get_client(sync_client=True) as client:
        for run in submitted:
            while not (state := client.read_flow_run(run.id).state) or not state.is_final():
                time.sleep(2)
            if not state.is_completed():
                failed.append(f"{run.name}: {state.name}")
    missing = [k for k in range(shards) if not shard_answered(tier_dir, k)]
    if failed or missing:
        raise RuntimeError(f"tier {tier_name} ({kind}): {len(failed)} shard run(s) did not complete "
                           f"({'; '.join(failed)}), {len(missing)} shard(s) unanswered; rerun to resume: answered "
                           "shards are kept")
    billing = tier_billing(answers_dir(run_dir, kind), tier_name)
    stage_advanced(stage, int(billing.get("rows", 0)), cost_usd=billing.get("cost_usd", 0.0))
    stage_finished(stage)
    return billing


def answer_pass(tier_name: str, partition: Path, run_dir: Path, catalogue: Catalogue, data_dir: str,
                default_max_tokens: int, shard_rows: int, kind: str, dispatch: str | None = None,
                catalogue_path: str | None = None) -> dict[str, float]:
    """One pass of a tier, answered here (`infer_tier`) or, with `dispatch` (a deployment), on the pool's workers
    like the first pass (`dispatch_tier`); returns its billing."""
    if dispatch:
        return dispatch_tier(tier_name, partition, run_dir, dispatch, shard_rows, catalogue_path, data_dir,
                             default_max_tokens, kind=kind)
    return infer_tier(tier_name, partition, run_dir, catalogue, data_dir, default_max_tokens, shard_rows=shard_rows,
                      kind=kind)


@task(name="infer-shard", cache_policy=NO_CACHE)
def infer_one_shard(run_dir: Path, tier_name: str, partition: Path, shard: int, shard_rows: int,
                    catalogue: Catalogue, data_dir: str, default_max_tokens: int,
                    kind: str = "first") -> dict[str, float]:
    """Shard `shard` of a tier's pass, on whichever worker runs it (flows/infer_shard.py), unless another worker
    has taken it. While its engine is warm the worker goes on to the tier's shards no run has started yet (each
    taken by `claim_shard`, so the run dispatched for it skips it): a pool of N workers starts N engines per tier,
    not one per shard. A process worker runs one flow per process, so the engine is released before it exits.
    Returns the billing of the shards answered here (summed; `shards` counts them, 0 when skipped)."""
    logger = get_run_logger()
    tier = catalogue.tier(tier_name)
    tier_dir = answers_dir(run_dir, kind) / f"tier={tier_name}"
    if not claim_shard(tier_dir, shard):
        logger.info("tier %s (%s) shard %d: answered or taken by another worker; skipped", tier_name, kind, shard)
        return {"shards": 0.0}
    logger.info("tier %s (%s) shard %d of %s", tier_name, kind, shard, partition)
    if tier.replayed:
        logger.info("tier %s: replayed from %s (recorded answers, no network)", tier.name, tier.answers)
    backend = make_backend(tier, data_dir=data_dir)
    try:
        bills = [answer_shard(partition, shard, answers_dir(run_dir, kind), tier, catalogue, backend,
                              default_max_tokens, shard_rows)]
        if tier.self_hosted:  # the engine is warm: take the tier's next shards that nobody has started
            for k in range(shard_count(partition, shard_rows)):
                if k != shard and claim_shard(tier_dir, k):
                    logger.info("tier %s (%s) shard %d: taken on the warm engine", tier_name, kind, k)
                    bills.append(answer_shard(partition, k, answers_dir(run_dir, kind), tier, catalogue, backend,
                                              default_max_tokens, shard_rows))
    finally:
        backend.close()
        release_engines()
    return sum_billings(bills)


def waiting_on_provider(run_dir: Path, wait: ProviderBatchPending):
    """End the run "waiting on provider batch": its manifest says so (with the batches, and the run's arguments
    for `collect-batches` to resume it with), and so does the flow run's final state (type COMPLETED, named
    "Waiting"). Nothing has landed and nothing is lost: the batches are journaled in the run folder."""
    from prefect.runtime import flow_run
    from prefect.states import Completed

    waiting_on = {"tier": wait.tier, "batch_ids": wait.batch_ids, "rows": wait.rows,
                  "journals": [str(Path(j).relative_to(run_dir)) for j in wait.journals]}
    mark_waiting(run_dir, waiting_on, {k: v for k, v in dict(flow_run.parameters or {}).items() if k != "run_id"})
    message = f"waiting on provider batch: {wait}; collect-batches lands the run when they have ended"
    get_run_logger().info("run %s: %s", run_dir.name, message)
    return Completed(name="Waiting", message=message,
                     data={"run_id": run_dir.name, "status": "waiting", "waiting_on": waiting_on, "message": message})


@task(name="poll-provider-batches", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30)
def poll_provider_batches(run_dir: Path, catalogue: Catalogue, data_dir: str) -> list[str]:
    """The waiting run's provider batches that have not ended yet (each polled once, ends journaled)."""
    from models.backends.batch_loop import batches_running

    waiting = (read_manifest(run_dir) or {}).get("waiting_on") or {}
    backend = make_backend(catalogue.tier(waiting["tier"]), data_dir=data_dir)
    running = [bid for journal in waiting.get("journals", []) for bid in batches_running(backend, run_dir / journal)]
    get_run_logger().info("run %s: %d of %d provider batch(es) still running", run_dir.name, len(running),
                          len(waiting.get("batch_ids", [])))
    return running


@task(name="record-provider-batches", cache_policy=NO_CACHE)
def record_provider_batches(run_dir: Path, warehouse: str, run_id: str) -> int:
    """The run's provider batches, from its journals, into the warehouse's `provider_batches`."""
    from sluice.stages.infer.batches import land_provider_batches

    return land_provider_batches(warehouse, run_id, run_dir)
