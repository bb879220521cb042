"""API tier: Anthropic's Messages API, in real time or through Message Batches.

Same shape as the OpenAI backend (openai_http.py): rows go one request each through `api_rows.answer_rows`
(bounded concurrency, RPM + TPM limits following the `anthropic-ratelimit-*` headers, retries honouring
`retry-after`), or, when the run's deadline leaves the whole 24 h window, through a Message Batch at batch prices
(at most 100,000 requests and 256 MB per batch; `batch_max_requests` / `batch_max_bytes` lower that). Usage:
`input_tokens` plus cache reads and writes is the row's input; cache reads are its cached input.

Structured outputs go through tool use (Anthropic has no JSON response format): one tool, `answer`, whose input
schema is the row's schema, and `tool_choice` forcing it; the tool call's input, as JSON text, is the answer.

`base_url` is the API root (default https://api.anthropic.com; Anthropic paths carry their own /v1).
"""

from __future__ import annotations

import asyncio
import logging
import json
import time
from typing import Sequence

from models.backends.api_rows import (Answer, AnswerShape, ApiBackend, answer_rows, answer_shape, completion_from,
                                      error_text, make_limiter, structured_text)
from models.backends.base import BatchResult, Completion, Request
from models.backends.provider_batch import is_transient_batch_failure, polling_deadline_s, split_by_limits
from models.backends.ratelimit import anthropic_limits
from models.catalogue import Tier

log = logging.getLogger(__name__)

MAX_REQUESTS_PER_BATCH = 100_000
MAX_BYTES_PER_BATCH = 256 * 1024 * 1024


def message_params(tier: Tier, req: Request) -> dict:
    """One Messages API request. The system prompt is the top-level `system` (with any system turn of the
    history appended to it); the earlier turns are user/assistant messages. A response schema becomes one tool
    whose `input_schema` is the schema (object-wrapped when it is not an object, see `api_rows.answer_shape`),
    and `tool_choice` forces the model to call it: the tool's input is the answer."""
    system = [req.system] if req.system else []
    messages: list[dict] = []
    for role, content in req.history:
        if role == "system":
            system.append(content)
        else:
            messages.append({"role": role, "content": content})
    messages.append({"role": "user", "content": req.prompt})
    params: dict = {"model": tier.model, "max_tokens": req.max_tokens,
                    "temperature": 0.0 if req.temperature is None else req.temperature, "messages": messages}
    if system:
        params["system"] = "\n\n".join(system)
    if req.stop:
        params["stop_sequences"] = list(req.stop)
    if shape := answer_shape(req):
        params["tools"] = [{"name": AnswerShape.NAME, "description": "Record the answer.",
                            "input_schema": shape.schema}]
        params["tool_choice"] = {"type": "tool", "name": AnswerShape.NAME}
    return params


def answer_from_message(msg: dict, req: Request | None = None) -> Answer:
    """Parse a Messages API answer (JSON): the answer tool's input as JSON text (unwrapped to what the request's
    schema describes) when the model called it, else the text blocks joined; input = uncached + cache reads +
    cache writes."""
    blocks = [b for b in msg.get("content") or [] if isinstance(b, dict)]
    texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
    tool = next((b for b in blocks if b.get("type") == "tool_use" and b.get("name") == AnswerShape.NAME), None)
    if tool is not None:
        text: str | None = json.dumps(tool.get("input"), ensure_ascii=False)
    else:
        text = "".join(texts) if texts else None
    usage = msg.get("usage") or None
    cached = (usage.get("cache_read_input_tokens") or 0) if usage else 0
    written = (usage.get("cache_creation_input_tokens") or 0) if usage else 0
    return Answer(
        text=structured_text(req, text),
        input_tokens=usage["input_tokens"] + cached + written if usage and "input_tokens" in usage else None,
        output_tokens=usage.get("output_tokens") if usage else None,
        finish_reason=msg.get("stop_reason"),
        cached_input_tokens=cached,
    )


def anthropic_client(tier: Tier, key: str, max_retries: int = 0):
    from anthropic import AsyncAnthropic

    return AsyncAnthropic(base_url=tier.base_url or "https://api.anthropic.com", api_key=key,
                          timeout=tier.request_timeout_s, max_retries=max_retries)


def _response_class():
    try:
        import httpx2 as http
    except ImportError:
        import httpx as http
    return http.Response


async def answer_in_real_time(tier: Tier, requests: Sequence[Request], key: str) -> list[Completion]:
    limiter = make_limiter(tier)
    async with anthropic_client(tier, key) as client:

        async def send(req: Request) -> Answer:
            # the SDK's generic `post`: its auth, errors and timeouts, the headers with the body (see openai_http)
            resp = await client.post("/v1/messages", body=message_params(tier, req), cast_to=_response_class())
            ans = answer_from_message(resp.json(), req)
            ans.limits = anthropic_limits(resp.headers)
            return ans

        return await answer_rows(requests, send, tier, limiter, secret=key)


async def answer_with_message_batches(tier: Tier, requests: Sequence[Request], key: str,
                                      deadline_s: float | None) -> BatchResult:
    by_id = {r.row_id: r for r in requests}
    t_end = time.monotonic() + polling_deadline_s(tier, deadline_s)
    sized = []
    for r in requests:
        item = {"custom_id": r.row_id, "params": message_params(tier, r)}
        sized.append((item, len(json.dumps(item).encode())))
    chunks, too_big = split_by_limits(sized, tier.batch_max_requests or MAX_REQUESTS_PER_BATCH,
                                      tier.batch_max_bytes or MAX_BYTES_PER_BATCH)
    out: dict[str, Completion] = {}
    retry: dict[str, str] = {i["custom_id"]: "larger than a batch may be" for i in too_big}  # type: ignore[index]
    submitted: list[tuple[str, list[str]]] = []
    async with anthropic_client(tier, key, max_retries=tier.max_retries) as client:
        for chunk in chunks:
            ids = [i["custom_id"] for i in chunk]  # type: ignore[index]
            try:
                b = await client.messages.batches.create(requests=chunk)  # type: ignore[arg-type]
                submitted.append((b.id, ids))
            except Exception as exc:
                retry.update({rid: f"batch not submitted: {error_text(exc, 1, key)}" for rid in ids})

        ended = await _wait_for(client, tier, [bid for bid, _ in submitted], t_end)
        for bid, ids in submitted:
            if bid in ended:
                try:
                    async for entry in await client.messages.batches.results(bid):
                        _read_result(entry.model_dump(), by_id, out, retry)
                except Exception as exc:
                    why = f"batch results not downloaded: {error_text(exc, 1, key)}"
                    retry.update({rid: why for rid in ids if rid not in out and rid not in retry})
            for rid in ids:
                if rid not in out and rid not in retry:
                    retry[rid] = f"not answered by batch {bid} ({'ended' if bid in ended else 'unfinished'})"

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


def _read_result(entry: dict, by_id: dict[str, Request], out: dict[str, Completion], retry: dict[str, str]) -> None:
    rid = entry.get("custom_id")
    if rid not in by_id or rid in out or rid in retry:  # the first result for a row wins
        return
    result = entry.get("result") or {}
    kind = result.get("type")
    if kind == "succeeded":
        out[rid] = completion_from(by_id[rid], answer_from_message(result.get("message") or {}, by_id[rid]),
                                   via_batch_api=True)
        return
    err = ((result.get("error") or {}).get("error") or {}) if kind == "errored" else {}
    err_type = err.get("type")
    status = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
              "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
              "overloaded_error": 529}.get(err_type or "")
    reason = f"batch request {kind}: {err_type or ''} {str(err.get('message', ''))[:300]}".strip()
    if kind in ("expired", "canceled") or is_transient_batch_failure(status, None):
        retry[rid] = reason
    else:
        out[rid] = Completion(rid, None, error=reason, via_batch_api=True)


async def _wait_for(client, tier: Tier, batch_ids: list[str], t_end: float) -> set[str]:
    """Poll until every batch has ended or the deadline passes; cancel the rest and let them settle briefly
    (a cancelled batch ends with its finished answers)."""
    ended: set[str] = set()

    async def poll() -> None:
        for bid in batch_ids:
            if bid not in ended:
                try:
                    if (await client.messages.batches.retrieve(bid)).processing_status == "ended":
                        ended.add(bid)
                except Exception:  # a failed poll is retried at the next interval
                    pass

    while True:
        await poll()
        now = time.monotonic()
        if len(ended) == len(batch_ids) or now >= t_end:
            break
        await asyncio.sleep(min(tier.batch_poll_interval_s, t_end - now))
    for bid in batch_ids:
        if bid not in ended:
            try:
                await client.messages.batches.cancel(bid)
            except Exception:
                pass
    for _ in range(3):
        if len(ended) == len(batch_ids):
            break
        await asyncio.sleep(tier.batch_poll_interval_s)
        await poll()
    return ended


class AnthropicBackend(ApiBackend):
    async def _batch(self, requests: Sequence[Request], key: str) -> BatchResult:
        return await answer_with_message_batches(self.tier, requests, key, self.deadline_s)

    async def _real_time(self, requests: Sequence[Request], key: str) -> list[Completion]:
        return await answer_in_real_time(self.tier, requests, key)
