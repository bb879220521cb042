"""OpenAI Batch API: upload the rows as JSONL files, one batch per file, poll, download the answers.

    POST /v1/files (purpose "batch") -> POST /v1/batches (endpoint /v1/chat/completions, window 24h)
    -> GET /v1/batches/{id} until completed | failed | expired | cancelled
    -> GET /v1/files/{output_file_id}/content and /v1/files/{error_file_id}/content (JSONL keyed by custom_id)

A file holds at most 50,000 requests and 200 MB (OpenAI's limits; `batch_max_requests` / `batch_max_bytes` on the
tier lower them, which is how a test forces a split). The row id is the `custom_id`. Expired and cancelled
batches still return what they finished; the rest of their rows, and rows that failed for a transient reason, are
answered in real time (see provider_batch.py). Batch management calls use the SDK's own retries: they are few and
not rate-critical, unlike the per-row calls.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Sequence

from models.backends import BatchResult, Completion, Request
from models.backends.api_rows import completion_from, error_text
from models.backends.openai_http import answer_from_chat, answer_in_real_time, chat_body, openai_client
from models.backends.provider_batch import is_transient_batch_failure, polling_deadline_s, split_by_limits
from models.catalogue import Tier

MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 200 * 1024 * 1024
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def batch_line(tier: Tier, req: Request) -> bytes:
    line = {"custom_id": req.row_id, "method": "POST", "url": "/v1/chat/completions", "body": chat_body(tier, req)}
    return (json.dumps(line, ensure_ascii=False) + "\n").encode()


def read_result_lines(text: str, by_id: dict[str, Request], out: dict[str, Completion],
                      retry: dict[str, str]) -> None:
    """Sort a downloaded output or error file's lines into answered/failed rows (`out`) and rows to send again in
    real time (`retry`, with why). The first line for a custom_id wins: no row is answered twice."""
    for raw in text.splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        row_id = line.get("custom_id")
        if row_id not in by_id or row_id in out or row_id in retry:
            continue
        response = line.get("response") or {}
        status = response.get("status_code")
        body = response.get("body") or {}
        if status == 200:
            out[row_id] = completion_from(by_id[row_id], answer_from_chat(body, by_id[row_id]), via_batch_api=True)
            continue
        err = line.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
        code, message = err.get("code") or err.get("type"), str(err.get("message", ""))[:300]
        reason = f"batch request failed{f' (HTTP {status})' if status else ''}: {code or ''} {message}".strip()
        if is_transient_batch_failure(status, code):
            retry[row_id] = reason
        else:
            out[row_id] = Completion(row_id, None, error=reason, via_batch_api=True)


async def answer_with_batch_api(tier: Tier, requests: Sequence[Request], key: str,
                                deadline_s: float | None) -> BatchResult:
    by_id = {r.row_id: r for r in requests}
    t_end = time.monotonic() + polling_deadline_s(tier, deadline_s)
    chunks, too_big = split_by_limits(
        (((r.row_id, line), len(line)) for r in requests for line in [batch_line(tier, r)]),
        tier.batch_max_requests or MAX_REQUESTS_PER_FILE,
        tier.batch_max_bytes or MAX_BYTES_PER_FILE,
    )
    out: dict[str, Completion] = {}
    retry: dict[str, str] = {rid: "larger than a batch file may be" for rid, _ in too_big}  # type: ignore[misc]
    submitted: list[tuple[str, list[str]]] = []
    async with openai_client(tier, key, max_retries=tier.max_retries) as client:
        for i, chunk in enumerate(chunks):
            ids = [rid for rid, _ in chunk]  # type: ignore[misc]
            try:
                data = b"".join(line for _, line in chunk)  # type: ignore[misc]
                f = await client.files.create(file=(f"sluice-{tier.name}-{i}.jsonl", data), purpose="batch")
                b = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                completion_window="24h", metadata={"sluice_tier": tier.name})
                submitted.append((b.id, ids))
            except Exception as exc:  # could not submit this file: its rows go in real time
                retry.update({rid: f"batch not submitted: {error_text(exc, 1, key)}" for rid in ids})

        final = await _wait_for(client, tier, [bid for bid, _ in submitted], t_end)
        for bid, ids in submitted:
            b = final.get(bid)
            for file_id in (getattr(b, "output_file_id", None), getattr(b, "error_file_id", None)):
                if file_id:
                    try:
                        content = await client.files.content(file_id)
                        read_result_lines(content.text, by_id, out, retry)
                    except Exception as exc:
                        why = f"batch results not downloaded: {error_text(exc, 1, key)}"
                        retry.update({rid: why for rid in ids if rid not in out and rid not in retry})
            status = getattr(b, "status", "unfinished")
            for rid in ids:
                if rid not in out and rid not in retry:
                    retry[rid] = f"not answered by batch {bid} ({status})"

    leftovers = [by_id[rid] for rid in by_id if rid in retry and rid not in out]
    if leftovers:
        for c in await answer_in_real_time(tier, leftovers, key):
            if c.error:
                c.error = f"{c.error}; batch API first: {retry[c.row_id]}"
            out[c.row_id] = c
    completions = [out[r.row_id] for r in requests]
    return BatchResult(completions, details={
        "batch_api_batches": len(submitted),
        "batch_api_rows": sum(1 for c in completions if c.via_batch_api and c.ok),
        "batch_api_realtime_fallback_rows": len(leftovers),
    })


async def _wait_for(client, tier: Tier, batch_ids: list[str], t_end: float) -> dict[str, object]:
    """Poll until every batch is terminal or the deadline passes; then cancel the rest (their finished answers
    still come back) and give them a few more polls to settle."""
    final: dict[str, object] = {}
    pending = list(batch_ids)
    while pending:
        for bid in list(pending):
            try:
                b = await client.batches.retrieve(bid)
            except Exception:  # a failed poll is retried at the next interval, until the deadline
                continue
            if b.status in TERMINAL:
                final[bid] = b
                pending.remove(bid)
        if not pending:
            break
        now = time.monotonic()
        if now >= t_end:
            break
        await asyncio.sleep(min(tier.batch_poll_interval_s, t_end - now))
    for bid in pending:
        try:
            await client.batches.cancel(bid)
        except Exception:
            pass
    for _ in range(3):
        if not pending:
            break
        await asyncio.sleep(tier.batch_poll_interval_s)
        for bid in list(pending):
            try:
                b = await client.batches.retrieve(bid)
            except Exception:
                continue
            if b.status in TERMINAL:
                final[bid] = b
                pending.remove(bid)
    return final
