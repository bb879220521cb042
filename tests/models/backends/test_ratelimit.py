"""The RPM + TPM limiter on its own: window invariants, reconciliation, server headers."""

import asyncio
import random
from datetime import datetime, timedelta, timezone

from models.backends.ratelimit import (
    RateLimiter,
    ServerLimits,
    anthropic_limits,
    estimate_tokens,
    openai_limits,
    parse_reset,
)


def run_clients(limiter: RateLimiter, n: int, tokens, used, hold_s: float = 0.0):
    """n concurrent 'requests'; returns each reservation's (sent, done, tokens counted)."""
    log = []

    async def one(i):
        r = await limiter.acquire(tokens(i))
        await asyncio.sleep(hold_s * random.random())
        limiter.release(r, used(i))
        log.append(r)

    async def main():
        await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(main())
    return log


def worst_window(log, period):
    """The most requests / tokens live at any send time, counting each from its send to one period after it came
    back (the span in which a server may have seen it)."""
    worst_r = worst_t = 0
    for r in log:
        live = [x for x in log if x.sent <= r.sent < x.done + period]
        worst_r = max(worst_r, len(live))
        worst_t = max(worst_t, sum(x.tokens for x in live))
    return worst_r, worst_t


def test_requests_and_tokens_never_exceed_the_limits_in_any_window():
    random.seed(1)
    period = 0.2
    limiter = RateLimiter(rpm=8, tpm=300, period_s=period)
    log = run_clients(limiter, 40, tokens=lambda i: 20 + i % 30, used=lambda i: 10 + i % 7, hold_s=0.02)
    assert len(log) == 40
    r, t = worst_window(log, period)
    assert r <= 8 and t <= 300


def test_reconciliation_keeps_the_real_usage_and_missing_usage_keeps_the_estimate():
    limiter = RateLimiter(rpm=None, tpm=1000, period_s=0.1)
    log = run_clients(limiter, 4, tokens=lambda i: 100, used=lambda i: 7 if i % 2 else None)
    assert sorted(r.tokens for r in log) == [7, 7, 100, 100]


def test_a_request_larger_than_the_tpm_goes_alone_instead_of_waiting_forever():
    limiter = RateLimiter(rpm=None, tpm=50, period_s=0.05)
    log = run_clients(limiter, 3, tokens=lambda i: 500, used=lambda i: None)
    assert len(log) == 3 and all(r.tokens == 50 for r in log)


def test_server_headers_lower_limits_and_an_exhausted_limit_pauses():
    limiter = RateLimiter(rpm=100, tpm=None, period_s=60)
    limiter.adapt(ServerLimits(limit_requests=40, remaining_requests=0, reset_requests_s=2.0, limit_tokens=9000))
    assert limiter.rpm == 40 and limiter.tpm == 9000
    assert limiter._wait_s(limiter._clock(), 1) > 1.5  # paused until the server's reset
    limiter.adapt(ServerLimits(limit_requests=500))
    assert limiter.rpm == 40  # a higher server limit never raises ours


def test_header_parsing():
    assert parse_reset("6m0s") == 360 and parse_reset("250ms") == 0.25 and parse_reset("1.5") == 1.5
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_reset((now + timedelta(seconds=30)).isoformat().replace("+00:00", "Z"), now) == 30
    assert parse_reset("garbage") is None and parse_reset(None) is None
    o = openai_limits({"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-tokens": "0",
                       "x-ratelimit-reset-tokens": "1s"})
    assert o.limit_requests == 500 and o.remaining_tokens == 0 and o.reset_tokens_s == 1.0
    a = anthropic_limits({"anthropic-ratelimit-tokens-limit": "80000", "anthropic-ratelimit-requests-remaining": "3"})
    assert a.limit_tokens == 80000 and a.remaining_requests == 3


def test_token_estimate_is_conservative():
    for text in ["the cat sat on the mat", "a b c d e f", "数据处理管道", "x" * 400]:
        assert estimate_tokens(text) >= len(text.split())
    assert estimate_tokens("") == 0
