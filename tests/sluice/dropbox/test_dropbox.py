"""The drop box's claim protocol, on both stores: a local folder, and S3 served by moto on loopback (real HTTP,
real conditional writes)."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter

import pytest

from sluice.dropbox import Claim, ClaimLost, Skipped, open_drop_box


@pytest.fixture(scope="module")
def moto_endpoint():
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    srv = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="sluice-drop")
    yield url, client
    srv.stop()


@pytest.fixture(params=["local", "s3"])
def box(request, tmp_path):
    if request.param == "local":
        return open_drop_box(tmp_path / "drop")
    url, client = request.getfixturevalue("moto_endpoint")
    from sluice.dropbox.s3 import S3DropBox

    return S3DropBox("sluice-drop", f"t-{uuid.uuid4().hex[:8]}/drop", client=client)


def _submit(box, tmp_path, name: str, data: bytes) -> str:
    src = tmp_path / f"src-{uuid.uuid4().hex[:6]}"
    src.write_bytes(data)
    return box.submit(src, name)


def _keys(box, prefix):
    return [o.key for o in box.list(prefix)]


def test_claim_moves_to_processing_and_finish_files_it_once(box, tmp_path):
    _submit(box, tmp_path, "a.parquet", b"aaa")
    [obj] = box.incoming()
    claim = box.claim(obj, "run-a")
    assert isinstance(claim, Claim) and claim.run_id == "run-a"
    assert box.incoming() == []  # claimed objects leave incoming/ at once
    assert "processing/run-a/a.parquet" in _keys(box, "processing/")
    dest = box.finish(claim, ok=True, report={"dataset": "a"})
    assert dest == "done/run-a/a.parquet" and _keys(box, "done/") == [dest]
    assert _keys(box, "processing/") == []
    entry, _ = box.read_entry(f"claims/{obj.claim_id}.json")
    assert entry["state"] == "done" and entry["outcome_key"] == dest

    # the same bytes submitted again are never run twice: the claim is refused, and `reject` files them away
    _submit(box, tmp_path, "a.parquet", b"aaa")
    [again] = box.incoming()
    skipped = box.claim(again, "run-b")
    assert isinstance(skipped, Skipped) and "already processed by run run-a" in skipped.reason
    rejected = box.reject(again, "run-b", skipped.reason)
    assert rejected == "failed/run-b/a.parquet" and box.incoming() == []
    # different bytes under the same name are a new object
    _submit(box, tmp_path, "a.parquet", b"changed")
    assert isinstance(box.claim(box.incoming()[0], "run-c"), Claim)


def test_failed_file_gets_a_json_report_and_may_be_resubmitted(box, tmp_path):
    _submit(box, tmp_path, "bad.parquet", b"not parquet")
    claim = box.claim(box.incoming()[0], "run-x")
    dest = box.finish(claim, ok=False, report={"reason": "bad.parquet: not a readable Parquet file"})
    assert dest == "failed/run-x/bad.parquet"
    report_path = tmp_path / "report.json"
    box.download(dest + ".error.json", report_path)
    report = json.loads(report_path.read_text())
    assert report["state"] == "failed" and "not a readable Parquet" in report["reason"]
    # a failed object was not processed: the same bytes may try again, as a fresh run
    _submit(box, tmp_path, "bad.parquet", b"not parquet")
    retry = box.claim(box.incoming()[0], "run-y")
    assert isinstance(retry, Claim) and retry.run_id == "run-y" and retry.entry["previous_run_id"] == "run-x"


def test_racing_claimers_each_file_claimed_exactly_once(box, tmp_path):
    names = [f"f{i}.parquet" for i in range(6)]
    for n in names:
        _submit(box, tmp_path, n, n.encode() * 10)
    won: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            start.wait()
            for obj in box.incoming():  # every worker sees (and races for) every file
                got = box.claim(obj, f"run-w{w}-{obj.name}")
                if isinstance(got, Claim):
                    box.finish(got, ok=True, report={})
                    with lock:
                        won.append(obj.name)
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Counter(won) == Counter(names)  # each file exactly once
    assert box.incoming() == [] and len(_keys(box, "done/")) == len(names)


def test_a_crashed_runs_claim_is_recovered_with_its_run_id(box, tmp_path):
    _submit(box, tmp_path, "c.parquet", b"ccc")
    dead = box.claim(box.incoming()[0], "run-dead")
    assert isinstance(dead, Claim)  # ...and its process dies here, before finishing
    assert box.recover_stale(stale_after_s=3600) == []  # a fresh heartbeat is left alone
    assert box.recover_stale(stale_after_s=0, limit=0) == []  # only as many as the caller will process now
    [alive] = box.recover_stale(stale_after_s=0)
    assert alive.recovered and alive.run_id == "run-dead" and alive.working_key == dead.working_key
    assert box.recover_stale(stale_after_s=3600) == []  # taken over: not offered twice
    with pytest.raises(ClaimLost):  # the presumed-dead run cannot finish or heartbeat any more
        box.heartbeat(dead)
    box.heartbeat(alive)
    assert box.finish(alive, ok=True, report={}) == "done/run-dead/c.parquet"
    assert _keys(box, "processing/") == [] and box.incoming() == []


def test_a_run_that_died_before_copying_is_recovered_from_incoming(box, tmp_path):
    _submit(box, tmp_path, "d.parquet", b"ddd")
    [obj] = box.incoming()
    # the ledger entry was written, then the run died: the object is still in incoming/
    now = "2020-01-01T00:00:00+00:00"
    box.create_entry(f"claims/{obj.claim_id}.json", {
        "claim_id": obj.claim_id, "key": obj.key, "etag": obj.etag, "size": obj.size, "state": "claimed",
        "run_id": "run-old", "owner": "gone:1:1", "claimed_at": now, "heartbeat_at": now, "attempts": 1,
        "working_key": "processing/run-old/d.parquet"})
    assert isinstance(box.claim(obj, "run-new", stale_after_s=3600), Claim)  # 2020 is stale
    assert box.incoming() == [] and "processing/run-old/d.parquet" in _keys(box, "processing/")


def test_open_drop_box_reads_the_url(tmp_path, monkeypatch):
    monkeypatch.setenv("SLUICE_DROP_URL", str(tmp_path / "elsewhere"))
    assert open_drop_box().url == str((tmp_path / "elsewhere").resolve())
    from sluice.dropbox.s3 import S3DropBox

    s3 = open_drop_box("s3://bucket/some/prefix/")
    assert isinstance(s3, S3DropBox) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_sluice_submit_uploads_and_says_where_results_appear(where, tmp_path, monkeypatch, request):
    from typer.testing import CliRunner

    from sluice.cli import app

    src = tmp_path / "my batch.parquet"
    src.write_bytes(b"PAR1")
    if where == "local":
        drop = str(tmp_path / "drop")
        monkeypatch.setenv("SLUICE_DROP_URL", drop)
        args = ["submit", str(src)]
    else:
        url, _ = request.getfixturevalue("moto_endpoint")
        for k, v in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        drop = "s3://sluice-drop/cli"
        args = ["submit", str(src), "--drop", drop]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    box = open_drop_box(drop)
    assert [o.key for o in box.incoming()] == ["incoming/my batch.parquet"]
    assert f"results will appear at {box.locate('results/my_batch/')}<run_id>/results.parquet" in out



# One claiming process: every file it sees, it races for; it prints what it won.
_CLAIMER = """
import json, sys, boto3
from sluice.dropbox import Claim, open_drop_box
from sluice.dropbox.s3 import S3DropBox
url, endpoint, prefix, worker = sys.argv[1:]
if endpoint:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    box = S3DropBox("sluice-drop", prefix, client=client)
else:
    box = open_drop_box(url)
sys.stdin.readline()  # start together
won = []
for obj in box.incoming():
    got = box.claim(obj, f"run-p{worker}-{obj.name}")
    if isinstance(got, Claim):
        box.finish(got, ok=True, report={})
        won.append(obj.name)
print(json.dumps(won))
"""


def test_racing_processes_each_file_claimed_exactly_once(box, tmp_path):
    import subprocess
    import sys

    names = [f"p{i}.parquet" for i in range(8)]
    for n in names:
        _submit(box, tmp_path, n, n.encode() * 10)
    endpoint = box.s3.meta.endpoint_url if hasattr(box, "s3") else ""
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIMER, box.url, endpoint, getattr(box, "prefix", ""),
                               str(w)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for w in range(2)]
    try:
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        won = [name for p in procs for name in json.loads(p.communicate(timeout=60)[0])]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert Counter(won) == Counter(names)
    assert box.incoming() == [] and len(_keys(box, "done/")) == len(names)


def test_heartbeat_keeps_a_claim_alive_and_notices_a_takeover(box, tmp_path):
    import time

    from sluice.dropbox import Heartbeat

    _submit(box, tmp_path, "h.parquet", b"hhh")
    claim = box.claim(box.incoming()[0], "run-h")
    first_beat = claim.entry["heartbeat_at"]
    with Heartbeat(box, claim, every_s=0.05) as beat:
        deadline = time.monotonic() + 10
        while claim.entry["heartbeat_at"] == first_beat and time.monotonic() < deadline:
            time.sleep(0.05)
        assert claim.entry["heartbeat_at"] > first_beat  # the ledger entry is refreshed while the run lives
        taken: list = []
        while not taken and time.monotonic() < deadline:  # a pass that thinks the run is dead takes it over
            taken = box.recover_stale(stale_after_s=0)
        while beat.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert taken and taken[0].run_id == "run-h"
    assert beat.lost is not None  # ...and the first run learns it no longer owns the file


@pytest.mark.parametrize("name, why", [
    ("../done/evil.parquet", "outside the drop box"), ("a/b.parquet", "outside the drop box"),
    ("..", "outside the drop box"), ("x\0.parquet", "outside the drop box"),
    (".hidden.parquet", "never picked up"), ("upload.parquet.part", "never picked up"),
    ("a" * 300 + ".parquet", "name too long"),
])
def test_submit_refuses_names_it_would_never_process_or_that_escape(box, tmp_path, name, why):
    with pytest.raises(ValueError, match=why):
        _submit(box, tmp_path, name, b"x")
    assert box.incoming() == [] and box.list("done/") == []


def test_sluice_submit_refuses_a_hidden_name_with_a_reason(tmp_path):
    from typer.testing import CliRunner

    from sluice.cli import app

    src = tmp_path / "ok.parquet"
    src.write_bytes(b"PAR1")
    result = CliRunner().invoke(app, ["submit", str(src), "--drop", str(tmp_path / "drop"), "--name", ".x.parquet"])
    assert result.exit_code == 2 and "never picked up" in " ".join(result.output.split())
