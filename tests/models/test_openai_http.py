"""The API backend against a real HTTP server on loopback."""

import pytest

from models.backends import Request
from models.backends.openai_http import OpenAIBackend
from models.catalogue import Tier
from sluice.testing.openai_server import Faults, OpenAICompatServer


def tier(base_url, **kw):
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
        result = OpenAIBackend(tier(srv.base_url, max_retries=6)).complete(requests(40))
        assert all(c.ok for c in result.completions)


def test_unreachable_endpoint_fails_rows_not_the_batch():
    with OpenAICompatServer() as srv:
        url = srv.base_url
    result = OpenAIBackend(tier(url, max_retries=0, request_timeout_s=2)).complete(requests(3))
    assert [c.ok for c in result.completions] == [False, False, False]
    assert all(c.error.startswith("APIConnectionError") for c in result.completions)
