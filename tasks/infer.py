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
from sluice.stages.infer import answer_shard, infer_tier_shards, shard_count, tier_billing
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
    catalogue_path: str | None, data_dir: str, default_max_tokens: int,
) -> dict[str, float]:
    """Scale out: one flow run of the `infer-shard` deployment per unanswered shard, taken by whichever workers
    of its pool are free; wait for all, then add up the shards' billing files."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    stage_started(f"infer {tier_name}", pq.read_metadata(partition).num_rows)
    answers = run_dir / "answers" / f"tier={tier_name}"
    todo = [k for k in range(shard_count(partition, shard_rows))
            if not (answers / f"shard-{k:05d}.parquet").exists()]
    params = {"run_dir": str(run_dir.resolve()), "tier_name": tier_name, "partition": str(partition.resolve()),
              "shard_rows": shard_rows, "default_max_tokens": default_max_tokens,
              "catalogue": str(Path(catalogue_path).resolve()) if catalogue_path else None,
              "data_dir": str(Path(data_dir).resolve())}
    submitted = [run_deployment(deployment, parameters={**params, "shard": k}, timeout=0) for k in todo]
    logger.info("tier %s: %d shards dispatched to %s", tier_name, len(submitted), deployment)
    failed = []
    with get_client(sync_client=True) as client:
        for run in submitted:
            while not (state := client.read_flow_run(run.id).state) or not state.is_final():
                time.sleep(2)
            if not state.is_completed():
                failed.append(f"{run.name}: {state.name}")
    if failed:
        raise RuntimeError(f"tier {tier_name}: {len(failed)} shard run(s) did not complete ({'; '.join(failed)});"
                           " rerun to resume: answered shards are kept")
    billing = tier_billing(run_dir / "answers", tier_name)
    stage_advanced(f"infer {tier_name}", int(billing.get("rows", 0)), cost_usd=billing.get("cost_usd", 0.0))
    stage_finished(f"infer {tier_name}")
    return billing


@task(name="infer-shard", cache_policy=NO_CACHE)
def infer_one_shard(run_dir: Path, tier_name: str, partition: Path, shard: int, shard_rows: int,
                    catalogue: Catalogue, data_dir: str, default_max_tokens: int) -> dict[str, float]:
    """One shard of a tier's partition, on whichever worker runs it (flows/infer_shard.py); a process worker runs
    one flow per process, so the engine is released before it exits."""
    tier = catalogue.tier(tier_name)
    get_run_logger().info("tier %s shard %d of %s", tier_name, shard, partition)
    if tier.replayed:
        get_run_logger().info("tier %s: replayed from %s (recorded answers, no network)", tier.name, tier.answers)
    backend = make_backend(tier, data_dir=data_dir)
    try:
        return answer_shard(partition, shard, run_dir / "answers", tier, catalogue, backend, default_max_tokens,
                            shard_rows)
    finally:
        backend.close()
        release_engines()


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
