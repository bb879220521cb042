"""Client-side rate limits for an API tier: requests per period AND tokens per period (RPM + TPM).

A provider counts, per model and account, the requests and the tokens it receives in a minute and answers 429 to
the excess. The client keeps its own count so that it never sends the excess:

    - every attempt (retries included) reserves one request and an estimate of its tokens before it is sent:
      the prompt estimated conservatively plus `max_tokens` (the most the answer can bill);
    - when the answer comes back the reservation is reconciled with the returned usage (or kept at the estimate
      when there is none), so capacity reserved but not used is freed. Were the usage ever above the estimate,
      the excess is charged to the window and later requests wait for it: that is why the estimate errs high;
    - a reservation counts from the moment it is sent until one period after its answer came back. The server
      saw the request somewhere between the two, so no window of one period at the server can hold more than
      the limits, whatever the network delay;
    - request starts are spaced `period / rpm` apart, so the requests flow at the limit rather than arriving in a
      burst each period (providers also enforce their minute in sub-minute slices);
    - `x-ratelimit-*` (OpenAI) and `anthropic-ratelimit-*` headers lower the limits when the server's are lower,
      and pause sending until the reset when the server says nothing remains; a 429's `Retry-After` pauses every
      row of the tier, not only the one that got it.

Why not aiolimiter: its `AsyncLimiter` is a leaky bucket. It accepts a variable cost (`acquire(amount)`), but a
leaky bucket lets up to twice its rate through in a sliding window (a full bucket, then its refill), and it cannot
correct a past acquisition once the real token usage is known. Both matter for TPM, so this is a sliding-window
log of reservations instead.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Mapping

from models import tokens

# one token per 3 UTF-8 bytes over-counts English BPE (about 4) by a third: a reservation must not come in low
RESERVE_BYTES_PER_TOKEN = 3.0


def estimate_tokens(text: str) -> int:
    """A deliberately high token estimate for text the client cannot tokenize the way the provider does."""
    return tokens.estimate_tokens(text, RESERVE_BYTES_PER_TOKEN)


def estimate_message_tokens(messages: list[dict[str, str]]) -> int:
    return tokens.estimate_message_tokens(messages, RESERVE_BYTES_PER_TOKEN)


@dataclass
class Reservation:
    sent: float
    tokens: int
    done: float | None = None  # when the answer (or the failure) came back; None while in flight

    def expires(self, period_s: float) -> float:
        return math.inf if self.done is None else self.done + period_s


@dataclass(frozen=True)
class ServerLimits:
    """What the server's rate-limit headers said about the current window (None: not sent)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_reset(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds until a limit resets: OpenAI sends durations ("1s", "6m0s", "250ms"), Anthropic an RFC 3339
    time, some servers plain seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if parts and "".join(n + u for n, u in parts) == value:
        scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        return sum(float(n) * scale[u] for n, u in parts)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    now = now or datetime.now(timezone.utc)
    return max((at - now).total_seconds(), 0.0)


def _int(headers: Mapping[str, str], name: str) -> int | None:
    try:
        return int(float(headers[name]))
    except (KeyError, TypeError, ValueError):
        return None


def openai_limits(headers: Mapping[str, str]) -> ServerLimits:
    return ServerLimits(
        limit_requests=_int(headers, "x-ratelimit-limit-requests"),
        remaining_requests=_int(headers, "x-ratelimit-remaining-requests"),
        reset_requests_s=parse_reset(headers.get("x-ratelimit-reset-requests")),
        limit_tokens=_int(headers, "x-ratelimit-limit-tokens"),
        remaining_tokens=_int(headers, "x-ratelimit-remaining-tokens"),
        reset_tokens_s=parse_reset(headers.get("x-ratelimit-reset-tokens")),
    )


def anthropic_limits(headers: Mapping[str, str]) -> ServerLimits:
    return ServerLimits(
        limit_requests=_int(headers, "anthropic-ratelimit-requests-limit"),
        remaining_requests=_int(headers, "anthropic-ratelimit-requests-remaining"),
        reset_requests_s=parse_reset(headers.get("anthropic-ratelimit-requests-reset")),
        limit_tokens=_int(headers, "anthropic-ratelimit-tokens-limit"),
        remaining_tokens=_int(headers, "anthropic-ratelimit-tokens-remaining"),
        reset_tokens_s=parse_reset(headers.get("anthropic-ratelimit-tokens-reset")),
    )


class RateLimiter:
    """At most `rpm` requests and `tpm` tokens in any window of `period_s` seconds (None: no such limit).

    One limiter per provider endpoint + model + limits, for the whole process (`api_rows.limiter_for`): the rows
    of a call, the successive calls of a sharded partition and the tiers that share a model all count against
    it. Used from one event loop at a time (each call's `asyncio.run` makes a new one; the lock follows it).
    """

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        period_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.period_s = period_s
        self._clock = clock
        self._live: list[Reservation] = []
        self._next_start = 0.0
        self._paused_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._changed: asyncio.Event | None = None
        self.waited_s = 0.0  # total time rows spent waiting for capacity (a bench figure)

    async def acquire(self, tokens: int) -> Reservation:
        """Wait until one more request of `tokens` fits, and reserve it. Callers are admitted in arrival order
        (the lock is a queue), so a large request is not starved by a stream of small ones."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # asyncio primitives belong to one loop; the reservations outlive it
            self._loop, self._lock, self._changed = loop, asyncio.Lock(), asyncio.Event()
        assert self._lock is not None and self._changed is not None
        # a request larger than the whole token budget can only ever go alone: it waits for an empty window
        tokens = min(tokens, self.tpm) if self.tpm else tokens
        async with self._lock:
            t0 = self._clock()
            while (wait := self._wait_s(self._clock(), tokens)) > 0:
                self._changed.clear()
                try:
                    await asyncio.wait_for(self._changed.wait(), None if math.isinf(wait) else wait)
                except asyncio.TimeoutError:
                    pass
            now = self._clock()
            self.waited_s += now - t0
            r = Reservation(now, tokens)
            self._live.append(r)
            if self.rpm:
                # paced on a schedule, not from when this request happened to start: a start that was late
                # (a busy event loop) lets the next one follow sooner, by at most one interval, so lateness does
                # not accumulate into lost throughput; the window count above still caps any catch-up
                interval = self.period_s / self.rpm
                self._next_start = max(self._next_start, now - interval) + interval
            return r

    def release(self, r: Reservation, tokens: int | None = None) -> None:
        """The attempt is over; `tokens` is what it really used, when known (else the estimate stays)."""
        r.done = self._clock()
        if tokens is not None:
            r.tokens = tokens
        if self._changed is not None and self._loop is not None and not self._loop.is_closed():
            self._changed.set()

    def pause(self, seconds: float) -> None:
        """Send nothing for `seconds` (a 429's Retry-After, or a server saying nothing remains)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def adapt(self, limits: ServerLimits) -> None:
        """Follow the server's rate-limit headers: lower limits than ours win; an exhausted one pauses us.
        The header limits are taken to be per `period_s` (a minute at providers)."""
        if limits.limit_requests and (self.rpm is None or limits.limit_requests < self.rpm):
            self.rpm = limits.limit_requests
        if limits.limit_tokens and (self.tpm is None or limits.limit_tokens < self.tpm):
            self.tpm = limits.limit_tokens
        if limits.remaining_requests == 0 and limits.reset_requests_s:
            self.pause(limits.reset_requests_s)
        if limits.remaining_tokens == 0 and limits.reset_tokens_s:
            self.pause(limits.reset_tokens_s)

    def _wait_s(self, now: float, tokens: int) -> float:
        """Seconds until a request of `tokens` fits (0: now; inf: when an in-flight request comes back)."""
        p = self.period_s
        self._live = [r for r in self._live if r.expires(p) > now]
        waits = [self._paused_until - now, self._next_start - now]
        if self.rpm and len(self._live) >= self.rpm:
            expiries = sorted(r.expires(p) for r in self._live)
            waits.append(expiries[len(self._live) - self.rpm] - now)
        if self.tpm:
            excess = sum(r.tokens for r in self._live) + tokens - self.tpm
            if excess > 0:
                for r in sorted(self._live, key=lambda r: r.expires(p)):
                    excess -= r.tokens
                    if excess <= 0:
                        waits.append(r.expires(p) - now)
                        break
        return max(waits)
