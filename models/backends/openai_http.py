"""API tier: an OpenAI-compatible chat-completions endpoint (providers, vLLM servers, gateways).

Two ways to answer a partition, chosen per run:
    - real time (default): one chat completion per row through `api_rows.answer_rows`: bounded concurrency,
      client-side RPM + TPM limits that follow the server's `x-ratelimit-*` headers, retries with backoff that
      honour `Retry-After`. List prices.
    - the provider's Batch API (openai_batch.py) when the tier allows it (`batch_api = "always"`, or "auto" with a
      deadline that leaves the whole completion window): half the price, answers within 24 h. Rows the batch
      could not answer (expired, cancelled, transient errors) go through the real-time path.
A row that fails becomes a Completion with `error` set: one bad row never aborts the batch. Tokens come from the
returned `usage` (cached prompt tokens included); where there is none they are estimated and flagged.
A row with a response schema asks for a strict `json_schema` response format; its answer is the JSON text (or,
for a choice list, the label). Answers are not validated here: the infer stage does that, and retries.

The API key is read from the environment variable (or Prefect Secret block) the catalogue names, at call time,
and is never logged, landed or put in an error.
"""

from __future__ import annotations

import logging
from typing import Sequence

from models.backends import BatchResult, Completion, Request
from models.backends.api_rows import (Answer, AnswerShape, ApiBackend, answer_rows, answer_shape, make_limiter,
                                      structured_text)
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


def answer_from_chat(resp, req: Request | None = None) -> Answer:
    """Parse a chat completion (an SDK object or the JSON of a batch output line); with the request, a structured
    answer is unwrapped to what its schema describes."""
    get = (lambda o, k: o.get(k) if isinstance(o, dict) else getattr(o, k, None))
    choices = get(resp, "choices") or []
    choice = choices[0] if choices else None
    message = get(choice, "message") if choice else None
    usage = get(resp, "usage")
    details = get(usage, "prompt_tokens_details") if usage else None
    return Answer(
        text=structured_text(req, get(message, "content") if message else None),
        input_tokens=get(usage, "prompt_tokens") if usage else None,
        output_tokens=get(usage, "completion_tokens") if usage else None,
        finish_reason=get(choice, "finish_reason") if choice else None,
        cached_input_tokens=(get(details, "cached_tokens") or 0) if details else 0,
    )


def httpx_response():
    """The HTTP response class the installed SDK is built on (httpx, or httpx2 in newer releases)."""
    try:
        import httpx2 as http
    except ImportError:
        import httpx as http
    return http.Response


def openai_client(tier: Tier, key: str, max_retries: int = 0):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=tier.base_url, api_key=key, timeout=tier.request_timeout_s, max_retries=max_retries)


async def answer_in_real_time(tier: Tier, requests: Sequence[Request], key: str) -> list[Completion]:
    limiter = make_limiter(tier)
    async with openai_client(tier, key) as client:

        async def send(req: Request) -> Answer:
            # the SDK's generic `post` (its documented way to reach any endpoint) rather than
            # `chat.completions.create`: same auth, errors and timeouts, but it skips the typed-parameter
            # transform, which cost ~15 ms of CPU per request here, and hands back the headers with the body
            resp = await client.post("/chat/completions", body=chat_body(tier, req), cast_to=httpx_response())
            ans = answer_from_chat(resp.json(), req)
            ans.limits = openai_limits(resp.headers)
            return ans

        return await answer_rows(requests, send, tier, limiter, secret=key)


class OpenAIBackend(ApiBackend):
    def __init__(self, tier: Tier, data_dir: str = "data", deadline_s: float | None = None) -> None:
        super().__init__(tier, deadline_s)
        self.data_dir = data_dir

    async def _batch(self, requests: Sequence[Request], key: str) -> BatchResult:
        from models.backends.openai_batch import answer_with_batch_api

        return await answer_with_batch_api(self.tier, requests, key, self.deadline_s)

    async def _real_time(self, requests: Sequence[Request], key: str) -> list[Completion]:
        return await answer_in_real_time(self.tier, requests, key)

    def _serving(self):
        return self._stand_in() if self.tier.local_server else super()._serving()

    def _stand_in(self):
        from pathlib import Path
        from urllib.parse import urlparse

        from models.packaged import resolve_model
        from sluice.stand_in import openai_stand_in

        url = urlparse(self.tier.base_url or "")
        if url.hostname not in ("127.0.0.1", "localhost") or not url.port:
            raise ValueError(f"tier {self.tier.name!r}: local_server needs a loopback base_url with a port")
        return openai_stand_in(
            resolve_model(self.tier.local_server or "", self.data_dir),
            served_name=self.tier.model,
            port=url.port,
            log_path=Path(self.data_dir) / "logs" / f"{self.tier.name}-stand-in.log",
        )

