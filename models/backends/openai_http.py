"""API tier: an OpenAI-compatible chat-completions endpoint (providers, vLLM servers, gateways).

Requests run concurrently up to the tier's `max_concurrency`; the official `openai` SDK does the HTTP, honours
`Retry-After` and retries 429/5xx/timeouts `max_retries` times with backoff. A row that still fails becomes a
Completion with `error` set: one bad row never aborts the batch. Tokens come from the returned `usage`.

The API key is read from the environment variable the catalogue names, at call time, and is never logged.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Sequence

from tqdm.asyncio import tqdm_asyncio

from models.backends import BatchResult, Completion, Request
from models.catalogue import Tier


def _error_text(exc: BaseException) -> str:
    """A landable reason: the exception class and status, never request headers (which carry the key)."""
    status = getattr(exc, "status_code", None)
    msg = str(getattr(exc, "message", "") or exc)
    return f"{type(exc).__name__}{f' (HTTP {status})' if status else ''}: {msg[:300]}"


class OpenAIBackend:
    def __init__(self, tier: Tier, data_dir: str = "data") -> None:
        self.tier = tier
        self.data_dir = data_dir

    def _client(self):
        from openai import AsyncOpenAI

        key = os.environ.get(self.tier.api_key_env or "", "") or "EMPTY"
        return AsyncOpenAI(
            base_url=self.tier.base_url,
            api_key=key,
            timeout=self.tier.request_timeout_s,
            max_retries=self.tier.max_retries,
        )

    async def _one(self, client, sem: asyncio.Semaphore, req: Request) -> Completion:
        async with sem:
            t0 = time.perf_counter()
            try:
                resp = await client.chat.completions.create(
                    model=self.tier.model,
                    messages=req.messages(),
                    max_tokens=req.max_tokens,
                    temperature=0.0,
                )
            except Exception as exc:  # per-row failure: land it with its reason
                return Completion(req.row_id, None, latency_ms=(time.perf_counter() - t0) * 1000,
                                  error=_error_text(exc))
            latency = (time.perf_counter() - t0) * 1000
            choice = resp.choices[0] if resp.choices else None
            usage = resp.usage
            return Completion(
                row_id=req.row_id,
                text=choice.message.content if choice else None,
                input_tokens=usage.prompt_tokens if usage else 0,
                output_tokens=usage.completion_tokens if usage else 0,
                latency_ms=latency,
                finish_reason=choice.finish_reason if choice else None,
                error=None if choice else "response had no choices",
            )

    async def _run(self, requests: Sequence[Request]) -> list[Completion]:
        sem = asyncio.Semaphore(self.tier.max_concurrency)
        async with self._client() as client:
            return await tqdm_asyncio.gather(
                *(self._one(client, sem, r) for r in requests), desc=f"tier {self.tier.name}", unit="row"
            )

    def complete(self, requests: Sequence[Request]) -> BatchResult:
        if not requests:
            return BatchResult([])
        if self.tier.local_server:
            with self._stand_in():
                return BatchResult(asyncio.run(self._run(requests)))
        return BatchResult(asyncio.run(self._run(requests)))

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

    def close(self) -> None:
        pass
