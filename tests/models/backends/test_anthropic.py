"""The Anthropic backend (messages and message batches) against a loopback server speaking Anthropic's protocol."""

import json
from collections import Counter

import pyarrow as pa
import pytest

from models.backends import BatchJournal, Request, make_backend
from models.backends.anthropic_http import AnthropicBackend
from models.catalogue import Catalogue, Tier
from sluice.stages.infer.answer import answer_partition
from tests.support.anthropic_server import AnthropicCompatServer
from tests.support.openai_server import Faults, ProviderLimits


def tier(root_url, **kw):
    kw = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "batch_poll_interval_s": 0.05, **kw}
    return Tier(name="premium", backend="anthropic", model="claude-test", base_url=root_url,
                api_key_env="SLUICE_TEST_ANTHROPIC_KEY", input_usd_per_1m=3.0, output_usd_per_1m=15.0,
                batch_input_usd_per_1m=1.5, batch_output_usd_per_1m=7.5, **kw)


def requests(n):
    return [Request(f"r{i}", f"question {i} about foxes", "Be brief." if i % 2 else None, 16) for i in range(n)]


def test_messages_answer_each_row_with_usage_under_faults_and_limits(monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_ANTHROPIC_KEY", "sk-ant-test-not-real")
    faults = Faults(rate_429=0.15, rate_500=0.15, retry_after_s=0.02, seed=2)
    rpm, tpm, period = 40, 1500, 1.0
    with AnthropicCompatServer(faults=faults, model="claude-test") as srv:
        t = tier(srv.root_url, rpm=rpm, tpm=tpm, rate_limit_period_s=period, max_retries=4)
        result = make_backend(t).complete(requests(60))
        peak = srv.max_in_window(period)
        got = srv.received
    comps = result.completions
    assert [c.row_id for c in comps] == [f"r{i}" for i in range(60)]
    assert all(c.ok or "attempt(s)" in (c.error or "") for c in comps) and sum(c.ok for c in comps) >= 55
    for i, c in enumerate(comps):
        if c.ok:
            assert c.text == f"answer to: question {i} about foxes" and c.output_tokens == 6
            assert c.input_tokens == len(f"{'Be brief. ' if i % 2 else ''}question {i} about foxes".split())
    assert {r.status for r in got} >= {200, 429, 500}
    by_prompt = {r.body["messages"][0]["content"]: r.body for r in got}
    assert by_prompt["question 1 about foxes"].get("system") == "Be brief."
    assert "system" not in by_prompt["question 0 about foxes"]
    assert peak.requests <= rpm and peak.tokens <= tpm


def test_anthropic_rate_limit_headers_lower_the_client_limit():
    with AnthropicCompatServer(model="claude-test", limits=ProviderLimits(rpm=25, window_s=1.0)) as srv:
        t = tier(srv.root_url, rpm=1000, rate_limit_period_s=1.0, max_retries=5, max_concurrency=4)
        result = AnthropicBackend(t).complete(requests(60))
        got = srv.received
    assert all(c.ok for c in result.completions)
    assert sum(1 for r in got if r.status == 429) <= 8


def test_message_batches_at_batch_prices_with_partial_failures(tmp_path):
    faults = Faults(batch_row_fail_rate=0.1, batch_row_invalid_rate=0.1, batch_expire_fraction=0.2,
                    batch_expire_batches=3, seed=9)
    with AnthropicCompatServer(faults=faults, model="claude-test") as srv:
        t = tier(srv.root_url, batch_api="auto", batch_max_requests=10)
        cat = Catalogue(baseline="premium", tiers=[t])
        part = pa.table({"row_id": [f"r{i}" for i in range(30)], "prompt": [f"q {i} about foxes" for i in range(30)],
                         "system": [None] * 30, "max_tokens": [16] * 30})
        backend = make_backend(t, deadline_s=48 * 3600)
        backend.journal_to(tmp_path / "shard-00000.batches.jsonl")
        answers, billing = answer_partition(part, t, cat, backend)
        batches = [srv.batches[k] for k in sorted(srv.batches)]
        paid = Counter(r.body["messages"][-1]["content"] for r in srv.received if r.status == 200)
    rows = answers.to_pylist()
    assert [r["row_id"] for r in rows] == [f"r{i}" for i in range(30)]
    assert all(b["status"] == "ended" for b in batches) and [b["total"] for b in batches[:3]] == [10, 10, 10]
    # the deadline leaves a whole window: what a batch left unanswered (expired, 5xx) went in a new batch, and
    # nothing a batch had answered (or refused for good) was ever sent again
    settled: set[str] = set()
    for b in batches:
        ids = {e["custom_id"] for e in b["results"]}
        assert not ids & settled
        settled |= {e["custom_id"] for e in b["results"]
                    if e["result"]["type"] != "expired" and "api_error" not in json.dumps(e["result"])}
    resent = [e["custom_id"] for b in batches[3:] for e in b["results"]]
    journaled = BatchJournal(tmp_path / "shard-00000.batches.jsonl").batches()
    assert [b.round for b in journaled][:3] == [0, 0, 0] and all(b.round > 0 for b in journaled[3:])
    assert resent and len(journaled) == len(batches) and billing["batch_api_resubmitted_rows"] == len(resent)
    assert set(paid.values()) == {1}  # no request answered (and billed) twice
    batch_rows = [r for r in rows if r["price_basis"] == "batch" and r["status"] == "ok"]
    assert batch_rows and billing["batch_api_rows"] == len(batch_rows)
    for r in batch_rows:
        assert r["cost_usd"] == pytest.approx((r["input_tokens"] * 1.5 + r["output_tokens"] * 7.5) / 1e6)
        assert r["batch_discount_usd"] == pytest.approx((r["input_tokens"] * 3.0 + r["output_tokens"] * 15.0) / 1e6
                                                        - r["cost_usd"])
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all("invalid_request_error" in r["error"] for r in failed)
    assert len(batch_rows) + len(failed) + sum(r["price_basis"] == "list" for r in rows) == 30
