"""Scale-out: a real Prefect server, the `infer-shard/gpu` deployment from prefect.yaml, two process workers
on loopback; the self-hosted tier's shards are dispatched as separate flow runs and shared between the workers,
each running its own vLLM engine (the tiny Llama); the API tiers answer on a loopback server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.support.openai_server import Faults, OpenAICompatServer

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).parent / "prefect")
SAMPLE = REPO / "data" / "samples" / "prompts.parquet"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prefect_stack(tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": url,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_WORKER_QUERY_SECONDS": "1",
           "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)}
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = open(tmp_path / f"{name}.log", "ab")
        procs.append(subprocess.Popen([PREFECT, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))

    def cli(*args: str) -> None:
        out = subprocess.run([PREFECT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}"

    try:
        start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port))
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(1)
        cli("work-pool", "create", "gpu", "--type", "process")
        cli("deploy", "--no-prompt", "--name", "gpu")  # only the shard deployment: no schedules start
        for i in range(2):
            start(f"worker{i}", "worker", "start", "--pool", "gpu", "--limit", "1", "--name", f"w{i}")
        yield url
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_two_workers_share_one_batch_and_every_row_lands_once(tmp_path, prefect_stack, monkeypatch, tiny_model_dir,
                                                               test_catalogue):
    """The self-hosted tier (the tiny Llama on vLLM) is split into two shards; each worker starts its own engine,
    answers its shard, and bills its own time. The tier's landed cost is the sum of both workers' billed time."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.batch_run import sluice_run

    monkeypatch.setenv("SLUICE_SHARD_ROWS", "40")
    with OpenAICompatServer(faults=Faults(delay_s=0.01)) as server, \
            temporary_settings(updates={PREFECT_API_URL: prefect_stack}):
        cat = test_catalogue(tiny_model_dir, server.base_url)
        summary = sluice_run(str(SAMPLE), warehouse=str(tmp_path / "wh.duckdb"), catalogue=str(cat),
                             data_dir=str(tmp_path / "data"), dispatch="infer-shard/gpu")

    run_dir = tmp_path / "data" / "runs" / summary["run_id"]
    small_rows = pq.read_metadata(run_dir / "routed" / "tier=small" / "part-0.parquet").num_rows
    bills = [json.loads(p.read_text()) for p in sorted(run_dir.glob("answers/tier=small/shard-*.billing.json"))]
    assert len(bills) == -(-small_rows // 40) >= 2
    workers = {int(b["worker_ppid"]) for b in bills}
    assert os.getpid() not in {int(b["worker_pid"]) for b in bills}  # answered by workers, not the driver
    assert len(workers) == 2  # ... by both of them
    assert all(b["engine_start_s"] > 0 for b in bills)  # each worker started (and billed) its own engine

    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        n, distinct = con.execute("select count(*), count(distinct row_id) from results").fetchone()
        # what was spent on the small tier: its attempts (a row's cost_usd also holds its shadow answer on premium)
        small_cost, answered = con.execute(
            "select sum(cost_usd), count(distinct row_id) from attempts where tier = 'small' and kind = 'first' "
            "and status = 'ok'").fetchone()
        shadow = con.execute("select sum(cost_usd - shadow_cost_usd) from results where tier = 'small'").fetchone()[0]
    assert shadow == pytest.approx(small_cost)  # the rows' own cost, less their shadow answers, is the tier's
    assert n == distinct == pq.read_metadata(SAMPLE).num_rows  # every row landed once
    assert answered == small_rows
    # the tier's cost is both workers' billed time (engine start + generation) at the worker's hourly price
    assert small_cost == pytest.approx(sum(b["billed_seconds"] for b in bills) * 0.36 / 3600)
