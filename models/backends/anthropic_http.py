"""API tier: Anthropic's Messages API, in real time or through Message Batches.

Same shape as the OpenAI backend (openai_http.py): rows go one request each through `api_rows.answer_rows`
(bounded concurrency, RPM + TPM limits following the `anthropic-ratelimit-*` headers, retries honouring
`retry-after`), or, when the run's deadline leaves the whole 24 h window, through a Message Batch at batch prices
(at most 100,000 requests and 256 MB per batch; `batch_max_requests` / `batch_max_bytes` lower that), journaled
once accepted like OpenAI's (batch_loop.py, batch_journal.py). Usage:
`input_tokens` plus cache reads and writes is the row's input; cache reads are its cached input.

Structured outputs go through tool use (Anthropic has no JSON response format): one tool, `answer`, whose input
schema is the row's schema, and `tool_choice` forcing it; the tool call's input, as JSON text, is the answer.

`base_url` is the API root (default https://api.anthropic.com; Anthropic paths carry their own /v1).
"""

from __future__ import annotations

import json
import logging
from typing import Sequence

from models.backends.api_rows import (
    Answer,
    AnswerShape,
    ApiBackend,
    answer_shape,
    completion_from,
    httpx_response,
    structured_text,
)
from models.backends.base import BatchResult, Completion, Request
from models.backends.batch_loop import answer_in_batches
from models.backends.provider_batch import is_transient_batch_failure
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


class AnthropicBackend(ApiBackend):
    max_requests_per_batch = MAX_REQUESTS_PER_BATCH
    max_bytes_per_batch = MAX_BYTES_PER_BATCH
    provider = "anthropic"
    too_big = "larger than a batch may be"

    def client(self, key: str, max_retries: int = 0):
        return anthropic_client(self.tier, key, max_retries)

    async def send(self, client, req: Request) -> Answer:
        # the SDK's generic `post`: its auth, errors and timeouts, the headers with the body (see openai_http)
        resp = await client.post("/v1/messages", body=message_params(self.tier, req), cast_to=httpx_response())
        ans = answer_from_message(resp.json(), req)
        ans.limits = anthropic_limits(resp.headers)
        return ans

    # Message Batches, driven by batch_loop.answer_in_batches: a list of {custom_id, params} per batch

    async def _batch(self, requests: Sequence[Request], key: str) -> BatchResult:
        return await answer_in_batches(self, requests, key, self.deadline_s, self.journal, self.tier.batch_wait)

    def batch_items(self, requests: Sequence[Request]) -> list[tuple[object, int]]:
        items = [{"custom_id": r.row_id, "params": message_params(self.tier, r)} for r in requests]
        return [(item, len(json.dumps(item).encode())) for item in items]

    def item_id(self, item) -> str:
        return item["custom_id"]

    def item_bytes(self, item) -> bytes:
        return json.dumps(item, sort_keys=True).encode()

    async def submit(self, client, index: int, chunk: list) -> str:
        return (await client.messages.batches.create(requests=chunk)).id

    async def ended(self, client, batch_id: str):
        b = await client.messages.batches.retrieve(batch_id)
        return b if b.processing_status == "ended" else None

    async def cancel(self, client, batch_id: str) -> None:
        await client.messages.batches.cancel(batch_id)

    async def collect(self, client, batch, ids: list[str], by_id: dict[str, Request], out: dict[str, Completion],
                      retry: dict[str, str], key: str) -> None:
        async for entry in await client.messages.batches.results(batch.id):
            _read_result(entry.model_dump(), by_id, out, retry)

    def batch_status(self, batch) -> str:
        return "ended" if batch is not None else "unfinished"
