"""sluice-run: answer one prompt dataset as cheaply as its answers allow, and land every row in DuckDB.

    ingest  -> read the Parquet file; bad rows are quarantined with a reason, the rest go on
    dedup   -> exact duplicates are answered from their first occurrence, free
    route   -> the gatekeeper scores each row and writes one Parquet partition per tier
    infer   -> each tier answers its partition (self-hosted vLLM, or an OpenAI-compatible API), cheapest first;
               a tier naming a `reference_tier` (a quantised model) is first compared with it on a sample of its
               rows, and a tier that fails is not used: its rows go to the next tier
    review  -> after each tier: answers failing their schema are retried once on it; the still-invalid and the
               least confident are escalated to the next tier (the batch cascade); a shadow sample of the
               cheapest tier is also answered by the premium tier, to retrain the router on this traffic
    judge   -> with `judge = "<tier>"` in the catalogue, the free-text shadow pairs are put to that tier (its
               spend is the run's own line)
    land    -> one `results` row per input row, with tokens, latency, cost and the all-premium baseline
    learn   -> when enough new labels (shadow verdicts, graded rows) have arrived, a new router version is
               trained and kept in the warehouse, promoted only if it beats the promoted one on held-out folds

Before routing, the run picks its router: the one given, else the warehouse's promoted version; and after a night
under its --min-quality floor, the next run of the dataset raises its premium share by 0.1 (the quality loop).
Both are recorded on the run (`runs.router_version`, `runs.routing`, `runs.quality_loop`) and in its summary.

With --budget-usd the budget caps the whole run (sluice.stages.budget, tasks/budget.py): routing plans within it,
then every pass (first answers, escalations, shadow, retries, the judge) reserves its expected cost before it
sends and settles the measured cost after. Rows that fit on no tier land `deferred`, with the reason, and the next
run of the dataset answers them first. Prefect events: sluice.run.budget-reached, .deferred, .failed (docs/events.md).

Every stage checkpoints its output in `<runs_dir>/<run_id>/`; the infer stage checkpoints each shard, and journals
each provider batch the moment the provider accepts it. Killed anywhere, the same command resumes the unfinished
run: nothing finished is recomputed or paid for again, and journaled batches are polled, not submitted again.
An API tier with `batch_wait = false` submits its batches and the run ends "waiting on provider batch"; the
`collect-batches` flow (flows/collect_batches.py) resumes it when they have ended.

Scale-out: `dispatch="infer-shard/gpu"` sends each shard of the self-hosted tiers to the workers of a work pool
as separate flow runs (flows/infer_shard.py); `dispatch_api_tiers=True` sends the API tiers' shards too (each
worker then applies the tier's rate limits on its own: divide them by the number of workers). With
`SLUICE_CLUSTER=dask` (or SLUICE_CLUSTER_ADDRESS) the dedup stage's near partitions and the route stage's
partitions run on a Dask cluster (flows/cluster.py, docs/cluster.md), with the same hand-offs as in process.

Run it with no Prefect server (a temporary local one starts by itself):

    sluice run data/samples/prompts.parquet --warehouse data/warehouse.duckdb
    python -m flows.batch_run data/samples/prompts.parquet
"""

from __future__ import annotations

import secrets
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow, get_run_logger

from models.backends import ProviderBatchPending, release_engines
from models.stand_in import keep_stand_ins
from sluice.config import ClusterSettings, RouterSettings, load_settings
from sluice.contracts.names import dataset_name_for, validate_dataset_name
from sluice.contracts.shapes import RequestDefaults
from sluice.contracts.tags import check_tags
from sluice.reports import progress
from sluice.runs import (
    catalogue_fingerprint,
    file_sha256,
    find_unfinished_run,
    fingerprint,
    mark_landed,
    read_manifest,
    write_manifest,
)
from sluice.stages.context import StageContext
from sluice.stages.dedup import run_record as dedup_record
from sluice.stages.infer.tier_validation import validation_billing
from sluice.stages.route import write_tier_partitions
from tasks.budget import admit_first_answers, budget_summary, carry_deferred, gate, run_failed, settle
from tasks.infer import (
    answer_pass,
    dispatch_tier,
    infer_tier,
    record_provider_batches,
    waiting_on_provider,
)
from tasks.land import land
from tasks.learn import plan_routing, record_routing, retrain_router
from tasks.review import judge, review
from tasks.stage import run_stage
from tasks.validate import validate_tier
from tasks.verify_clusters import ClusterProbe


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@flow(name="sluice-run", on_failure=[run_failed])
def sluice_run(
    dataset_path: str,
    warehouse: str | None = None,
    catalogue: str | None = None,
    data_dir: str | None = None,
    run_id: str | None = None,
    dataset: str | None = None,
    router: str | None = None,
    premium_share: float | None = None,
    budget_usd: float | None = None,
    deadline_h: float | None = None,
    dispatch: str | None = None,
    use_cache: bool = True,
    dispatch_api_tiers: bool = False,
    resume: bool = True,
    response_schema: str | None = None,
    temperature: float | None = None,
    cascade_share: float | None = None,
    shadow_share: float | None = None,
    cascade_min_confidence: float | None = None,
    mid_share: float | None = None,
    grader: str | None = None,
    min_quality: float | None = None,
    retrain_min_new_labels: int | None = None,
    tags: dict[str, str] | None = None,
    submission: dict | None = None,
    max_false_hit: float | None = None,
    trim: bool | None = None,
    cluster: dict | None = None,
) -> dict:
    """`response_schema`: JSON Schema text (or a choice list, `sluice.contracts.shapes.schema_from_choices`) for rows
    without their own; `temperature`: for rows without their own (default greedy); `grader`: how rows with a
    `reference` are graded when they have no `grader` column (`sluice.contracts.grading`; default auto);
    `min_quality`: a floor for the run's quality estimate (`sluice.stages.land.estimate`): a lower bound under it
    is said in the summary and recorded in `runs.quality_alert`, and the next run of the dataset raises its premium
    share (`sluice.stages.route.loop`); `retrain_min_new_labels`: new labels that start a router retraining after
    the run lands (`RouterSettings.retrain_min_new_labels`); `cluster`: where the dedup stage's near partitions and
    the route stage's partitions run (`sluice.config.ClusterSettings` fields; `sluice run --cluster`), instead of
    the settings' (SLUICE_CLUSTER*)."""
    if min_quality is not None and not 0.0 <= min_quality <= 1.0:
        raise ValueError(f"min_quality must be in [0, 1], got {min_quality}")
    settings = load_settings(warehouse=warehouse, catalogue_path=catalogue, data_dir=data_dir,
                             max_false_hit=max_false_hit)  # the semantic dedup rule's bound (sluice.stages.dedup)
    if cluster is not None:
        settings.cluster = ClusterSettings.model_validate(cluster)
    overrides = {k: v for k, v in {"model": router, "premium_share": premium_share, "budget_usd": budget_usd,
                                   "cascade_share": cascade_share, "shadow_share": shadow_share,
                                   "cascade_min_confidence": cascade_min_confidence, "mid_share": mid_share,
                                   "retrain_min_new_labels": retrain_min_new_labels}.items()
                 if v is not None}
    if overrides:  # the learned router / batch calibration / cascade and shadow shares
        settings.router = RouterSettings.model_validate({**settings.router.model_dump(), **overrides})
    defaults = RequestDefaults(response_schema=response_schema, temperature=temperature, grader=grader)
    # hours the run may take: API tiers with batch_api = "auto" use their provider's batch API (-50%) if it fits
    tiers = settings.catalogue().with_run_deadline(deadline_h)
    if trim is not None:  # trim prompts before routing (sluice.stages.route.brevity); else the catalogue's `trim`
        tiers = tiers.model_copy(update={"trim": trim})
    logger = get_run_logger()
    assert settings.runs_dir is not None and settings.warehouse is not None
    dataset = validate_dataset_name(dataset) if dataset else dataset_name_for(dataset_path)

    # Which router, at which premium share? The one given, else the warehouse's promoted version; after a night
    # under its quality floor, this dataset's premium share goes up by a step (sluice.stages.route.loop).
    settings.router, routing, quality_loop = plan_routing(settings, dataset)

    # Which run is this? An unfinished run of the same file and configuration is resumed, not paid for again.
    input_sha = file_sha256(dataset_path) if Path(dataset_path).is_file() else ""
    config = fingerprint(catalogue_fingerprint(tiers), settings.model_dump_json(
        include={"default_max_tokens", "router", "max_false_hit"}),
                         repr(defaults))
    if run_id is None and resume and input_sha:
        run_id = find_unfinished_run(settings.runs_dir, input_sha, config)
        if run_id:
            logger.info("resuming unfinished run %s of %s", run_id, dataset_path)
    run_id = validate_dataset_name(run_id, "run id") if run_id else new_run_id()
    run_dir = settings.runs_dir / run_id
    manifest = read_manifest(run_dir) or {
        "run_id": run_id,
        "dataset": dataset,
        "source": str(dataset_path),
        "input_sha256": input_sha,
        "config": config,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "status": "running",
    }
    write_manifest(run_dir, manifest)
    progress.current().begin_run(run_id, run_dir)  # `sluice run` moves its log into <run_dir>/logs/ now
    run = {"run_id": run_id, "dataset": manifest["dataset"], "source": manifest["source"],
           "started_at": manifest["created_at"], "min_quality": min_quality,
           "tags": check_tags(tags or {}), "submission": submission}  # chargeback tags; a drop-box manifest
    logger.info("run %s: dataset %s from %s", run_id, run["dataset"], dataset_path)

    # Each stage writes its output atomically in the run folder; a resumed run starts after the last one written.
    # answers landed by earlier runs are reused (cache) while the tier's model is still the one that answered them
    cache = str(settings.warehouse) if use_cache and Path(settings.warehouse).exists() else None
    ctx = StageContext(catalogue=tiers, source=dataset_path, defaults=defaults, cache_warehouse=cache,
                       verify_clusters=ClusterProbe(tiers, str(settings.data_dir), settings.default_max_tokens, str(run_dir),
                                                    settings.router.budget_usd, str(settings.warehouse)),
                       cluster=_cluster(settings), shared_dir=str(run_dir))  # SLUICE_CLUSTER=dask: on Dask
    ingested = _done(run_dir / "ingested.parquet") or run_stage("ingest", run_dir, settings, ctx)
    ingested = carry_deferred(run_dir, ingested, str(settings.warehouse), dataset)  # deferred rows go first
    deduped = _done(run_dir / "deduped.parquet") or run_stage("dedup", run_dir, settings, ctx, ingested)
    routed = _done(run_dir / "routed.parquet") or run_stage("route", run_dir, settings, ctx, deduped)
    # the hard budget: first answers reserved; rows moved to a cheaper tier or deferred when the cap is near
    routed = admit_first_answers(run_dir, routed, tiers, settings)
    partitions = write_tier_partitions(pq.read_table(routed), run_dir / "routed", tiers.names)
    # Cheapest tier first, one at a time: a worker holds one engine, and the premium API goes last. Each tier
    # answers its routed rows and the rows escalated to it, retries its schema failures while its engine is warm,
    # then hands its least confident answers to the next tier. The engine is released after the last
    # self-hosted tier: the run is billed for the worker only while it needs it.
    start = min((i for i, t in enumerate(tiers.tiers) if t.name in partitions), default=len(tiers.tiers))
    todo = tiers.tiers[start:]
    run["billing"] = {"dedup": dedup_record(deduped)}  # the semantic rule, its delta, bound and labels
    try:
        with keep_stand_ins():
            _answer_tiers(todo, partitions, run_dir, run_id, tiers, settings, catalogue, dispatch,
                          dispatch_api_tiers, run["billing"])
            run["billing"].update(judge(run_dir, tiers, str(settings.data_dir)))  # free-text shadow pairs, if any
            run["billing"].update({"validation": v} if (v := validation_billing(run_dir)) else {})  # tier checks
    except ProviderBatchPending as wait:  # a tier with `batch_wait = false`: collect-batches resumes the run
        return waiting_on_provider(run_dir, wait)
    run["budget"] = budget_summary(run_dir)  # budget, spent, reserved and released (None: no budget)
    summary = land(run_dir, str(settings.warehouse), run, tiers.names, tiers.baseline_tier,
                   default_max_tokens=settings.default_max_tokens)
    record_provider_batches(run_dir, str(settings.warehouse), run_id)  # every batch the provider was paid for
    # The router learns from tonight's labels: a new version when enough have arrived, promoted only if it beats
    # the promoted one on held-out folds. A failure to retrain is recorded, never the run's failure.
    routing["retrain"] = retrain_router(str(settings.warehouse), settings.router, run_dir, run_id)
    routing = record_routing(str(settings.warehouse), run_dir, run_id, tiers.names[-1], routing, quality_loop)
    mark_landed(run_dir)
    return {**summary, "run_id": run_id, "dataset": run["dataset"], "warehouse": str(settings.warehouse),
            "routing": routing, "quality_loop": quality_loop,
            # replay tiers answered from recorded answers, not a model: the output always says so
            "replayed_tiers": [t.name for t in tiers.tiers if t.replayed]}


def _answer_tiers(todo, partitions, run_dir, run_id, tiers, settings, catalogue, dispatch, dispatch_api_tiers,
                  billing) -> None:
    last_self_hosted = max((i for i, t in enumerate(todo) if t.self_hosted), default=-1)
    for i, t in enumerate(todo):
        if t.reference_tier:  # compared with its reference first; refused, its rows go on to the next tier
            usable, partitions = validate_tier(t.name, partitions, run_dir, run_id, tiers, str(settings.data_dir),
                                               str(settings.warehouse), settings.default_max_tokens, dispatch,
                                               dispatch_api_tiers, settings.shard_rows, catalogue)
            if not usable:
                if i == last_self_hosted:
                    release_engines()
                continue
        sends = dispatch if dispatch and (t.self_hosted or dispatch_api_tiers) else None  # scale-out, every pass
        if t.name not in partitions:
            _follow_ups(t, run_dir, tiers, settings, billing, sends, catalogue)
            if i == last_self_hosted:
                release_engines()
            continue
        # a provider batch is its own checkpoint: one shard, so the tier is one batch, not one batch per shard
        shard_rows = settings.shard_rows if t.batch_api == "off" else max(settings.shard_rows, 1 << 30)
        if dispatch and (t.self_hosted or dispatch_api_tiers):
            billing[t.name] = dispatch_tier(
                t.name, partitions[t.name], run_dir, dispatch, shard_rows, catalogue, str(settings.data_dir),
                settings.default_max_tokens,
            )
        else:
            billing[t.name] = infer_tier(
                t.name, partitions[t.name], run_dir, tiers, str(settings.data_dir), settings.default_max_tokens,
                shard_rows=shard_rows,
            )
        settle(run_dir, t.name, billing[t.name])  # the tier's first answers, reserved when they were admitted
        _follow_ups(t, run_dir, tiers, settings, billing, sends, catalogue)
        if i == last_self_hosted:
            release_engines()


def _follow_ups(t, run_dir: Path, tiers, settings, billing: dict, dispatch: str | None = None,
                catalogue: str | None = None) -> None:
    """After tier `t`'s routed rows: answer the rows escalated to it and its shadow sample, retry its schema
    failures on it, then decide what goes on to the next tier (tasks.review). With `dispatch`, each pass goes to
    the pool's workers like the first."""
    args = (run_dir, tiers, str(settings.data_dir), settings.default_max_tokens, settings.shard_rows)
    where = {"dispatch": dispatch, "catalogue_path": catalogue}
    # with a budget, each pass sends only the rows it has room for (gate) and settles its bill after
    for kind, part in (("escalation", run_dir / "escalated" / f"tier={t.name}.parquet"),
                       ("shadow", run_dir / "shadow" / f"tier={t.name}.parquet")):
        key = f"{t.name}/{kind}"
        if part.is_file() and pq.read_metadata(part).num_rows and gate(run_dir, key, part, settings.default_max_tokens):
            billing[key] = settle(run_dir, key, answer_pass(t.name, part, *args, kind=kind, **where))
    retry = review(run_dir, t.name, tiers, settings.router, settings.default_max_tokens, "retry")
    if retry is not None and gate(run_dir, f"{t.name}/retry", retry, settings.default_max_tokens):
        billing[f"{t.name}/retry"] = settle(run_dir, f"{t.name}/retry", answer_pass(
            t.name, retry, *args, kind="retry", **where))
    review(run_dir, t.name, tiers, settings.router, settings.default_max_tokens, "escalate")


def _cluster(settings):
    """Where dedup's near partitions and route's partitions run: None (this process) unless `cluster.engine` is
    dask (SLUICE_CLUSTER, SLUICE_CLUSTER_ADDRESS; docs/cluster.md). prefect-dask is the cluster extra: imported
    only then."""
    if settings.cluster.engine == "local":
        return None
    from flows.cluster import DaskCluster

    return DaskCluster(settings.cluster)


def _done(path: Path) -> Path | None:
    """A stage's output, when an earlier attempt of this run already wrote it."""
    return path if path.is_file() else None


if __name__ == "__main__":
    print(sluice_run(sys.argv[1]))
