"""End to end, as it runs in production: a real Prefect server and process worker on loopback, the deployments
from prefect.yaml, a drop box on S3 (moto's server, real HTTP), API-only tiers on a loopback OpenAI-compatible
server (no vLLM engine), a real DuckDB warehouse. Every process started here is stopped, pass or fail."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BUCKET = "sluice-e2e"

pytest.importorskip("moto.server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api_catalogue(path: Path, base_url: str) -> Path:
    tiers = "".join(
        f'\n[[tiers]]\nname = "{n}"\nbackend = "openai"\nmodel = "{n}-test"\nbase_url = "{base_url}"\n'
        f"max_model_len = 512\ninput_usd_per_1m = {i}\noutput_usd_per_1m = {o}\nmax_retries = 0\n"
        for n, i, o in (("small", 0.05, 0.1), ("mid", 0.2, 0.6), ("premium", 2.5, 10.0))
    )
    path.write_text('baseline = "premium"\n' + tiers)
    return path


class Stack:
    """The processes of a small Prefect installation, stopped (their whole process group) on exit."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.procs: list[subprocess.Popen] = []
        self.timings: list[tuple[str, float]] = []  # printed on failure (and with -s): where the time went

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "ab")
        proc = subprocess.Popen([str(BIN / "prefect"), *args], cwd=REPO, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, timeout: float = 180) -> str:
        t0 = time.monotonic()
        out = subprocess.run([str(BIN / "prefect"), *args], cwd=REPO, env=self.env, capture_output=True,
                             text=True, timeout=timeout)
        self.timings.append((" ".join(args[:2]), time.monotonic() - t0))
        assert out.returncode == 0, f"prefect {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def api(self, path: str, body: dict | None = None, method: str | None = None) -> dict:
        method = method or ("POST" if body is not None else "GET")
        req = urllib.request.Request(self.env["PREFECT_API_URL"] + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        for attempt in range(6):  # a busy SQLite answers 503: retried, as Prefect's own client does
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return json.loads(r.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or attempt == 5:
                    raise
                time.sleep(0.5 * 2**attempt)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)  # the group this test created for it, nothing else
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def logs(self) -> str:
        tails = (f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.tmp.glob("*.log"))
        return ", ".join(f"{k} {v:.1f}s" for k, v in self.timings) + "\n" + "\n".join(tails)


@pytest.fixture
def moto_s3():
    import boto3
    from moto.server import ThreadedMotoServer

    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield url, client
    finally:
        srv.stop()


@pytest.fixture
def stack(tmp_path, moto_s3, openai_server):
    endpoint, _ = moto_s3
    port = _free_port()
    data = tmp_path / "data"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_UI_ENABLED": "false",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # the worker's defaults point at this test too: a scheduled run that slipped in could touch nothing else
        "SLUICE_DROP_URL": f"s3://{BUCKET}/drop",
        "SLUICE_CATALOGUE": str(_api_catalogue(tmp_path / "catalogue.toml", openai_server.base_url)),
        "SLUICE_DATA_DIR": str(data),
        "SLUICE_WAREHOUSE": str(tmp_path / "wh.duckdb"),
    }
    env.pop("SLUICE_HOME", None)  # the pull step must find the checkout by itself
    s = Stack(tmp_path, env)
    try:
        server = s.start("server", "server", "start", "--host", "127.0.0.1", "--port", str(port))
        t0 = deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, "prefect server exited:\n" + s.logs()
            try:
                s.api("/health")
                s.timings.append(("server start", time.monotonic() - t0 + 120))
                break
            except OSError:
                assert time.monotonic() < deadline, "prefect server not healthy in 120 s:\n" + s.logs()
                time.sleep(1)
        yield s
    except BaseException:
        print(s.logs())
        raise
    finally:
        s.stop()


def _trigger_and_work(stack: Stack, params: dict) -> dict:
    """`prefect deployment run`, then a worker that takes the run, runs it, and exits; the run's final state."""
    out = stack.cli("deployment", "run", "process-drop-box/drop-watch", "--params", json.dumps(params))
    run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)
    t0 = time.monotonic()
    worker = stack.start("worker", "worker", "start", "--pool", "gpu", "--run-once")
    try:
        worker.wait(timeout=300)
        stack.timings.append(("worker --run-once", time.monotonic() - t0))
    except subprocess.TimeoutExpired:
        pytest.fail("worker did not finish the run in 300 s:\n" + stack.logs())
    run = stack.api(f"/flow_runs/{run_id}")
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{stack.logs()}"
    return run


def test_nightly_drop_box_on_a_prefect_server_and_s3(tmp_path, stack, moto_s3, openai_server, write_parquet):
    _, s3 = moto_s3
    env = stack.env
    stack.cli("work-pool", "create", "cpu", "--type", "process")
    stack.cli("work-pool", "create", "gpu", "--type", "process")
    stack.cli("deploy", "--no-prompt", "--all")
    deployments = {d["name"]: d for d in stack.api("/deployments/filter", {})}
    assert {"run-dataset", "nightly", "drop-watch"} <= set(deployments)  # (and any others prefect.yaml holds)
    assert deployments["nightly"]["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
    assert deployments["drop-watch"]["global_concurrency_limit"]["limit"] == 1
    assert deployments["drop-watch"]["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
    # the pull step is portable: no folder of this machine is baked in
    assert deployments["nightly"]["pull_steps"] == [{"sluice.dropbox.workspace.enter_checkout": {}}]
    # only the runs this test starts (what `prefect deployment schedule pause --all` does, without a CLI start)
    for d in deployments.values():
        for sched in d["schedules"]:
            stack.api(f"/deployments/{d['id']}/schedules/{sched['id']}", {"active": False}, method="PATCH")

    # two good files (one through `sluice submit`, as a user would) and a corrupt one
    src = tmp_path / "src"
    src.mkdir()
    write_parquet(src / "alpha.parquet", {"id": ["a1", "a2"], "prompt": ["What is 2+2?", "Name a colour."]})
    write_parquet(src / "beta.parquet", {"prompt": ["Translate 'cat' to French.", "word " * 600, None]})
    (src / "broken.parquet").write_bytes(b"PAR1\x00garbage, not a parquet footer")
    # alpha with its own options (a manifest, alpha.sluice.json, uploaded before it): a budget and chargeback tags
    submitted = subprocess.run([str(BIN / "sluice"), "submit", str(src / "alpha.parquet"), "--no-notify",
                                "--budget-usd", "0.01", "--tag", "team=search", "--tag", "project=x"],
                               env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    assert f"s3://{BUCKET}/drop/incoming/alpha.sluice.json" in " ".join(submitted.stdout.split())
    assert f"s3://{BUCKET}/drop/results/alpha/<run_id>/results.parquet" in " ".join(submitted.stdout.split())
    for name in ("beta.parquet", "broken.parquet"):
        s3.upload_file(str(src / name), BUCKET, f"drop/incoming/{name}")

    warehouse = tmp_path / "warehouse.duckdb"
    params = {"drop": f"s3://{BUCKET}/drop", "warehouse": str(warehouse), "catalogue": env["SLUICE_CATALOGUE"],
              "data_dir": str(tmp_path / "run-data")}
    first = _trigger_and_work(stack, params)

    def keys(prefix: str) -> list[str]:
        got = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"drop/{prefix}").get("Contents", [])
        return sorted(o["Key"][len("drop/"):] for o in got)

    assert keys("incoming/") == [] and keys("processing/") == []
    done = keys("done/")
    assert sorted(k.rsplit("/", 1)[1] for k in done) == ["alpha.parquet", "alpha.sluice.json", "beta.parquet"]
    [broken, report_key] = keys("failed/")
    assert broken.endswith("/broken.parquet") and report_key == broken + ".error.json"
    report = json.loads(s3.get_object(Bucket=BUCKET, Key="drop/" + report_key)["Body"].read())
    assert "broken.parquet: not a readable Parquet file" in report["reason"]

    con = duckdb.connect(str(warehouse), read_only=True)
    landed = con.execute("select dataset, row_id, status, error from results order by dataset, row_id").fetchall()
    con.close()
    assert [(d, r, s) for d, r, s, _ in landed] == [
        ("alpha", "a1", "ok"), ("alpha", "a2", "ok"),
        ("beta", "0", "ok"), ("beta", "1", "quarantined"), ("beta", "2", "quarantined"),
    ]
    assert "prompt too long" in landed[3][3] and "prompt is null" in landed[4][3]
    # alpha's manifest was honoured: routed under its budget and landed within it, every row tagged, options recorded
    con = duckdb.connect(str(warehouse), read_only=True)
    alpha = con.execute("select cost_usd, tags, submission from runs where dataset = 'alpha'").fetchone()
    alpha_rows = con.execute("select route_reason, tags from results where dataset = 'alpha'").fetchall()
    beta_tags = con.execute("select tags from runs where dataset = 'beta'").fetchone()[0]
    con.close()
    assert 0 < alpha[0] <= 0.01 and json.loads(alpha[1]) == {"project": "x", "team": "search"}
    assert json.loads(alpha[2]) == {"budget_usd": 0.01, "tags": {"project": "x", "team": "search"},
                                    "manifest": "alpha.sluice.json"}
    assert all("budget $0.01" in reason and json.loads(tags) == {"project": "x", "team": "search"}
               for reason, tags in alpha_rows)
    assert beta_tags is None  # beta came without options: the deployment's defaults
    results = keys("results/")
    assert [k.split("/")[1] for k in results] == ["alpha", "beta"]
    for k in results:
        s3.download_file(BUCKET, "drop/" + k, str(tmp_path / "r.parquet"))
        assert pq.read_table(tmp_path / "r.parquet").num_rows == (2 if "/alpha/" in k else 3)
    assert len(openai_server.received) == 3  # only the three answerable rows were sent

    # a second trigger finds nothing to do: nothing lands twice, nothing is sent twice
    second = _trigger_and_work(stack, params)
    assert keys("done/") == done and keys("results/") == results and keys("incoming/") == []
    con = duckdb.connect(str(warehouse), read_only=True)
    assert con.execute("select count(*), count(distinct run_id) from results").fetchone() == (5, 2)
    con.close()
    assert len(openai_server.received) == 3

    # `sluice submit` with a server announces the file: drop-watch's event trigger schedules a pass for that box
    write_parquet(src / "gamma.parquet", {"prompt": ["Say hi."]})
    t0 = time.monotonic()
    submitted = subprocess.run([str(BIN / "sluice"), "submit", str(src / "gamma.parquet")], env=env,
                               capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0 and "drop-watch notified" in submitted.stdout, submitted.stderr
    watch_id = deployments["drop-watch"]["id"]
    triggered: list = []
    while not triggered and time.monotonic() - t0 < 90:
        time.sleep(1)
        runs = stack.api("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [watch_id]}}})
        triggered = [r for r in runs if r["id"] not in (first["id"], second["id"])]
    stack.timings.append(("event -> flow run", time.monotonic() - t0))
    assert triggered, "no flow run from the sluice.drop.submitted event:\n" + stack.logs()
    assert triggered[0]["parameters"]["drop"] == f"s3://{BUCKET}/drop"
    print(stack.logs().split("\n")[0])
