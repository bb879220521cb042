"""What the API backends share: answering rows one request each, concurrently, within limits, with retries.

A provider adapter supplies one coroutine, `send(request) -> Answer`, that makes one HTTP call and parses it.
Around it, for every row:
    - at most `max_concurrency` calls are in flight;
    - each attempt reserves a request and its estimated tokens from the tier's `RateLimiter` before it is sent and
      reconciles the reservation with the returned usage after (see ratelimit.py);
    - transient failures (429, 408, 409, 5xx, timeouts, connection errors) are retried up to `max_retries` times
      (tenacity), waiting what the server's `Retry-After` asks, else exponential backoff with full jitter;
    - a row that still fails, or fails permanently (400, 401, ...), becomes a Completion with `error` set to a
      reason: the exception class, HTTP status, message and attempt count, with the API key scrubbed. The batch
      goes on.
The SDKs' own retries are off (max_retries=0) so that every attempt passes through the limiter.

Structured outputs (`Request.response_schema`): providers constrain an answer to an *object* schema (OpenAI's
strict `json_schema` response format, Anthropic's tool `input_schema`), so `answer_shape` wraps any other schema
as `{"value": <schema>}` (a choice list becomes an object with one enum property) and `structured_text` unwraps
the answer: the JSON text of the value, or the chosen label as plain text. The backends do not validate answers
(the infer stage does, and retries or escalates): an answer that cannot be unwrapped is returned as it came.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tqdm.asyncio import tqdm_asyncio

from models.backends.base import BatchResult, Completion, Request
from models.backends.batch_journal import BatchJournal, ProviderBatchPending
from models.backends.ratelimit import RateLimiter, ServerLimits, estimate_message_tokens, estimate_tokens
from models.backends.sent_log import SentLog
from models.catalogue import Tier

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429}


class ApiKeyError(RuntimeError):
    """The tier's API key could not be found (the message names where it was looked for, never a value)."""


def api_key(tier: Tier) -> str:
    """The tier's key: from the environment variable it names, else from the Prefect Secret block it names."""
    if tier.api_key_env and os.environ.get(tier.api_key_env):
        return os.environ[tier.api_key_env]
    if tier.api_key_secret:
        try:
            from prefect.blocks.system import Secret

            return str(Secret.load(tier.api_key_secret).get())
        except Exception as exc:  # the block's absence or an unreachable server: say where, not what
            raise ApiKeyError(
                f"tier {tier.name!r}: cannot load Prefect Secret block {tier.api_key_secret!r} "
                f"({type(exc).__name__})"
            ) from None
    # unset: a local server that takes any key; a real provider answers 401, landed per row with its reason
    return "EMPTY"


def status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def retry_after_s(exc: BaseException | None) -> float | None:
    """The wait a failed response asked for: `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    if ms := headers.get("retry-after-ms"):
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return max(email.utils.mktime_tz(parsed) - time.time(), 0.0) if parsed else None


def is_transient(exc: BaseException) -> bool:
    status = status_of(exc)
    if status is not None:
        return status in RETRYABLE_STATUS or status >= 500
    # both SDKs name these alike: APITimeoutError, APIConnectionError (timeouts subclass connection errors)
    return any(c.__name__ in ("APIConnectionError", "APITimeoutError") for c in type(exc).__mro__)


def error_text(exc: BaseException, attempts: int, secret: str = "") -> str:
    """A landable reason: class, HTTP status, message, attempts; never headers, and never the key."""
    status = status_of(exc)
    msg = str(getattr(exc, "message", "") or exc)
    if secret and secret != "EMPTY":  # before the cut: a key straddling it would otherwise leave its prefix
        msg = msg.replace(secret, "***")
    return f"{type(exc).__name__}{f' (HTTP {status})' if status else ''}: {msg[:300]} [{attempts} attempt(s)]"


class _RetryAfterOrBackoff:
    """Tenacity wait: the server's Retry-After (plus up to 10% jitter so that rows do not return in step) when
    sent, else exponential backoff with jitter."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.backoff = wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)

    def __call__(self, state: RetryCallState) -> float:
        ra = retry_after_s(state.outcome.exception() if state.outcome else None)
        if ra is not None:
            return ra + random.uniform(0, 0.1 * ra)
        return self.backoff(state)


@dataclass(frozen=True)
class AnswerShape:
    """What a structured request asks the provider for, and how to read its answer back."""

    schema: dict  # the object schema sent (the request's own, or the wrapper around it)
    wrapped: bool  # the answer is {"value": <the request's answer>}
    choices: list[str] | None  # a choice list: the answer is one of these labels, returned as plain text

    NAME = "answer"  # the json_schema name (OpenAI) and the tool name (Anthropic)


def answer_shape(req: Request) -> AnswerShape | None:
    """None for a free-text request. Object schemas are sent as they are (strict mode and tool input schemas
    need an object at the top); anything else is wrapped as the one required property `value`."""
    if not req.response_schema:
        return None
    schema = json.loads(req.response_schema)
    choices = req.choices()
    if choices is not None:
        inner: dict = {"type": "string", "enum": choices}
    elif isinstance(schema, dict) and schema.get("type") == "object":
        return AnswerShape(schema, wrapped=False, choices=None)
    else:
        inner = schema
    # definitions referenced as "#/$defs/..." must stay at the root, where the references point
    defs = {k: inner[k] for k in ("$defs", "definitions") if isinstance(inner, dict) and k in inner}
    if defs:
        inner = {k: v for k, v in inner.items() if k not in defs}
    wrapper = {"type": "object", "properties": {"value": inner}, "required": ["value"],
               "additionalProperties": False, **defs}
    return AnswerShape(wrapper, wrapped=True, choices=choices)


def structured_text(req: Request | None, text: str | None) -> str | None:
    """The answer as the request's schema describes it: a wrapped answer's value as JSON text, a choice as its
    label. Whatever does not unwrap (not JSON, no `value`, a label that is not a string) comes back unchanged,
    for the infer stage's validation to reject."""
    shape = answer_shape(req) if req is not None else None
    if shape is None or not shape.wrapped or text is None:
        return text
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if not isinstance(obj, dict) or "value" not in obj:
        return text
    value = obj["value"]
    if shape.choices is not None:
        return value if isinstance(value, str) else text
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Answer:
    """One successful call, parsed by the provider adapter."""

    text: str | None
    input_tokens: int | None  # None: the provider returned no usage
    output_tokens: int | None
    finish_reason: str | None
    cached_input_tokens: int = 0
    limits: ServerLimits | None = None
    mean_logprob: float | None = None  # mean logprob of the answer's tokens, when the provider returned them


Send = Callable[[Request], Awaitable[Answer]]


def estimated_input_tokens(req: Request) -> int:
    """The prompt's tokens by our estimate: the conversation, plus the response schema, which providers bill as
    input too (OpenAI's response format, Anthropic's tool definition)."""
    schema = estimate_tokens(req.response_schema) if req.response_schema else 0
    return estimate_message_tokens(req.messages()) + schema


def estimated_tokens(req: Request) -> int:
    """What one attempt may bill at most, by our estimate: the prompt plus the whole `max_tokens`."""
    return estimated_input_tokens(req) + req.max_tokens


async def answer_row(req: Request, send: Send, tier: Tier, limiter: RateLimiter, sem: asyncio.Semaphore,
                     secret: str = "", sent_log: SentLog | None = None) -> Completion:
    attempts = 0

    async def attempt() -> tuple[Answer, float]:
        nonlocal attempts
        async with sem:
            reservation = await limiter.acquire(estimated_tokens(req))
            attempts += 1
            t0 = time.perf_counter()
            if sent_log is not None:  # written down before it leaves: a kill cannot hide that it was paid for
                sent_log.record_sent(req.row_id, estimated_input_tokens(req), req.max_tokens)
            try:
                ans = await send(req)
            except BaseException as exc:  # cancellation too: a reservation left in flight would block forever
                status = status_of(exc)
                if sent_log is not None and not isinstance(exc, asyncio.CancelledError):
                    sent_log.record_failed(req.row_id, status)
                # a refused or failed call bills no output; a timeout may still have been answered in full
                limiter.release(reservation, None if status is None else estimated_input_tokens(req))
                if status == 429 and (ra := retry_after_s(exc)):
                    limiter.pause(ra)
                raise
            used = (ans.input_tokens or 0) + (ans.output_tokens or 0) if ans.input_tokens is not None else None
            limiter.release(reservation, used)
            if ans.limits:
                limiter.adapt(ans.limits)
            return ans, (time.perf_counter() - t0) * 1000

    try:
        async for trial in AsyncRetrying(
            stop=stop_after_attempt(tier.max_retries + 1),
            wait=_RetryAfterOrBackoff(tier.backoff_initial_s, tier.backoff_max_s),
            retry=retry_if_exception(is_transient),
            reraise=True,
        ):
            with trial:
                ans, latency_ms = await attempt()
    except Exception as exc:  # per-row failure: land it with its reason
        return Completion(req.row_id, None, error=error_text(exc, attempts, secret))
    done = completion_from(req, ans, latency_ms)
    if sent_log is not None:
        sent_log.record_answered(req.row_id, done.input_tokens, done.output_tokens, done.cached_input_tokens,
                                 done.usage_estimated)
    return done


def completion_from(req: Request, ans: Answer, latency_ms: float = 0.0, via_batch_api: bool = False) -> Completion:
    """A Completion from a parsed answer; missing usage is estimated and flagged."""
    estimated = ans.input_tokens is None or ans.output_tokens is None
    return Completion(
        row_id=req.row_id,
        text=ans.text,
        input_tokens=ans.input_tokens if ans.input_tokens is not None else estimated_input_tokens(req),
        output_tokens=ans.output_tokens if ans.output_tokens is not None else estimate_tokens(ans.text or ""),
        latency_ms=latency_ms,
        finish_reason=ans.finish_reason,
        cached_input_tokens=ans.cached_input_tokens,
        usage_estimated=estimated,
        via_batch_api=via_batch_api,
        mean_logprob=ans.mean_logprob,
        error=None if ans.text is not None else "response had no text",
    )


async def answer_rows(requests: Sequence[Request], send: Send, tier: Tier, limiter: RateLimiter,
                      secret: str = "", sent_log: SentLog | None = None) -> list[Completion]:
    sem = asyncio.Semaphore(tier.max_concurrency)
    return await tqdm_asyncio.gather(
        *(answer_row(r, send, tier, limiter, sem, secret, sent_log) for r in requests),
        desc=f"tier {tier.name}", unit="row", disable=None,
    )


_LIMITERS: dict[tuple, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def make_limiter(tier: Tier) -> RateLimiter:
    """The process-wide limiter for this endpoint, model and limits. A provider counts per account and model
    across all of a client's calls, so a partition answered shard by shard (one `complete` call per shard), or
    two tiers on the same model, must not each start with an empty window."""
    key = (tier.backend, tier.base_url or "", tier.model, tier.rpm, tier.tpm, tier.rate_limit_period_s)
    with _LIMITERS_LOCK:
        if key not in _LIMITERS:
            _LIMITERS[key] = RateLimiter(tier.rpm, tier.tpm, tier.rate_limit_period_s)
        return _LIMITERS[key]


def httpx_response():
    """The HTTP response class the installed SDK is built on (httpx, or httpx2 in newer releases)."""
    try:
        import httpx2 as http
    except ImportError:
        import httpx as http
    return http.Response


class ApiBackend:
    """What every API backend shares: the key, the choice between the provider's batch API and real time (real
    time when the batch path itself breaks), and turning any unexpected error into a reason on every row, so a
    run lands the tier instead of aborting. A provider supplies its SDK client (`client`), how one request is
    sent in real time (`send`), and its batch API (`_batch`, usually `batch_loop.answer_in_batches`)."""

    def __init__(self, tier: Tier, deadline_s: float | None = None) -> None:
        self.tier = tier
        self.deadline_s = deadline_s
        # where the provider batches of the next `complete` are journaled (batch_journal.py); None: nowhere
        self.journal: BatchJournal | None = None
        # where its real-time requests are written down as they are sent and answered (sent_log.py); None: nowhere
        self.sent_log_path: Path | None = None

    def log_sends_to(self, path: Path | None) -> None:
        """Log the next `complete`'s real-time requests at `path` (sent_log.py; one file per try of a shard)."""
        self.sent_log_path = path

    def journal_to(self, path: Path | None) -> None:
        """Journal the provider batches of the next `complete` call at `path` (the infer stage gives each shard
        its own file in the run folder): a call for the same rows after a kill polls them, never re-submits."""
        self.journal = BatchJournal(path) if path is not None else None

    def _journaled(self) -> bool:
        """Some of these rows are with the provider already: answering them another way would pay twice."""
        return self.journal is not None and bool(self.journal.batches())

    async def _batch(self, requests: Sequence[Request], key: str) -> BatchResult:
        raise NotImplementedError

    def client(self, key: str, max_retries: int = 0):
        """The provider's async SDK client, an async context manager."""
        raise NotImplementedError

    async def send(self, client, req: Request) -> Answer:
        """One request in real time: the provider's answer, with the rate-limit headers it returned."""
        raise NotImplementedError

    def batch_client(self, key: str):
        # batch management calls are few and not rate-critical: the SDK's own retries, unlike per-row calls
        return self.client(key, max_retries=self.tier.max_retries)

    async def real_time(self, requests: Sequence[Request], key: str) -> list[Completion]:
        """Every row through `answer_rows`: bounded concurrency, the tier's RPM/TPM limiter, retries."""
        limiter = make_limiter(self.tier)
        sent_log = SentLog(self.sent_log_path) if self.sent_log_path is not None else None
        try:
            async with self.client(key) as client:
                return await answer_rows(requests, lambda req: self.send(client, req), self.tier, limiter,
                                         secret=key, sent_log=sent_log)
        finally:
            sent_log and sent_log.close()

    def _serving(self) -> contextlib.AbstractContextManager:
        """Held while the tier answers (a local stand-in server, for one); nothing by default."""
        return contextlib.nullcontext()

    async def _run(self, requests: Sequence[Request], key: str) -> BatchResult:
        from models.backends.provider_batch import use_batch_api

        if use_batch_api(self.tier, self.deadline_s):
            try:
                return await self._batch(requests, key)
            except ProviderBatchPending:
                raise
            except Exception as exc:  # the batch path itself broke: answer every row in real time instead
                if self._journaled():  # ...unless batches were accepted: fail the shard, its retry polls them
                    raise
                log.warning("tier %s: batch API path failed (%s); answering in real time", self.tier.name,
                            error_text(exc, 1, key))
        return BatchResult(await self.real_time(requests, key), details={"batch_api_rows": 0})

    def complete(self, requests: Sequence[Request]) -> BatchResult:
        """Every row answered or failed with its reason; raises only `ProviderBatchPending` (the tier does not
        wait for its provider batches), or when journaled batches hold the rows and the batch path broke."""
        if not requests:
            return BatchResult([])
        try:
            key = api_key(self.tier)
        except ApiKeyError as exc:
            return BatchResult([Completion(r.row_id, None, error=str(exc)) for r in requests])
        with self._serving():  # a stand-in that cannot start fails the shard (retried), not its rows
            try:
                return asyncio.run(self._run(requests, key))
            except ProviderBatchPending:
                raise  # the rows are with the provider, journaled: the run waits for them
            except Exception as exc:
                if self._journaled():
                    raise
                why = f"tier {self.tier.name} failed: {error_text(exc, 1, key)}"
                return BatchResult([Completion(r.row_id, None, error=why) for r in requests])

    def close(self) -> None:
        pass
