"""API tier: an OpenAI-compatible chat-completions endpoint (providers, vLLM servers, gateways).

Two ways to answer a partition, chosen per run:
    - real time (default): one chat completion per row through `api_rows.answer_rows`: bounded concurrency,
      client-side RPM + TPM limits that follow the server's `x-ratelimit-*` headers, retries with backoff that
      honour `Retry-After`. List prices.
    - the provider's Batch API (below) when the tier allows it (`batch_api = "always"`, or "auto" with a
      deadline that leaves the whole completion window): half the price, answers within 24 h. Rows the batch
      could not answer (expired, cancelled, transient errors) go through the real-time path.
A row that fails becomes a Completion with `error` set: one bad row never aborts the batch. Tokens come from the
returned `usage` (cached prompt tokens included); where there is none they are estimated and flagged.
A row with a response schema asks for a strict `json_schema` response format; its answer is the JSON text (or,
for a choice list, the label). Answers are not validated here: the infer stage does that, and retries.

The API key is read from the environment variable (or Prefect Secret block) the catalogue names, at call time,
and is never logged, landed or put in an error.

The Batch API: upload the rows as JSONL files, one batch per file, poll, download the answers.

    POST /v1/files (purpose "batch") -> POST /v1/batches (endpoint /v1/chat/completions, window 24h)
    -> GET /v1/batches/{id} until completed | failed | expired | cancelled
    -> GET /v1/files/{output_file_id}/content and /v1/files/{error_file_id}/content (JSONL keyed by custom_id)

A file holds at most 50,000 requests and 200 MB (OpenAI's limits; `batch_max_requests` / `batch_max_bytes` on the
tier lower them, which is how a test forces a split). The row id is the `custom_id`. Each batch is journaled in
the run folder once accepted (batch_journal.py), so a resumed run polls it instead of paying for it again. Expired
and cancelled batches still return what they finished; the rest of their rows, and rows that failed for a
transient reason, go in a new batch while the deadline allows, else in real time (see provider_batch.py). Batch
management calls use the SDK's own retries: they are few and not rate-critical, unlike the per-row calls.
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
    error_text,
    httpx_response,
    structured_text,
)
from models.backends.base import BatchResult, Completion, Request
from models.backends.batch_loop import answer_in_batches
from models.backends.provider_batch import is_transient_batch_failure
from models.backends.ratelimit import openai_limits
from models.catalogue import Tier

log = logging.getLogger(__name__)


def chat_body(tier: Tier, req: Request) -> dict:
    """One chat completion request. A response schema goes as a strict `json_schema` response format (OpenAI and
    vLLM's server both accept it), object-wrapped when it is not an object (see `api_rows.answer_shape`)."""
    body: dict = {"model": tier.model, "messages": req.messages(), "max_tokens": req.max_tokens,
                  "temperature": 0.0 if req.temperature is None else req.temperature}
    if req.stop:
        body["stop"] = list(req.stop)
    if tier.logprobs:  # each generated token's logprob: the cascade's confidence, exp(mean)
        body["logprobs"] = True
    if shape := answer_shape(req):
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": AnswerShape.NAME, "schema": shape.schema, "strict": strict_compatible(shape.schema)}}
    return body


def strict_compatible(schema: object) -> bool:
    """OpenAI's strict mode refuses (400) a schema in which some object does not list every property as required
    and forbid additional ones; such a schema is sent non-strict (the answer is validated afterwards anyway)."""
    if isinstance(schema, list):
        return all(strict_compatible(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False or set(schema.get("required") or []) != set(props):
            return False
    return all(strict_compatible(v) for k, v in schema.items() if k not in ("enum", "const", "required"))


def _field(o, k):
    """A field of an SDK object or of its JSON (a dict)."""
    return o.get(k) if isinstance(o, dict) else getattr(o, k, None)


def answer_from_chat(resp, req: Request | None = None) -> Answer:
    """Parse a chat completion (an SDK object or the JSON of a batch output line); with the request, a structured
    answer is unwrapped to what its schema describes."""
    choices = _field(resp, "choices") or []
    choice = choices[0] if choices else None
    message = _field(choice, "message") if choice else None
    usage = _field(resp, "usage")
    details = _field(usage, "prompt_tokens_details") if usage else None
    content_logprobs = _field(_field(choice, "logprobs"), "content") if choice and _field(choice, "logprobs") else None
    values = [_field(t, "logprob") for t in content_logprobs or []]
    values = [v for v in values if v is not None]
    return Answer(
        text=structured_text(req, _field(message, "content") if message else None),
        input_tokens=_field(usage, "prompt_tokens") if usage else None,
        output_tokens=_field(usage, "completion_tokens") if usage else None,
        finish_reason=_field(choice, "finish_reason") if choice else None,
        cached_input_tokens=(_field(details, "cached_tokens") or 0) if details else 0,
        mean_logprob=sum(values) / len(values) if values else None,
    )


def openai_client(tier: Tier, key: str, max_retries: int = 0):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=tier.base_url, api_key=key, timeout=tier.request_timeout_s, max_retries=max_retries)


# ---- the Batch API ------------------------------------------------------------------------------------------

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


class OpenAIBackend(ApiBackend):
    max_requests_per_batch = MAX_REQUESTS_PER_FILE
    max_bytes_per_batch = MAX_BYTES_PER_FILE
    provider = "openai"
    too_big = "larger than a batch file may be"

    def __init__(self, tier: Tier, data_dir: str = "data", deadline_s: float | None = None) -> None:
        super().__init__(tier, deadline_s)
        self.data_dir = data_dir

    def client(self, key: str, max_retries: int = 0):
        return openai_client(self.tier, key, max_retries)

    async def send(self, client, req: Request) -> Answer:
        # the SDK's generic `post` (its documented way to reach any endpoint) rather than `chat.completions.create`:
        # same auth, errors and timeouts, but it skips the typed-parameter transform, which cost ~15 ms of CPU per
        # request here, and hands back the headers with the body
        resp = await client.post("/chat/completions", body=chat_body(self.tier, req), cast_to=httpx_response())
        ans = answer_from_chat(resp.json(), req)
        ans.limits = openai_limits(resp.headers)
        return ans

    # the Batch API, driven by batch_loop.answer_in_batches: one JSONL file per batch

    async def _batch(self, requests: Sequence[Request], key: str) -> BatchResult:
        return await answer_in_batches(self, requests, key, self.deadline_s, self.journal, self.tier.batch_wait)

    def batch_items(self, requests: Sequence[Request]) -> list[tuple[object, int]]:
        return [((r.row_id, line), len(line)) for r in requests for line in [batch_line(self.tier, r)]]

    def item_id(self, item) -> str:
        return item[0]

    def item_bytes(self, item) -> bytes:
        return item[1]

    async def submit(self, client, index: int, chunk: list) -> str:
        data = b"".join(line for _, line in chunk)
        f = await client.files.create(file=(f"sluice-{self.tier.name}-{index}.jsonl", data), purpose="batch")
        b = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", metadata={"sluice_tier": self.tier.name})
        return b.id

    async def ended(self, client, batch_id: str):
        b = await client.batches.retrieve(batch_id)
        return b if b.status in TERMINAL else None

    async def cancel(self, client, batch_id: str) -> None:
        await client.batches.cancel(batch_id)

    async def collect(self, client, batch, ids: list[str], by_id: dict[str, Request], out: dict[str, Completion],
                      retry: dict[str, str], key: str) -> None:
        """The output file (answers) and the error file (failed requests), each read on its own: a file that
        cannot be downloaded sends only its rows back to real time."""
        for file_id in (getattr(batch, "output_file_id", None), getattr(batch, "error_file_id", None)):
            if file_id:
                try:
                    content = await client.files.content(file_id)
                    read_result_lines(content.text, by_id, out, retry)
                except Exception as exc:
                    why = f"batch results not downloaded: {error_text(exc, 1, key)}"
                    retry.update({rid: why for rid in ids if rid not in out and rid not in retry})

    def batch_status(self, batch) -> str:
        return getattr(batch, "status", "unfinished")

    def _serving(self):
        return self._stand_in() if self.tier.local_server else super()._serving()

    def _stand_in(self):
        from pathlib import Path
        from urllib.parse import urlparse

        from models.packaged import resolve_model
        from models.stand_in import openai_stand_in

        url = urlparse(self.tier.base_url or "")
        if url.hostname not in ("127.0.0.1", "localhost") or not url.port:
            raise ValueError(f"tier {self.tier.name!r}: local_server needs a loopback base_url with a port")
        return openai_stand_in(
            resolve_model(self.tier.local_server or "", self.data_dir),
            served_name=self.tier.model,
            port=url.port,
            log_path=Path(self.data_dir) / "logs" / f"{self.tier.name}-stand-in.log",
        )

