"""Infer: answer one tier's partition on its backend and price every row.

Cost per row:
    - API tiers: the row's returned token usage x the tier's prices: list prices, the cached-input price for
      prompt-cache reads, batch prices for rows answered through a provider batch API (the difference to list
      price is the row's `batch_discount_usd`, a saving of its own). A row whose response carried no usage is
      priced from the backend's token estimate and flagged `usage_estimated`.
    - self-hosted tiers: the worker's billed time (engine start + generation) x its $/hour, apportioned to rows
      in proportion to their tokens (input + output). The rows of a batch therefore add up exactly to the bill.
    - requests a kill cut off (sent, never checkpointed) are attempts too, `interrupted`, with their usage, or
      its estimate when no answer came back (interrupted.py); the shard's billing includes them.
Baseline per row: what the same tokens would have cost on the catalogue's baseline (premium) tier. Output tokens
of rows answered elsewhere stand in for the premium answer's length (an estimate; the shadow sample measures it).
A trimmed prompt (`trim`) is priced untrimmed in the baseline; the attempt's `trim_saving_usd` is what the tokens
trimming took off would have cost on it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from models.backends import Backend, BatchResult, ProviderBatchPending, Request
from models.catalogue import Catalogue, Tier
from models.pricing import cost_usd, worker_price
from sluice.contracts.answers import validate_answer
from sluice.contracts.columns import ANSWER_SCHEMA, DEFAULT_MAX_TOKENS
from sluice.contracts.shapes import history_turns, stop_strings
from sluice.runs import write_parquet
from sluice.stages.infer.interrupted import (
    forget_tries,
    interrupted_billing,
    land_interrupted_tries,
    next_try,
    sent_log_path,
)

log = logging.getLogger(__name__)

def requests_from(partition: pa.Table, default_max_tokens: int) -> list[Request]:
    shape = [c for c in ("history", "temperature", "stop", "response_schema") if c in partition.column_names]
    return [
        Request(
            row_id=r["row_id"],
            prompt=r["prompt"],
            system=r["system"],
            max_tokens=r["max_tokens"] or default_max_tokens,
            history=history_turns(r.get("history")),
            temperature=r.get("temperature"),
            stop=stop_strings(r.get("stop")),
            response_schema=r.get("response_schema"),
        )
        for r in partition.select(["row_id", "prompt", "system", "max_tokens", *shape]).to_pylist()
    ]


def row_costs(result: BatchResult, tier: Tier, catalogue: Catalogue) -> list[float]:
    comps = result.completions
    if not tier.self_hosted:
        return [
            tier.token_cost_usd(c.input_tokens, c.output_tokens, c.cached_input_tokens, batch=c.via_batch_api)
            if c.ok else 0.0
            for c in comps
        ]
    worker = worker_price(tier.name, catalogue.worker_usd_per_hour(tier))
    bill = cost_usd(worker, seconds=result.billed_seconds or 0.0)
    weights = [c.input_tokens + c.output_tokens for c in comps]
    total = sum(weights)
    if total == 0:
        return [bill / len(comps)] * len(comps) if comps else []
    return [bill * w / total for w in weights]


def answer_partition(
    partition: pa.Table, tier: Tier, catalogue: Catalogue, backend: Backend, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> tuple[pa.Table, dict[str, float]]:
    """Run one tier's rows through its backend; returns the answers table and the batch's billing facts."""
    requests = requests_from(partition, default_max_tokens)
    result = backend.complete(requests)
    costs = row_costs(result, tier, catalogue)
    base = catalogue.baseline_tier
    rows = []
    asked = {r.row_id: r for r in requests}
    trimmed = trimmed_tokens(partition)
    discounts = []
    for c, cost in zip(result.completions, costs, strict=True):
        req = asked[c.row_id]
        saved = trimmed.get(c.row_id, 0)
        # a provider batch's discount is its own saving: what the row would have cost at list price, less its cost
        discounts.append(tier.token_cost_usd(c.input_tokens, c.output_tokens, c.cached_input_tokens) - cost
                         if c.ok and c.via_batch_api else 0.0)
        status, error, parsed, valid = ("ok" if c.ok else "failed"), c.error, None, None
        if req.response_schema and c.ok:
            parsed, why = validate_answer(c.text, req.response_schema)
            valid = why is None
            if not valid:
                status, error = "invalid", why
        rows.append(
            {
                "row_id": c.row_id,
                "tier": tier.name,
                "model": tier.model,
                "response": c.text,
                "status": status,
                "error": error,
                "input_tokens": c.input_tokens,
                "output_tokens": c.output_tokens,
                "latency_ms": c.latency_ms,
                "finish_reason": c.finish_reason,
                "cost_usd": cost,
                "batch_discount_usd": discounts[-1],
                "trim_saving_usd": trim_saving(c, cost, saved, tier),
                # the baseline prices the request as it came, before trimming
                "baseline_cost_usd": base.token_cost_usd(c.input_tokens + saved, c.output_tokens) if c.ok else 0.0,
                "price_basis": "worker" if tier.self_hosted else "batch" if c.via_batch_api else "list",
                "cached_input_tokens": c.cached_input_tokens,
                "usage_estimated": c.usage_estimated,
                "mean_logprob": c.mean_logprob,
                "parsed": parsed,
                "schema_valid": valid,
            }
        )
    billing = {
        "rows": float(len(rows)),
        "billed_seconds": float(result.billed_seconds or 0.0),
        "cost_usd": float(sum(costs)),
        "batch_discount_usd": float(sum(discounts)),
        "rows_usage_estimated": float(sum(1 for c in result.completions if c.usage_estimated)),
        **{k: float(v) for k, v in result.details.items() if isinstance(v, (int, float))},
    }
    return pa.Table.from_pylist(rows, schema=ANSWER_SCHEMA), billing


def trimmed_tokens(partition: pa.Table) -> dict[str, int]:
    """Input tokens trimming took off each row's prompt (`trim`, sluice.stages.route.brevity); {} untrimmed."""
    if "trim_tokens_saved" not in partition.column_names:
        return {}
    return {r: int(n or 0) for r, n in zip(partition["row_id"].to_pylist(), partition["trim_tokens_saved"].to_pylist())}


def trim_saving(c, cost: float, saved: int, tier: Tier) -> float:
    """What the trimmed tokens would have cost on this attempt: at the tier's input price (its batch price in a
    provider batch); a self-hosted tier at the rate its worker's time was apportioned to this row (cost per token,
    from the shard's measured throughput). Nothing for an attempt that was not billed."""
    if not saved or cost <= 0:
        return 0.0
    if tier.self_hosted:
        used = c.input_tokens + c.output_tokens
        return cost * saved / used if used else 0.0
    return tier.token_cost_usd(saved, 0, batch=c.via_batch_api)


def shard_count(partition_path: Path, shard_rows: int) -> int:
    return -(-pq.read_metadata(partition_path).num_rows // shard_rows)


def answer_shard(
    partition_path: Path,
    shard: int,
    answers_dir: Path,
    tier: Tier,
    catalogue: Catalogue,
    backend: Backend,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    shard_rows: int = 256,
) -> dict[str, float]:
    """Answer shard `shard` (rows shard*shard_rows ...) of a tier's partition, unless its answers are on disk.

    The shard's answers and billing are written atomically (`shard-NNNNN.parquet` + `.billing.json`) the moment
    it finishes, so a run killed anywhere resumes with only unfinished shards to redo, and every landed row is
    charged once. Any process that sees the run folder can answer any shard: that is how workers on several
    machines share one tier (flows/infer_shard.py).
    """
    rows = pq.read_table(partition_path).slice(shard * shard_rows, shard_rows)
    tier_dir = answers_dir / f"tier={tier.name}"
    tier_dir.mkdir(parents=True, exist_ok=True)
    out = tier_dir / f"shard-{shard:05d}.parquet"
    bill_path = out.with_suffix(".billing.json")
    if out.exists() and bill_path.exists():
        done = pq.read_table(out, columns=["row_id"])["row_id"].to_pylist()
        if done != rows["row_id"].to_pylist():
            raise RuntimeError(f"{out}: answers on disk do not match this shard's rows; the run folder was "
                               "changed underneath the run (start a new run id)")
        log.info("tier %s shard %d: already answered, skipped (resume)", tier.name, shard)
        forget_tries(tier_dir, shard)
        return json.loads(bill_path.read_text())
    # an API tier's provider batches are journaled beside the shard the moment the provider accepts them: answering
    # the shard again (a kill, a run that waited on the provider) polls them instead of paying for them twice
    journal_to = getattr(backend, "journal_to", None)
    if journal_to is not None:
        journal_to(tier_dir / f"shard-{shard:05d}.batches.jsonl")
    # its real-time requests are logged as they go: what an earlier try sent and never saved lands as interrupted
    # attempts first (interrupted.py), the provider billed them
    land_interrupted_tries(tier_dir, shard, tier, trimmed_tokens(rows))
    log_sends_to = getattr(backend, "log_sends_to", None)
    if log_sends_to is not None:
        log_sends_to(sent_log_path(tier_dir, shard, next_try(tier_dir, shard)))
    try:
        answers, billing = answer_partition(rows, tier, catalogue, backend, default_max_tokens)
    finally:
        if journal_to is not None:
            journal_to(None)
        if log_sends_to is not None:
            log_sends_to(None)
    if gone := interrupted_billing(tier_dir, shard):  # re-sent requests are in the bill, once each
        billing.update(gone, cost_usd=billing["cost_usd"] + gone["interrupted_cost_usd"])
    # which process answered (and, under a Prefect process worker, which worker: the parent)
    billing["worker_pid"], billing["worker_ppid"] = float(os.getpid()), float(os.getppid())
    tmp_bill = bill_path.with_suffix(".json.tmp")
    tmp_bill.write_text(json.dumps(billing))
    # billing first, answers last: the answers file is the commit marker of the shard
    tmp_bill.replace(bill_path)
    write_parquet(answers, out)
    forget_tries(tier_dir, shard)
    return billing


def shard_answered(tier_dir: Path, shard: int) -> bool:
    out = tier_dir / f"shard-{shard:05d}.parquet"
    return out.exists() and out.with_suffix(".billing.json").exists()


def claim_shard(tier_dir: Path, shard: int) -> bool:
    """Take an unanswered shard for this process; False when it is answered or another process has taken it.

    Scale-out (flows/infer_shard.py): a worker whose engine is warm goes on to shards no run has started, and the
    run dispatched for such a shard finds it taken and skips it. The claim is an exclusive create of
    `shard-NNNNN.claim` in the shared run folder: one process wins. The driver clears the claims of unanswered
    shards before it dispatches (`clear_claims`), so a worker that died holding one does not block a rerun."""
    if shard_answered(tier_dir, shard):
        return False
    tier_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(tier_dir / f"shard-{shard:05d}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"pid": os.getpid(), "ppid": os.getppid()}))
    return True


def clear_claims(tier_dir: Path) -> int:
    """Forget the claims of unanswered shards (before a dispatch: no shard run is in flight); returns how many."""
    stale = [c for c in tier_dir.glob("shard-*.claim")
             if not shard_answered(tier_dir, int(c.name.split(".")[0].removeprefix("shard-")))]
    for c in stale:
        c.unlink(missing_ok=True)
    return len(stale)


def tier_billing(answers_dir: Path, tier: str) -> dict[str, float]:
    """A tier's billing: the sum over its shards' billing files (whichever worker answered them)."""
    files = sorted((answers_dir / f"tier={tier}").glob("shard-*.billing.json"))
    return sum_billings(json.loads(f.read_text()) for f in files)


def sum_billings(bills: Iterable[dict]) -> dict[str, float]:
    """Shards' billings added up (the worker's process ids left out); `shards` counts them."""
    totals: dict[str, float] = {"shards": 0.0}
    for bill in bills:
        totals["shards"] += 1
        for key, value in bill.items():
            if key not in ("worker_pid", "worker_ppid"):
                totals[key] = totals.get(key, 0.0) + float(value)
    return totals


def infer_tier_shards(
    partition_path: Path,
    answers_dir: Path,
    tier: Tier,
    catalogue: Catalogue,
    backend: Backend,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    shard_rows: int = 256,
    on_shard: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """Answer a tier's partition shard by shard in this process (see `answer_shard`); returns its billing.
    `on_shard(rows, tokens, cost_usd)` is called after each shard (answered now or found on disk): progress.

    The shard size bounds the work lost to a crash: large enough to keep vLLM's continuous batching full
    (hundreds of rows), small enough to checkpoint often. A tier that does not wait for its provider batches
    (`batch_wait = false`) submits every shard's, then raises `ProviderBatchPending` for them all.
    """
    waiting: list[ProviderBatchPending] = []
    for k in range(shard_count(partition_path, shard_rows)):
        try:
            billing = answer_shard(partition_path, k, answers_dir, tier, catalogue, backend, default_max_tokens,
                                   shard_rows)
        except ProviderBatchPending as wait:  # submitted and journaled: submit the other shards before waiting
            waiting.append(wait)
            continue
        if on_shard is not None:
            used = pq.read_table(answers_dir / f"tier={tier.name}" / f"shard-{k:05d}.parquet",
                                 columns=["input_tokens", "output_tokens"])
            tokens = sum(sum(v or 0 for v in used[c].to_pylist()) for c in used.column_names)
            on_shard(int(billing.get("rows", used.num_rows)), tokens, float(billing.get("cost_usd", 0.0)))
    if waiting:
        raise ProviderBatchPending.of(waiting)
    return tier_billing(answers_dir, tier.name)
