"""Provider batches that survive: journaled the moment the provider accepts them, adopted (never re-submitted) by
the next call for the same rows, resubmitted only for the rows a batch left unanswered, and waited on without
holding a process (`batch_wait = false`). Against the loopback server's /v1/files and /v1/batches."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from models.backends import BatchJournal, ProviderBatchPending, Request
from models.backends.batch_loop import batches_running
from models.backends.openai_http import OpenAIBackend
from models.catalogue import Catalogue, Tier
from sluice.stages.infer.answer import answer_partition
from tests.support.openai_server import Faults, OpenAICompatServer

KEY = "sk-test-journal-secret-1234"
ROOT = Path(__file__).resolve().parents[3]


def tier(base_url, **kw):
    kw = {"batch_api": "always", "batch_poll_interval_s": 0.05, "backoff_initial_s": 0.01, "backoff_max_s": 0.05,
          **kw}
    return Tier(name="premium", backend="openai", model="premium-test", base_url=base_url,
                api_key_env="SLUICE_TEST_BATCH_KEY", input_usd_per_1m=2.5, output_usd_per_1m=10.0,
                batch_input_usd_per_1m=1.25, batch_output_usd_per_1m=5.0, **kw)


def requests(n):
    return [Request(f"r{i}", f"question {i} about owls", None, 16) for i in range(n)]


def partition(n):
    return pa.table({"row_id": [f"r{i}" for i in range(n)], "prompt": [f"question {i} about owls" for i in range(n)],
                     "system": [None] * n, "max_tokens": [16] * n})


def answered_in_batches(srv) -> Counter:
    """How many times the provider answered each question inside a batch (what it bills)."""
    return Counter(r.body["messages"][-1]["content"] for r in srv.received if r.endpoint == "batch" and r.status == 200)


def input_rows(srv, batch) -> list[str]:
    return [json.loads(x)["custom_id"] for x in srv.files[batch["input_file_id"]]["data"].decode().splitlines()]


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv("SLUICE_TEST_BATCH_KEY", KEY)


def test_an_expired_batch_resubmits_only_its_missing_rows_as_a_journaled_batch(tmp_path):
    journal = tmp_path / "shard-00000.batches.jsonl"
    with OpenAICompatServer(model="premium-test", faults=Faults(batch_expire_fraction=0.25,
                                                                 batch_expire_batches=1)) as srv:
        backend = OpenAIBackend(tier(srv.base_url), deadline_s=30 * 3600)  # the deadline leaves a whole window
        backend.journal_to(journal)
        result = backend.complete(requests(40))
        first, second = (srv.batches[k] for k in sorted(srv.batches))
        rows = input_rows(srv, first), input_rows(srv, second)
        paid = answered_in_batches(srv)
        chat = [r for r in srv.received if r.endpoint == "chat"]
    assert first["status"] == "expired" and second["status"] == "completed"
    assert rows == ([f"r{i}" for i in range(40)], [f"r{i}" for i in range(30, 40)])  # only the 10 that expired
    assert all(c.ok and c.via_batch_api for c in result.completions) and not chat
    assert len(paid) == 40 and set(paid.values()) == {1}  # each request answered (and billed) once
    assert result.details["batch_api_resubmitted_rows"] == 10
    assert result.details["batch_api_realtime_fallback_rows"] == 0
    got = BatchJournal(journal).batches()
    assert [(b.round, len(b.rows), b.status) for b in got] == [(0, 40, "expired"), (1, 10, "completed")]
    assert all(b.collected_at for b in got) and KEY not in journal.read_text()


KILLED_CHILD = """
import sys
from pathlib import Path
from models.backends import Request
from models.backends.openai_http import OpenAIBackend
from tests.models.backends.test_batch_journal import tier, requests
backend = OpenAIBackend(tier(sys.argv[1]), deadline_s=30 * 3600)
backend.journal_to(Path(sys.argv[2]))
backend.complete(requests(12))  # polls the held batch until it is killed
"""


def test_a_process_killed_while_polling_resumes_the_journaled_batch_and_pays_once(tmp_path):
    journal = tmp_path / "shard-00000.batches.jsonl"
    with OpenAICompatServer(model="premium-test", faults=Faults(batch_hold=True)) as srv:
        child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, srv.base_url, str(journal)], cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
        try:
            end = time.monotonic() + 120
            while not (journal.is_file() and BatchJournal(journal).batches()) and time.monotonic() < end:
                assert child.poll() is None, "the child exited before journaling its batch"
                time.sleep(0.05)
        finally:
            os.killpg(child.pid, signal.SIGKILL)  # mid-poll: the batch is accepted, its id only on disk
            child.wait()
        assert len(srv.batches) == 1 and next(iter(srv.batches.values()))["status"] == "in_progress"

        srv.set_faults(Faults())  # the provider finishes the batch
        resumed = OpenAIBackend(tier(srv.base_url), deadline_s=30 * 3600)
        resumed.journal_to(journal)
        cat = Catalogue(baseline="premium", tiers=[resumed.tier])
        answers, billing = answer_partition(partition(12), resumed.tier, cat, resumed)
        batches, paid = srv.batches, answered_in_batches(srv)
    assert len(batches) == 1  # adopted, not submitted again
    assert len(paid) == 12 and set(paid.values()) == {1}
    rows = answers.to_pylist()
    assert all(r["status"] == "ok" and r["price_basis"] == "batch" for r in rows)
    assert billing["batch_api_batches_resumed"] == 1 and billing["batch_api_rows"] == 12
    for r in rows:  # paid once, at batch prices; the discount is list price less that
        assert r["cost_usd"] == pytest.approx((r["input_tokens"] * 1.25 + r["output_tokens"] * 5.0) / 1e6)
        list_usd = (r["input_tokens"] * 2.5 + r["output_tokens"] * 10.0) / 1e6
        assert r["batch_discount_usd"] == pytest.approx(list_usd - r["cost_usd"])
    assert billing["batch_discount_usd"] == pytest.approx(sum(r["batch_discount_usd"] for r in rows))
    assert KEY not in journal.read_text()


def test_a_tier_that_does_not_wait_submits_journals_and_returns_then_collects_without_resubmitting(tmp_path):
    journal = tmp_path / "shard-00000.batches.jsonl"
    with OpenAICompatServer(model="premium-test", faults=Faults(batch_hold=True)) as srv:
        t = tier(srv.base_url, batch_wait=False)
        backend = OpenAIBackend(t, deadline_s=30 * 3600)
        backend.journal_to(journal)
        with pytest.raises(ProviderBatchPending) as waiting:
            backend.complete(requests(8))
        assert waiting.value.rows == 8 and waiting.value.journals == [journal]
        assert batches_running(backend, journal) == waiting.value.batch_ids  # still in progress: wait again
        with pytest.raises(ProviderBatchPending):
            backend.journal_to(journal)
            backend.complete(requests(8))  # polled once, not submitted again

        srv.set_faults(Faults())
        end = time.monotonic() + 60
        while batches_running(backend, journal) and time.monotonic() < end:
            time.sleep(0.05)
        backend.journal_to(journal)
        result = backend.complete(requests(8))
        batches, paid = srv.batches, answered_in_batches(srv)
    assert len(batches) == 1 and len(paid) == 8 and set(paid.values()) == {1}
    assert all(c.ok and c.via_batch_api for c in result.completions)
    assert [b.status for b in BatchJournal(journal).batches()] == ["completed"]


def test_a_torn_last_line_is_skipped_and_changed_requests_are_not_adopted(tmp_path):
    journal = BatchJournal(tmp_path / "j.jsonl")
    journal.submitted("b1", "premium", "openai", 0, ["r0", "r1"], ["h0", "h1"], deadline_at=1e12)
    with open(journal.path, "a") as f:
        f.write('{"event": "submitted", "batch_id": "b2", "ti')  # killed mid-write
    assert [b.batch_id for b in journal.batches()] == ["b1"] and journal.deadline_at() == 1e12

    with OpenAICompatServer(model="premium-test") as srv:
        backend = OpenAIBackend(tier(srv.base_url), deadline_s=30 * 3600)
        backend.journal_to(journal.path)  # b1's hashes are not of these requests: nothing is adopted
        result = backend.complete(requests(2))
        batches = srv.batches
    assert len(batches) == 1 and all(c.ok and c.via_batch_api for c in result.completions)
    assert result.details["batch_api_batches_resumed"] == 0
    assert [b.batch_id for b in journal.batches()] == ["b1", *batches]  # journaled on a line of its own
