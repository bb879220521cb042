"""Batch jobs that survive, as a whole flow: a premium tier answering through the provider's Batch API (the
loopback server's /v1/files and /v1/batches) with `batch_wait = false` submits, journals and ends "waiting on
provider batch" with nothing landed; `collect-batches` leaves it waiting while the batch runs, and lands it once
the batch has ended, without submitting anything again. Every row is paid once, at batch prices, and the batch
discount is its own saving."""

import json
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.batch_run import sluice_run
from flows.collect_batches import collect_batches
from sluice.reports.economics import run_savings, savings_lines
from sluice.runs import read_manifest
from tests.support.crash import child_env, landed, provider_counts, run_once, sluice_cmd
from tests.support.openai_server import Faults, OpenAICompatServer

N = 12


def catalogue(folder, base_url, wait=False):
    (folder / "cheap.parquet").unlink(missing_ok=True)
    pq.write_table(pa.table({"prompt": ["unused"], "response": ["unused"]}), folder / "cheap.parquet")
    path = folder / "tiers.toml"
    path.write_text(
        'baseline = "premium"\n'
        f'[[tiers]]\nname = "cheap"\nbackend = "replay"\nmodel = "cheap-recorded"\n'
        f'answers = "{folder / "cheap.parquet"}"\ninput_usd_per_1m = 0.5\noutput_usd_per_1m = 1.5\n'
        f'[[tiers]]\nname = "premium"\nbackend = "openai"\nmodel = "premium-test"\nbase_url = "{base_url}"\n'
        "input_usd_per_1m = 2.5\noutput_usd_per_1m = 10\nbatch_input_usd_per_1m = 1.25\n"
        f'batch_output_usd_per_1m = 5\nbatch_api = "always"\nbatch_wait = {str(wait).lower()}\n'
        "batch_poll_interval_s = 0.05\n"
        "max_retries = 0\n")
    return path


def test_a_run_that_does_not_wait_ends_waiting_and_collect_batches_lands_it_once(tmp_path):
    data = tmp_path / "questions.parquet"
    prompts = [f"question {i} about the tides of harbour {i}" for i in range(N)]
    pq.write_table(pa.table({"id": [f"q{i}" for i in range(N)], "prompt": [*prompts]}), data)
    wh, data_dir = tmp_path / "wh.duckdb", tmp_path / "data"
    with OpenAICompatServer(model="premium-test", faults=Faults(batch_hold=True)) as srv:
        state = sluice_run(str(data), warehouse=str(wh), catalogue=str(catalogue(tmp_path, srv.base_url)),
                           data_dir=str(data_dir), premium_share=1.0, cascade_share=0.0, shadow_share=0.0,
                           return_state=True)
        waiting = state.result()
        run_dir = data_dir / "runs" / waiting["run_id"]
        # submitted, journaled, and the run says what it waits on: nothing landed, nothing lost
        assert state.is_completed() and state.name == "Waiting" and "waiting on provider batch" in state.message
        assert waiting["status"] == "waiting" and waiting["waiting_on"]["rows"] == N
        manifest = read_manifest(run_dir)
        assert manifest["status"] == "waiting" and manifest["waiting_on"]["batch_ids"] == list(srv.batches)
        assert manifest["resume"]["premium_share"] == 1.0 and "run_id" not in manifest["resume"]
        journal = run_dir / manifest["waiting_on"]["journals"][0]
        assert [json.loads(x)["event"] for x in journal.read_text().splitlines()] == ["submitted"]
        if wh.exists():
            with duckdb.connect(str(wh), read_only=True) as con:
                assert con.execute("SELECT count(*) FROM results").fetchone()[0] == 0

        # the batch is still running: collect-batches polls it and leaves the run waiting
        assert collect_batches(data_dir=str(data_dir)) == [
            {"run_id": waiting["run_id"], "state": "waiting", "running": manifest["waiting_on"]["batch_ids"]}]
        srv.set_faults(Faults())  # the provider finishes the batch
        end = time.monotonic() + 60
        while srv.batches[manifest["waiting_on"]["batch_ids"][0]]["status"] != "completed" and time.monotonic() < end:
            time.sleep(0.02)
        outcomes = collect_batches(data_dir=str(data_dir))
        batches = srv.batches
        paid = [r.body["messages"][-1]["content"] for r in srv.received if r.status == 200]

    assert [(o["run_id"], o["state"], o["rows"]) for o in outcomes] == [(waiting["run_id"], "landed", N)]
    assert len(batches) == 1 and sorted(paid) == sorted(prompts)  # one batch; every request answered once
    assert read_manifest(run_dir)["status"] == "landed" and not collect_batches(data_dir=str(data_dir))
    with duckdb.connect(str(wh), read_only=True) as con:
        rows = con.execute("SELECT status, tier, price_basis, input_tokens, output_tokens, cost_usd, "
                           "batch_discount_usd FROM results").fetchall()
        recorded = con.execute("SELECT tier, kind, batch_id, rows, status, collected_at IS NOT NULL "
                               "FROM provider_batches").fetchall()
        batch_saving, routing = con.execute("SELECT sum(batch_saving_usd), sum(routing_saving_usd) "
                                            "FROM savings_per_row").fetchone()
    assert len(rows) == N and {r[:3] for r in rows} == {("ok", "premium", "batch")}
    for _, _, _, i, o, cost, discount in rows:
        assert cost == pytest.approx((i * 1.25 + o * 5.0) / 1e6)
        assert discount == pytest.approx((i * 2.5 + o * 10.0) / 1e6 - cost)  # list price less the batch price
    assert recorded == [("premium", "first", next(iter(batches)), N, "completed", True)]
    # the discount is its own saving, not routing's: premium at list price would have been the baseline
    assert batch_saving == pytest.approx(sum(r[6] for r in rows)) and routing == pytest.approx(0.0, abs=1e-12)
    savings = run_savings(wh, waiting["run_id"])
    assert savings["batch_saving_usd"] == pytest.approx(batch_saving)
    assert any(line.strip().startswith("provider batch discount") for line in savings_lines(savings))


def test_a_run_killed_while_polling_its_provider_batch_resumes_it_and_pays_once(tmp_path):
    data = tmp_path / "questions.parquet"
    prompts = [f"question {i} about the tides of harbour {i}" for i in range(N)]
    pq.write_table(pa.table({"id": [f"q{i}" for i in range(N)], "prompt": prompts}), data)
    log = tmp_path / "runs.log"
    with OpenAICompatServer(model="premium-test", faults=Faults(batch_hold=True)) as srv:
        cmd = sluice_cmd(data, tmp_path, catalogue(tmp_path, srv.base_url, wait=True),
                         ["--premium-share", "1.0", "--cascade-share", "0", "--shadow-share", "0"])
        env = child_env(tmp_path, shard_rows=4)
        # `sluice run` SIGKILLed while it polls the batch the provider has accepted (and holds in progress)
        _, killed = run_once(cmd, env, log, kill_after=(tmp_path / "data", "batch journaled", 0.5))
        assert killed and [b["status"] for b in srv.batches.values()] == ["in_progress"]
        srv.set_faults(Faults())  # the provider finishes it while nobody is polling
        code, killed = run_once(cmd, env, log)  # the same command again: resumes the run, polls the batch
        assert code == 0 and not killed, log.read_text()[-3000:]
        batches = srv.batches
        answered, resent, _ = provider_counts(srv, 0)
    assert len(batches) == 1 and answered == N and resent == 0  # one submission; every request answered once
    rows, distinct, cost, runs, _ = landed(tmp_path)
    assert (rows, distinct, runs) == (N, N, 1)
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        batch_cost, list_cost, discount = con.execute(
            "SELECT sum((input_tokens * 1.25 + output_tokens * 5.0) / 1e6), "
            "sum((input_tokens * 2.5 + output_tokens * 10.0) / 1e6), sum(batch_discount_usd) FROM results "
            "WHERE price_basis = 'batch' AND status = 'ok'").fetchone()
        recorded = con.execute("SELECT batch_id, rows, status FROM provider_batches").fetchall()
    assert cost == pytest.approx(batch_cost) and discount == pytest.approx(list_cost - batch_cost)  # paid once
    assert recorded == [(next(iter(batches)), N, "completed")]
