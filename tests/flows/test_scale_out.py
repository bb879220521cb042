"""Scale-out: a real Prefect server, the `infer-shard/gpu` deployment from prefect.yaml, two process workers
on loopback; the self-hosted tiers' shards are dispatched as separate flow runs and shared between the workers,
each running its own vLLM engine (the tiny Llama) and keeping it warm for the next shard; follow-up passes are
dispatched like the first; the API tier answers on a loopback server."""

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
        _wait_for_workers(url, {"w0", "w1"}, tmp_path)  # both polling before anything is dispatched
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


def _wait_for_workers(url: str, names: set[str], logs: Path, timeout_s: float = 180) -> None:
    """Until every named worker has registered with the pool (its first heartbeat)."""
    deadline = time.monotonic() + timeout_s
    while True:
        request = urllib.request.Request(f"{url}/work_pools/gpu/workers/filter", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            online = {w["name"] for w in json.loads(response.read())}
        if names <= online:
            return
        assert time.monotonic() < deadline, f"workers online: {online}; " + "".join(
            p.read_text()[-1000:] for p in sorted(logs.glob("worker*.log")))
        time.sleep(1)


def _submitted_runs(logs: Path, worker: str) -> int:
    """How many flow runs the worker took from the pool (its own log)."""
    text = " ".join((logs / f"worker{worker[1:]}.log").read_text().split())  # the console may wrap long lines
    return text.count(f"Worker '{worker}' submitting flow run")


def _two_engine_tiers_catalogue(path: Path, model: Path, base_url: str) -> Path:
    """small and mid both on vLLM (the tiny Llama, one engine's settings; small gives logprobs, so the cascade
    escalates its least confident answers to mid), premium on the loopback API."""
    vllm = f'backend = "vllm"\nmodel = "{model}"\ndtype = "float32"\nworker = "cpu"\nmax_model_len = 1024\n'
    path.write_text(f"""
baseline = "premium"
[workers.cpu]
usd_per_hour = 0.36
[[tiers]]
name = "small"
{vllm}logprobs = true
[[tiers]]
name = "mid"
{vllm}
[[tiers]]
name = "premium"
backend = "openai"
model = "premium-test"
base_url = "{base_url}"
api_key_env = "SLUICE_TEST_PREMIUM_KEY"
input_usd_per_1m = 2.50
output_usd_per_1m = 10.00
""")
    return path


def test_two_workers_share_one_batch_and_every_row_lands_once(tmp_path, prefect_stack, monkeypatch, tiny_model_dir):
    """The self-hosted tier (the tiny Llama on vLLM) is split into shards dispatched as flow runs; each worker
    starts its engine once and, while it is warm, goes on to the shards nobody has started (the runs dispatched
    for those skip them), answers and bills its own time. The tier's landed cost is the sum of both workers'
    billed time. The cascade's escalations to mid (self-hosted too) are dispatched to the workers like the first
    pass."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.batch_run import sluice_run

    monkeypatch.setenv("SLUICE_SHARD_ROWS", "20")
    monkeypatch.setenv("SLUICE_TEST_PREMIUM_KEY", "sk-test-scale")
    with OpenAICompatServer(faults=Faults(delay_s=0.01)) as server, \
            temporary_settings(updates={PREFECT_API_URL: prefect_stack}):
        cat = _two_engine_tiers_catalogue(tmp_path / "catalogue.toml", tiny_model_dir, server.base_url)
        summary = sluice_run(str(SAMPLE), warehouse=str(tmp_path / "wh.duckdb"), catalogue=str(cat),
                             data_dir=str(tmp_path / "data"), dispatch="infer-shard/gpu")

    run_dir = tmp_path / "data" / "runs" / summary["run_id"]
    small_rows = pq.read_metadata(run_dir / "routed" / "tier=small" / "part-0.parquet").num_rows
    bills = [json.loads(p.read_text()) for p in sorted(run_dir.glob("answers/tier=small/shard-*.billing.json"))]
    assert len(bills) == -(-small_rows // 20) >= 4
    processes = {int(b["worker_pid"]) for b in bills}
    assert os.getpid() not in processes  # answered by workers, not the driver
    # the pool shared the dispatched runs between both workers (each runs one at a time, and the first is busy
    # starting its engine); how many shards each one *answered* depends on which engine was warm first: a worker
    # whose run finds its shard taken skips it, so one fast worker may answer them all
    assert _submitted_runs(tmp_path, "w0") >= 1 and _submitted_runs(tmp_path, "w1") >= 1
    assert 1 <= len({int(b["worker_ppid"]) for b in bills}) <= 2
    # one engine start per worker process that answered, not one per shard: a warm engine takes the next shards
    assert sum(1 for b in bills if b["engine_start_s"] > 0) == len(processes) < len(bills)
    # the follow-up pass went to the workers too: mid's escalations answered in worker processes
    escalated = [json.loads(p.read_text()) for p in run_dir.glob("answers/escalation/tier=mid/shard-*.billing.json")]
    assert escalated and all(int(b["worker_pid"]) != os.getpid() for b in escalated)

    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        n, distinct = con.execute("select count(*), count(distinct row_id) from results").fetchone()
        # what was spent on the small tier's routed rows: their first attempts
        small_cost, answered = con.execute(
            "select sum(cost_usd), count(distinct row_id) from attempts where tier = 'small' and kind = 'first' "
            "and status = 'ok'").fetchone()
        escalation_cost, escalation_rows = con.execute(
            "select sum(cost_usd), count(*) from attempts where kind = 'escalation' and tier = 'mid'").fetchone()
    assert n == distinct == pq.read_metadata(SAMPLE).num_rows  # every row landed once
    assert answered == small_rows
    # the tier's cost is both workers' billed time (engine start + generation) at the worker's hourly price
    assert small_cost == pytest.approx(sum(b["billed_seconds"] for b in bills) * 0.36 / 3600)
    assert escalation_rows == sum(int(b["rows"]) for b in escalated)
    assert escalation_cost == pytest.approx(sum(b["billed_seconds"] for b in escalated) * 0.36 / 3600)


def test_a_tier_validation_is_answered_on_the_pool(tmp_path, prefect_stack, monkeypatch):
    """Scale-out validates a tier on the workers too: the tier (recorded GPT-4 answers standing in for a quantised
    GPT-4) and its reference answer the validation sample as dispatched passes (replay tiers, sent to the pool with
    dispatch_api_tiers), kept apart from the rows' attempts; the decision is the one the driver takes in-process."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.batch_run import sluice_run
    from tests.flows.test_tier_validation_flow import SAMPLES, catalogue

    monkeypatch.setenv("SLUICE_SHARD_ROWS", "20")
    with temporary_settings(updates={PREFECT_API_URL: prefect_stack}):
        summary = sluice_run(f"{SAMPLES}/gsm8k.parquet", warehouse=str(tmp_path / "wh.duckdb"),
                             catalogue=str(catalogue(tmp_path, SAMPLES / "gsm8k_gpt4.parquet")),
                             data_dir=str(tmp_path / "data"), grader="number", use_cache=False, premium_share=0.0,
                             shadow_share=0.0, cascade_share=0.0, dispatch="infer-shard/gpu", dispatch_api_tiers=True)

    sample_dir = tmp_path / "data" / "runs" / summary["run_id"] / "validation" / "cheap"
    for tier in ("cheap", "premium"):
        bills = [json.loads(p.read_text()) for p in sorted(sample_dir.glob(f"tier={tier}/shard-*.billing.json"))]
        assert len(bills) == 3  # 60 sampled rows in shards of 20
        assert os.getpid() not in {int(b["worker_pid"]) for b in bills}  # answered by the workers
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        [(passed, detail)] = con.execute("SELECT passed, detail FROM validations WHERE row_id = '(decision)'"
                                         ).fetchall()
        attempts = con.execute("SELECT kind, tier, count(*) FROM attempts GROUP BY ALL ORDER BY ALL").fetchall()
    numbers = json.loads(detail)
    assert passed and (numbers["n"], numbers["tier_right"], numbers["reference_right"]) == (60, 54, 54)
    assert attempts == [("first", "cheap", 60)]  # the validation's answers are not the rows' attempts
