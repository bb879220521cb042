"""Kill a run between stages, run the same command again: it resumes, sends nothing twice, lands once."""

import duckdb
import pyarrow.parquet as pq
import pytest

import sluice.stages.land
from flows.batch_run import sluice_run

SAMPLE = "data/samples/prompts.parquet"


def decided_requests(runs_dir):
    """Requests the run decided to send: routed rows, plus the review's shadow sample, escalations and retries."""
    return sum(pq.read_table(p).num_rows for pattern in ("*/routed/tier=*/*.parquet", "*/shadow/tier=*.parquet",
                                                          "*/escalated/tier=*.parquet", "*/retry/tier=*.parquet")
               for p in runs_dir.glob(pattern))


def test_a_run_that_died_before_landing_resumes_without_resending(tmp_path, openai_server, api_catalogue,
                                                                   monkeypatch):
    cat = api_catalogue(openai_server.base_url)
    kw = dict(warehouse=str(tmp_path / "wh.duckdb"), catalogue=str(cat), data_dir=str(tmp_path / "data"))

    def crash(*a, **k):
        raise RuntimeError("power cut while landing")

    with monkeypatch.context() as m:
        m.setattr(sluice.stages.land, "land_results", crash)
        state = sluice_run(SAMPLE, return_state=True, **kw)
    assert state.is_failed()
    sent_first = len(openai_server.received)
    pending = decided_requests(tmp_path / "data" / "runs")
    assert sent_first == pending > 0  # every routed row (and shadow sample) was answered once before the crash

    summary = sluice_run(SAMPLE, **kw)
    assert len(openai_server.received) == sent_first  # the resumed run re-sent nothing
    runs = list((tmp_path / "data" / "runs").iterdir())
    assert [r.name for r in runs] == [summary["run_id"]]  # same run, resumed
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        n, cost = con.execute("select count(*), sum(cost_usd) from results").fetchone()
    assert n == pq.read_metadata(SAMPLE).num_rows
    assert cost == pytest.approx(summary["cost_usd"])

    # landed: running the same file again is a new run, not a resume; every answer comes from the cache, free
    sent = len(openai_server.received)
    again = sluice_run(SAMPLE, **kw)
    assert again["run_id"] != summary["run_id"]
    assert len(openai_server.received) == sent
    assert (again["duplicates"], again["cost_usd"]) == (n, 0.0)
    assert again["baseline_cost_usd"] == pytest.approx(summary["baseline_cost_usd"])


def test_a_half_answered_tier_redoes_only_its_unfinished_shards(tmp_path, openai_server, api_catalogue,
                                                                 monkeypatch):
    cat = api_catalogue(openai_server.base_url)
    kw = dict(warehouse=str(tmp_path / "wh.duckdb"), catalogue=str(cat), data_dir=str(tmp_path / "data"))
    monkeypatch.setenv("SLUICE_SHARD_ROWS", "10")
    import sluice.stages.infer.answer

    real = sluice.stages.infer.answer.answer_partition
    calls = {"n": 0}

    def dies_on_third_shard(*a, **k):
        calls["n"] += 1
        if calls["n"] in (3, 4):  # the shard and the task's one retry
            raise RuntimeError("engine died mid-shard")
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(sluice.stages.infer.answer, "answer_partition", dies_on_third_shard)
        state = sluice_run(SAMPLE, return_state=True, **kw)
    assert state.is_failed()
    sent_before = len(openai_server.received)
    summary = sluice_run(SAMPLE, **kw)
    sent_total = len(openai_server.received)
    routed = decided_requests(tmp_path / "data" / "runs")
    assert sent_total == routed  # each request sent exactly once across the crash and the resume
    assert sent_before < routed
    assert summary["failed"] == 0
