"""The one loop both provider batch APIs run (OpenAI Batch, Anthropic Message Batches; `provider_batch.py` says
when Sluice uses them): split the rows into batches within the provider's limits, submit each, poll until every
batch has ended or the deadline passes, cancel what is left (a cancelled batch still returns what it finished),
read the results, and answer in real time every row a batch did not answer for a transient reason.

A provider is a `ProviderBatches`: how to size, submit, poll, cancel and read one batch. The loop keeps every
row accounted for: answered (at batch prices), failed for good with the provider's reason, or sent again in real
time with why the batch did not answer it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol, Sequence

from models.backends.api_rows import error_text
from models.backends.base import BatchResult, Completion, Request
from models.backends.provider_batch import polling_deadline_s, split_by_limits
from models.catalogue import Tier


class ProviderBatches(Protocol):
    tier: Tier
    max_requests_per_batch: int
    max_bytes_per_batch: int
    too_big: str  # why a row larger than a batch may be is answered in real time

    def batch_client(self, key: str): ...  # an async context manager: the provider's SDK client

    def batch_items(self, requests: Sequence[Request]) -> list[tuple[object, int]]: ...  # (item, bytes)

    def item_id(self, item: object) -> str: ...

    async def submit(self, client, index: int, chunk: list[object]) -> str: ...  # the batch id

    async def ended(self, client, batch_id: str) -> object | None: ...  # the batch once it has ended, else None

    async def cancel(self, client, batch_id: str) -> None: ...

    async def collect(self, client, batch: object, ids: list[str], by_id: dict[str, Request],
                      out: dict[str, Completion], retry: dict[str, str], key: str) -> None: ...

    def batch_status(self, batch: object | None) -> str: ...

    async def real_time(self, requests: Sequence[Request], key: str) -> list[Completion]: ...


async def answer_in_batches(api: ProviderBatches, requests: Sequence[Request], key: str,
                            deadline_s: float | None) -> BatchResult:
    tier = api.tier
    by_id = {r.row_id: r for r in requests}
    t_end = time.monotonic() + polling_deadline_s(tier, deadline_s)
    chunks, too_big = split_by_limits(api.batch_items(requests), tier.batch_max_requests or api.max_requests_per_batch,
                                      tier.batch_max_bytes or api.max_bytes_per_batch)
    out: dict[str, Completion] = {}
    retry: dict[str, str] = {api.item_id(i): api.too_big for i in too_big}
    submitted: list[tuple[str, list[str]]] = []
    async with api.batch_client(key) as client:
        for i, chunk in enumerate(chunks):
            ids = [api.item_id(item) for item in chunk]
            try:
                submitted.append((await api.submit(client, i, chunk), ids))
            except Exception as exc:  # could not submit this batch: its rows go in real time
                retry.update({rid: f"batch not submitted: {error_text(exc, 1, key)}" for rid in ids})

        final = await _wait_for(api, client, [bid for bid, _ in submitted], t_end)
        for bid, ids in submitted:
            if bid in final:
                try:
                    await api.collect(client, final[bid], ids, by_id, out, retry, key)
                except Exception as exc:
                    why = f"batch results not downloaded: {error_text(exc, 1, key)}"
                    retry.update({rid: why for rid in ids if rid not in out and rid not in retry})
            status = api.batch_status(final.get(bid))
            for rid in ids:
                if rid not in out and rid not in retry:
                    retry[rid] = f"not answered by batch {bid} ({status})"

    leftovers = [by_id[rid] for rid in by_id if rid in retry and rid not in out]
    if leftovers:
        for c in await api.real_time(leftovers, key):
            if c.error:
                c.error = f"{c.error}; batch API first: {retry[c.row_id]}"
            out[c.row_id] = c
    completions = [out[r.row_id] for r in requests]
    return BatchResult(completions, details={
        "batch_api_batches": len(submitted),
        "batch_api_rows": sum(1 for c in completions if c.via_batch_api and c.ok),
        "batch_api_realtime_fallback_rows": len(leftovers),
    })


async def _wait_for(api: ProviderBatches, client, batch_ids: list[str], t_end: float) -> dict[str, object]:
    """Poll until every batch has ended or the deadline passes; then cancel the rest (their finished answers
    still come back) and give them a few more polls to settle."""
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

    while True:
        await poll()
        now = time.monotonic()
        if len(final) == len(batch_ids) or now >= t_end:
            break
        await asyncio.sleep(min(interval, t_end - now))
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
