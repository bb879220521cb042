"""The API backend against a real HTTP server on loopback: answers, retries, rate limits, costs.

Rate limits are checked the way a provider would see them: from the server's own record of arrivals, counted per
window (`max_in_window`), with the limiter's period shrunk from 60 s to about a second so that tests stay fast.
Nothing here asserts a duration.
"""

import sys
import types

import pyarrow as pa
import pytest

from models.backends import Request
from models.backends.api_rows import api_key
from models.backends.openai_http import OpenAIBackend
from models.catalogue import Catalogue, Tier
from sluice.stages.infer.answer import answer_partition
from tests.support.openai_server import Faults, OpenAICompatServer, ProviderLimits


def tier(base_url, **kw):
    kw = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, **kw}
    return Tier(name="premium", backend="openai", model="premium-test", base_url=base_url,
                api_key_env="SLUICE_TEST_PREMIUM_KEY", input_usd_per_1m=2.5, output_usd_per_1m=10.0, **kw)


def requests(n):
    return [Request(row_id=f"r{i}", prompt=f"question number {i} about cats", system="Be brief.", max_tokens=16)
            for i in range(n)]


def test_each_row_gets_its_own_answer_and_usage(openai_server, monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_PREMIUM_KEY", "sk-test-not-a-real-key")
    result = OpenAIBackend(tier(openai_server.base_url)).complete(requests(20))
    assert [c.row_id for c in result.completions] == [f"r{i}" for i in range(20)]
    for i, c in enumerate(result.completions):
        assert c.ok and c.text == f"answer to: question number {i} about cats"
        assert c.input_tokens == len(f"Be brief. question number {i} about cats".split())
        assert c.output_tokens == 7 and c.latency_ms > 0
    got = openai_server.received
    assert len(got) == 20
    assert {r.body["max_tokens"] for r in got} == {16}
    assert got[0].body["messages"][0] == {"role": "system", "content": "Be brief."}


def test_transient_faults_are_retried_and_permanent_ones_land_as_row_errors():
    faults = Faults(rate_429=0.2, rate_500=0.2, retry_after_s=0.01, seed=3)
    with OpenAICompatServer(faults=faults, model="premium-test") as srv:
        result = OpenAIBackend(tier(srv.base_url, max_retries=0)).complete(requests(40))
        failed = [c for c in result.completions if not c.ok]
        assert 5 <= len(failed) <= 30  # ~40% injected, no retries: some rows fail ...
        assert len(result.completions) == 40  # ... but none is lost and the batch is not aborted
        assert {c.error.split(" ")[0] for c in failed} <= {"RateLimitError", "InternalServerError"}
        assert all("(HTTP 429)" in c.error or "(HTTP 500)" in c.error for c in failed)

        srv.set_faults(Faults(rate_429=0.2, rate_500=0.2, retry_after_s=0.01, seed=4))
        result = OpenAIBackend(tier(srv.base_url, max_retries=10)).complete(requests(40))  # 0.4^11: none fails
        assert all(c.ok for c in result.completions)


def test_unreachable_endpoint_fails_rows_not_the_batch():
    with OpenAICompatServer() as srv:
        url = srv.base_url
    result = OpenAIBackend(tier(url, max_retries=0, request_timeout_s=2)).complete(requests(3))
    assert [c.ok for c in result.completions] == [False, False, False]
    assert all(c.error.startswith("APIConnectionError") for c in result.completions)


def test_fault_storm_lands_every_row_once_and_never_exceeds_rpm_or_tpm():
    # 30% of requests fault: 10% 429 (Retry-After), 10% 500, 10% held past the client's timeout
    faults = Faults(rate_429=0.1, rate_500=0.1, rate_timeout=0.1, retry_after_s=0.05, timeout_hold_s=0.6, seed=11)
    rpm, tpm, period = 200, 5000, 1.0
    with OpenAICompatServer(faults=faults, model="premium-test") as srv:
        t = tier(srv.base_url, rpm=rpm, tpm=tpm, rate_limit_period_s=period, max_retries=3, request_timeout_s=0.3,
                 max_concurrency=32)
        result = OpenAIBackend(t).complete(requests(500))
        got = srv.received
        peak = srv.max_in_window(period)
    ids = [c.row_id for c in result.completions]
    assert ids == [f"r{i}" for i in range(500)]  # every row once, in order
    ok = [c for c in result.completions if c.ok]
    failed = [c for c in result.completions if not c.ok]
    assert len(ok) + len(failed) == 500 and len(ok) >= 480
    assert all(c.error and "attempt(s)" in c.error for c in failed)
    assert all(c.text == f"answer to: question number {c.row_id[1:]} about cats" for c in ok)
    assert len(got) > 500 * 1.3  # the faults really happened and were retried
    assert {r.status for r in got} >= {200, 429, 500}
    # what the provider saw: never more than the limits in any window of the period
    assert peak.requests <= rpm
    assert peak.tokens <= tpm


def test_without_faults_the_limiter_keeps_the_server_near_its_rpm():
    rpm, period = 20, 1.0
    with OpenAICompatServer(model="premium-test") as srv:
        t = tier(srv.base_url, rpm=rpm, rate_limit_period_s=period, max_concurrency=16)
        result = OpenAIBackend(t).complete(requests(60))
        peak = srv.max_in_window(period)
    assert all(c.ok for c in result.completions)
    # a full window holds the limit, never more. The bound below is loose because this test shares two cores with
    # others; bench/api_throughput.py measures throughput over real 60 s windows.
    assert 0.5 * rpm <= peak.requests <= rpm


def test_tpm_binds_on_tokens_with_estimates_reconciled_from_usage():
    tpm, period = 600, 1.0  # ~37 tokens reserved per request before sending, ~16 billed
    with OpenAICompatServer(model="premium-test") as srv:
        result = OpenAIBackend(tier(srv.base_url, tpm=tpm, rate_limit_period_s=period)).complete(requests(80))
        peak = srv.max_in_window(period)
    assert all(c.ok for c in result.completions)
    assert peak.tokens <= tpm
    # reconciliation frees what the estimate over-reserved: more fits in a window than estimates alone allow
    assert peak.requests > tpm // 37


def test_server_rate_limit_headers_lower_the_client_limit():
    limits = ProviderLimits(rpm=30, window_s=1.0)
    with OpenAICompatServer(model="premium-test", limits=limits) as srv:
        t = tier(srv.base_url, rpm=1000, rate_limit_period_s=1.0, max_retries=5, max_concurrency=4)
        result = OpenAIBackend(t).complete(requests(90))
        got = srv.received
    assert all(c.ok for c in result.completions)
    # before the first answer's headers arrive the client follows its own (higher) limit; after, the server's
    assert sum(1 for r in got if r.status == 429) <= 8


def test_missing_usage_is_estimated_flagged_and_priced():
    with OpenAICompatServer(faults=Faults(omit_usage=True), model="premium-test") as srv:
        t = tier(srv.base_url)
        cat = Catalogue(baseline="premium", tiers=[t])
        partition = pa.table({"row_id": ["a", "b"], "prompt": ["what is a cat", "what is a dog"],
                              "system": [None, None], "max_tokens": [16, 16]})
        answers, billing = answer_partition(partition, t, cat, OpenAIBackend(t))
    rows = answers.to_pylist()
    assert all(r["status"] == "ok" and r["usage_estimated"] for r in rows)
    assert all(r["input_tokens"] > 0 and r["output_tokens"] > 0 and r["cost_usd"] > 0 for r in rows)
    assert {r["price_basis"] for r in rows} == {"list"}
    assert billing["rows_usage_estimated"] == 2


def test_cost_uses_cached_and_batch_prices():
    t = tier("http://unused", cached_input_usd_per_1m=1.25, batch_input_usd_per_1m=1.25, batch_output_usd_per_1m=5.0)
    assert t.token_cost_usd(1_000_000, 1_000_000) == pytest.approx(12.5)
    assert t.token_cost_usd(1_000_000, 1_000_000, cached_input_tokens=400_000) == pytest.approx(12.0)
    assert t.token_cost_usd(1_000_000, 1_000_000, batch=True) == pytest.approx(6.25)


def test_api_key_comes_from_env_or_a_prefect_secret_and_never_reaches_an_error(monkeypatch):
    class FakeSecret:  # stands in for prefect.blocks.system.Secret (no Prefect server, no Prefect import)
        @staticmethod
        def load(name):
            assert name == "premium-key"
            return type("S", (), {"get": lambda self: "sk-from-secret-block"})()

    monkeypatch.delenv("SLUICE_TEST_PREMIUM_KEY", raising=False)
    monkeypatch.setitem(sys.modules, "prefect.blocks.system", types.SimpleNamespace(Secret=FakeSecret))
    assert api_key(tier("http://x", api_key_secret="premium-key")) == "sk-from-secret-block"
    monkeypatch.setenv("SLUICE_TEST_PREMIUM_KEY", "sk-from-env")
    assert api_key(tier("http://x", api_key_secret="premium-key")) == "sk-from-env"

    with OpenAICompatServer() as srv:
        url = srv.base_url
    result = OpenAIBackend(tier(url, max_retries=1, request_timeout_s=1)).complete(requests(2))
    assert all(c.error and "sk-from-env" not in c.error for c in result.completions)


def test_cached_prompt_tokens_are_billed_at_the_cached_price():
    with OpenAICompatServer(faults=Faults(cached_prompt_tokens=3), model="premium-test") as srv:
        t = tier(srv.base_url, cached_input_usd_per_1m=1.25)
        cat = Catalogue(baseline="premium", tiers=[t])
        partition = pa.table({"row_id": ["a"], "prompt": ["what is a cat really"], "system": [None],
                              "max_tokens": [16]})
        row = answer_partition(partition, t, cat, OpenAIBackend(t))[0].to_pylist()[0]
    assert row["cached_input_tokens"] == 3 and row["input_tokens"] == 5
    assert row["cost_usd"] == pytest.approx((2 * 2.5 + 3 * 1.25 + row["output_tokens"] * 10.0) / 1e6)


def test_limits_hold_across_successive_calls_as_a_sharded_partition_makes_them():
    rpm, period = 15, 1.0
    with OpenAICompatServer(model="premium-test") as srv:
        backend = OpenAIBackend(tier(srv.base_url, rpm=rpm, rate_limit_period_s=period))
        shards = [backend.complete(requests(10)) for _ in range(3)]  # one call per shard, each a new event loop
        peak = srv.max_in_window(period)
    assert all(c.ok for s in shards for c in s.completions)
    assert peak.requests <= rpm  # a new call does not start with an empty window



def test_a_tier_with_logprobs_asks_for_them_and_reports_each_answers_mean(openai_server, monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_PREMIUM_KEY", "sk-test-not-a-real-key")
    result = OpenAIBackend(tier(openai_server.base_url, logprobs=True)).complete(
        [Request("a", "What is 2 + 2?", None, 16), Request("b", "[unsure] What is 2 + 2?", None, 16)])
    sure, unsure = result.completions
    assert sure.ok and unsure.ok
    assert sure.mean_logprob == pytest.approx(-0.05) and unsure.mean_logprob == pytest.approx(-2.0)
    assert all(r.body.get("logprobs") is True for r in openai_server.received)
    plain = OpenAIBackend(tier(openai_server.base_url)).complete([Request("c", "What is 2 + 2?", None, 16)])
    assert plain.completions[0].mean_logprob is None and "logprobs" not in openai_server.received[-1].body
