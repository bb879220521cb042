"""The one loop both provider batch APIs run (OpenAI Batch, Anthropic Message Batches; `provider_batch.py` says
when Sluice uses them): split the rows into batches within the provider's limits, submit each and journal it the
moment the provider accepts it, poll until every batch has ended or the deadline passes, cancel what is left (a
cancelled batch still returns what it finished), read the results, and send the rows a batch did not answer for
a transient reason again: in a new batch (journaled like the first) while the deadline leaves the provider's
whole window, else in real time at list prices.

A provider is a `ProviderBatches`: how to size, submit, poll, cancel and read one batch. The loop keeps every
row accounted for: answered (at batch prices), failed for good with the provider's reason, or sent again with why
the batch did not answer it.

With a journal (`batch_journal.py`), a shard answered again after a kill adopts the batches journaled for exactly
its requests: it polls them and never submits their rows twice. With `wait = False` (the tier's `batch_wait`),
the loop returns as soon as its batches are submitted, or polled once, and are still running, by raising
`ProviderBatchPending`: the run waits on the provider, and a later poll (the `collect-batches` flow) resumes it.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Protocol, Sequence

from models.backends.api_rows import api_key, error_text
from models.backends.base import BatchResult, Completion, Request
from models.backends.batch_journal import BatchJournal, ProviderBatchPending, request_sha256
from models.backends.provider_batch import polling_deadline_s, split_by_limits
from models.catalogue import Tier

# batches a row may go through: its first and up to two more for what a batch left unanswered (then real time)
MAX_ROUNDS = 3


class ProviderBatches(Protocol):
    tier: Tier
    max_requests_per_batch: int
    max_bytes_per_batch: int
    too_big: str  # why a row larger than a batch may be is answered in real time
    provider: str  # "openai" or "anthropic": journaled with each batch

    def batch_client(self, key: str): ...  # an async context manager: the provider's SDK client

    def batch_items(self, requests: Sequence[Request]) -> list[tuple[object, int]]: ...  # (item, bytes)

    def item_id(self, item: object) -> str: ...

    def item_bytes(self, item: object) -> bytes: ...  # the request as submitted: what its journaled hash is of

    async def submit(self, client, index: int, chunk: list[object]) -> str: ...  # the batch id

    async def ended(self, client, batch_id: str) -> object | None: ...  # the batch once it has ended, else None

    async def cancel(self, client, batch_id: str) -> None: ...

    async def collect(self, client, batch: object, ids: list[str], by_id: dict[str, Request],
                      out: dict[str, Completion], retry: dict[str, str], key: str) -> None: ...

    def batch_status(self, batch: object | None) -> str: ...

    async def real_time(self, requests: Sequence[Request], key: str) -> list[Completion]: ...


async def answer_in_batches(api: ProviderBatches, requests: Sequence[Request], key: str, deadline_s: float | None,
                            journal: BatchJournal | None = None, wait: bool = True) -> BatchResult:
    tier = api.tier
    by_id = {r.row_id: r for r in requests}
    items = api.batch_items(requests)
    hashes = {api.item_id(item): request_sha256(api.item_bytes(item)) for item, _ in items}
    earlier = journal.batches() if journal else []
    deadline_at = earlier[0].deadline_at if earlier else time.time() + polling_deadline_s(tier, deadline_s)
    # a shard answered again (after a kill, or on a resumed run): its journaled batches are polled, not re-sent;
    # a row is adopted only if this run would send exactly the request that was submitted
    live = [(b.batch_id, [rid for rid in b.rows if rid in hashes and b.hashes[rid] == hashes[rid]])
            for b in earlier]
    live = [(bid, ids) for bid, ids in live if ids]
    adopted = len(live)
    collected_before = {b.batch_id for b in earlier if b.collected_at}
    covered = {rid for _, ids in live for rid in ids}
    chunks, too_big = _chunks(api, [(i, s) for i, s in items if api.item_id(i) not in covered])
    round_ = max((b.round for b in earlier), default=-1) + 1
    out: dict[str, Completion] = {}
    retry: dict[str, str] = {api.item_id(i): api.too_big for i in too_big}
    submitted = resubmitted = 0
    resubmitting = False
    async with api.batch_client(key) as client:
        while True:
            for chunk in chunks:
                ids = [api.item_id(item) for item in chunk]
                try:
                    bid = await api.submit(client, submitted, chunk)
                except Exception as exc:  # could not submit this batch: its rows go in real time
                    retry.update({rid: f"batch not submitted: {error_text(exc, 1, key)}" for rid in ids})
                    continue
                if journal is not None:  # paid for from now on: on disk before anything else happens
                    journal.submitted(bid, tier.name, api.provider, round_, ids, [hashes[r] for r in ids],
                                      deadline_at)
                live.append((bid, ids))
                submitted += 1
                resubmitted += len(ids) if resubmitting else 0
            final = await _wait_for(api, client, [bid for bid, _ in live], deadline_at, journal, wait)
            if not wait and len(final) < len(live):
                waiting = [bid for bid, _ in live if bid not in final]
                raise ProviderBatchPending(tier.name, waiting, sum(len(ids) for _, ids in live),
                                           [journal.path] if journal else [])
            missing = await _collect(api, client, live, final, by_id, out, retry, key, journal, collected_before)
            live = []
            round_ += 1
            time_left = deadline_at - time.time()
            if not missing or round_ >= MAX_ROUNDS or time_left < tier.batch_window_h * 3600:
                break  # the deadline is near (or rows have had their rounds): what is missing goes in real time
            chunks, _ = _chunks(api, [(i, s) for i, s in items if api.item_id(i) in missing])
            resubmitting = True
            for rid in missing:
                retry.pop(rid, None)

    leftovers = [by_id[rid] for rid in by_id if rid in retry and rid not in out]
    if leftovers:
        for c in await api.real_time(leftovers, key):
            if c.error:
                c.error = f"{c.error}; batch API first: {retry[c.row_id]}"
            out[c.row_id] = c
    completions = [out[r.row_id] for r in requests]
    return BatchResult(completions, details={
        "batch_api_batches": submitted + adopted,
        "batch_api_batches_resumed": adopted,
        "batch_api_rows": sum(1 for c in completions if c.via_batch_api and c.ok),
        "batch_api_resubmitted_rows": resubmitted,
        "batch_api_realtime_fallback_rows": len(leftovers),
    })


def _chunks(api: ProviderBatches, sized: list[tuple[object, int]]) -> tuple[list[list[object]], list[object]]:
    tier = api.tier
    return split_by_limits(sized, tier.batch_max_requests or api.max_requests_per_batch,
                           tier.batch_max_bytes or api.max_bytes_per_batch)


async def _collect(api: ProviderBatches, client, live: list[tuple[str, list[str]]], final: dict[str, object],
                   by_id: dict[str, Request], out: dict[str, Completion], retry: dict[str, str], key: str,
                   journal: BatchJournal | None, collected_before: set[str]) -> set[str]:
    """Read every ended batch's results into `out`; rows a batch did not answer get their reason in `retry`
    (unless another batch answered them). Returns the rows still unanswered."""
    missing: set[str] = set()
    for bid, ids in live:
        mine = {rid: by_id[rid] for rid in ids}
        why: dict[str, str] = {}
        if bid in final:
            try:
                await api.collect(client, final[bid], ids, mine, out, why, key)
                if journal is not None and bid not in collected_before:
                    journal.collected(bid)
            except Exception as exc:
                reason = f"batch results not downloaded: {error_text(exc, 1, key)}"
                why.update({rid: reason for rid in ids if rid not in out and rid not in why})
        status = api.batch_status(final.get(bid))
        for rid in ids:
            if rid not in out:
                retry[rid] = why.get(rid) or f"not answered by batch {bid} ({status})"
                missing.add(rid)
    return {rid for rid in missing if rid not in out}


async def _wait_for(api: ProviderBatches, client, batch_ids: list[str], deadline_at: float,
                    journal: BatchJournal | None = None, wait: bool = True) -> dict[str, object]:
    """Poll until every batch has ended or the deadline passes; then cancel the rest (their finished answers
    still come back) and give them a few more polls to settle. Without `wait`, poll once and return what has
    ended, unless the deadline has passed."""
    final: dict[str, object] = {}
    interval = api.tier.batch_poll_interval_s

    async def poll() -> None:
        for bid in batch_ids:
            if bid not in final:
                try:
                    batch = await api.ended(client, bid)
                except Exception:  # a failed poll is retried at the next interval, until the deadline
                    continue
                if batch is not None:
                    final[bid] = batch
                    if journal is not None:
                        journal.ended(bid, api.batch_status(batch))

    while True:
        await poll()
        now = time.time()
        if len(final) == len(batch_ids) or now >= deadline_at or not wait:
            break
        await asyncio.sleep(min(interval, deadline_at - now))
    if len(final) == len(batch_ids) or time.time() < deadline_at:
        return final  # all ended, or (not waiting) still inside the deadline: nothing to cancel
    for bid in batch_ids:
        if bid not in final:
            try:
                await api.cancel(client, bid)
            except Exception:
                pass
    for _ in range(3):
        if len(final) == len(batch_ids):
            break
        await asyncio.sleep(interval)
        await poll()
    return final


def batches_running(api: ProviderBatches, path: Path) -> list[str]:
    """Poll the batches journaled at `path` that have not ended (ends are journaled); returns the ids still
    running (none: the shard can be answered now). Past the deadline nothing is waited for: answering the shard
    cancels what is left."""
    journal = BatchJournal(path)
    running = [b.batch_id for b in journal.batches() if b.status is None]
    if not running or time.time() >= (journal.deadline_at() or 0.0):
        return []

    async def poll() -> dict[str, object]:
        async with api.batch_client(api_key(api.tier)) as client:
            return await _wait_for(api, client, running, journal.deadline_at() or 0.0, journal, wait=False)

    final = asyncio.run(poll())
    return [bid for bid in running if bid not in final]
