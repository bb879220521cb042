"""The OpenAI Batch API path against the loopback server's /v1/files and /v1/batches."""

import json

import pyarrow as pa
import pytest

from models.backends import Request, make_backend
from models.backends.openai_http import OpenAIBackend
from models.backends.provider_batch import split_by_limits, use_batch_api
from models.catalogue import Catalogue, Tier
from sluice.stages.infer.answer import answer_partition
from tests.support.openai_server import Faults, OpenAICompatServer


def tier(base_url, **kw):
    kw = {"batch_api": "auto", "batch_poll_interval_s": 0.05, "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **kw}
    return Tier(name="premium", backend="openai", model="premium-test", base_url=base_url,
                input_usd_per_1m=2.5, output_usd_per_1m=10.0, batch_input_usd_per_1m=1.25,
                batch_output_usd_per_1m=5.0, **kw)


def partition(n):
    return pa.table({"row_id": [f"r{i}" for i in range(n)], "prompt": [f"question {i} about owls" for i in range(n)],
                     "system": [None] * n, "max_tokens": [16] * n})


def requests(n):
    return [Request(f"r{i}", f"question {i} about owls", None, 16) for i in range(n)]


def test_a_run_with_a_deadline_uses_the_batch_endpoints_at_batch_prices():
    with OpenAICompatServer(model="premium-test") as srv:
        t = tier(srv.base_url, batch_max_requests=7)  # forces 20 rows into 3 files
        cat = Catalogue(baseline="premium", tiers=[t])
        backend = make_backend(t, deadline_s=30 * 3600)  # the run can wait longer than the 24 h window
        answers, billing = answer_partition(partition(20), t, cat, backend)
        batches, received = srv.batches, srv.received
    rows = answers.to_pylist()
    assert [r["row_id"] for r in rows] == [f"r{i}" for i in range(20)]
    assert all(r["status"] == "ok" and r["price_basis"] == "batch" for r in rows)
    assert all(r["response"] == f"answer to: question {r['row_id'][1:]} about owls" for r in rows)
    for r in rows:
        assert r["cost_usd"] == pytest.approx((r["input_tokens"] * 1.25 + r["output_tokens"] * 5.0) / 1e6)
        assert r["baseline_cost_usd"] == pytest.approx(2 * r["cost_usd"])  # list price: batch is -50%
    assert len(batches) == 3 and sorted(b["total"] for b in batches.values()) == [6, 7, 7]
    assert all(b["status"] == "completed" and b["endpoint"] == "/v1/chat/completions" for b in batches.values())
    assert not [r for r in received if r.endpoint == "chat"]  # nothing went through the real-time endpoint
    assert billing["batch_api_batches"] == 3 and billing["batch_api_rows"] == 20


def test_files_are_split_by_bytes_and_an_oversized_request_goes_in_real_time():
    chunks, too_big = split_by_limits([("a", 40), ("b", 40), ("c", 30), ("d", 200), ("e", 10)], 10, 100)
    assert chunks == [["a", "b"], ["c", "e"]] and too_big == ["d"]

    reqs = requests(6) + [Request("big", "word " * 400, None, 16)]
    with OpenAICompatServer(model="premium-test") as srv:
        result = OpenAIBackend(tier(srv.base_url, batch_api="always", batch_max_bytes=400)).complete(reqs)
        files = [f for f in srv.files.values() if f["purpose"] == "batch"]
        chat = [r for r in srv.received if r.endpoint == "chat"]
    assert all(c.ok for c in result.completions)
    assert all(len(f["data"]) <= 400 for f in files) and len(files) >= 3
    assert sum(len(f["data"].splitlines()) for f in files) == 6
    assert [c.row_id for c in result.completions if not c.via_batch_api] == ["big"]
    assert len(chat) == 1


def test_partial_failures_and_expiry_near_the_deadline_go_in_real_time_and_land_every_row_once():
    faults = Faults(batch_row_fail_rate=0.2, batch_row_invalid_rate=0.1, batch_expire_fraction=0.25, seed=5)
    with OpenAICompatServer(model="premium-test", faults=faults) as srv:
        # an hour left: less than the provider's 24 h window, so no second batch; real time at list prices
        result = OpenAIBackend(tier(srv.base_url, batch_api="always"), deadline_s=3600).complete(requests(40))
        batch = next(iter(srv.batches.values()))
        errors = [json.loads(x) for x in srv.files[batch["error_file_id"]]["data"].splitlines()]
    comps = result.completions
    assert [c.row_id for c in comps] == [f"r{i}" for i in range(40)]
    assert batch["status"] == "expired"
    expired = {e["custom_id"] for e in errors if (e.get("error") or {}).get("code") == "batch_expired"}
    invalid = {e["custom_id"] for e in errors if (e.get("response") or {}).get("status_code") == 400}
    transient = {e["custom_id"] for e in errors if (e.get("response") or {}).get("status_code") == 500}
    assert len(expired) == 10 and invalid and transient
    by_id = {c.row_id: c for c in comps}
    # permanent errors land as failed with the provider's reason; they are not sent again
    assert all(not by_id[i].ok and "HTTP 400" in by_id[i].error for i in invalid)
    # expired and transiently failed rows are answered in real time, at list prices
    assert all(by_id[i].ok and not by_id[i].via_batch_api for i in expired | transient)
    assert all(c.ok and c.via_batch_api for c in comps if c.row_id not in expired | transient | invalid)


def test_a_batch_past_the_deadline_is_cancelled_and_its_rows_answered_in_real_time():
    with OpenAICompatServer(model="premium-test", faults=Faults(batch_delay_s=30)) as srv:
        backend = OpenAIBackend(tier(srv.base_url, batch_api="always"), deadline_s=0.3)
        result = backend.complete(requests(5))
        batches = srv.batches
    assert [b["status"] for b in batches.values()] == ["cancelled"]
    assert all(c.ok and not c.via_batch_api for c in result.completions)
    assert result.details["batch_api_realtime_fallback_rows"] == 5


def test_auto_uses_the_batch_api_only_when_the_deadline_leaves_the_whole_window():
    t = tier("http://x")
    assert use_batch_api(t, 25 * 3600) and not use_batch_api(t, 2 * 3600) and not use_batch_api(t, None)
    assert use_batch_api(tier("http://x", deadline_h=24), None)
    assert not use_batch_api(tier("http://x", batch_api="off", deadline_h=48), None)
    with pytest.raises(ValueError, match="needs batch_input_usd_per_1m"):
        Tier(name="p", backend="openai", model="m", base_url="u", input_usd_per_1m=1, output_usd_per_1m=1,
             batch_api="auto")


def test_a_run_deadline_reaches_every_api_tier_of_the_catalogue():
    t = tier("http://x")
    cat = Catalogue(baseline="premium", tiers=[t]).with_run_deadline(30)
    assert cat.tier("premium").deadline_h == 30 and use_batch_api(cat.tier("premium"), None)
    assert not use_batch_api(Catalogue(baseline="premium", tiers=[t]).with_run_deadline(3).tier("premium"), None)
