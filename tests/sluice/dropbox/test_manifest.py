"""Per-submission options: a manifest beside a dropped file, validated strictly, moved and filed with its file, on
both stores (a local folder, and S3 served by moto on loopback)."""

from __future__ import annotations

import json
import uuid

import pytest

from sluice.dropbox import open_drop_box
from sluice.dropbox.manifest import (
    ManifestError,
    claim_manifests,
    file_manifests,
    order_by_priority,
    parse_manifest,
    read_options,
    submit_manifest,
)

TOML = b"""
budget_usd = 5
deadline_h = 24
priority = 10
router = "routers/v3"
min_quality = 0.9
choices = ["positive", "negative"]
tags = { team = "search", project = "x" }
"""


def test_a_toml_manifest_becomes_the_runs_options():
    opts = parse_manifest("batch.sluice.toml", TOML)
    run = opts.run_options()
    assert {k: v for k, v in run.items() if k != "response_schema"} == {
        "budget_usd": 5.0, "deadline_h": 24.0, "router": "routers/v3", "min_quality": 0.9,
        "tags": {"project": "x", "team": "search"}}
    assert json.loads(run["response_schema"]) == {"enum": ["positive", "negative"], "type": "string"}
    assert opts.record("batch.sluice.toml") == {
        "budget_usd": 5.0, "deadline_h": 24.0, "priority": 10, "router": "routers/v3", "min_quality": 0.9,
        "choices": ["positive", "negative"], "tags": {"project": "x", "team": "search"},
        "manifest": "batch.sluice.toml"}


def test_a_json_manifest_with_an_inline_schema():
    opts = parse_manifest("b.sluice.json", json.dumps(
        {"schema": {"type": "object", "properties": {"stars": {"type": "integer"}}}, "premium_share": 0.2}).encode())
    assert json.loads(opts.run_options()["response_schema"])["properties"] == {"stars": {"type": "integer"}}
    assert opts.run_options()["premium_share"] == 0.2 and opts.run_options()["tags"] == {}
    assert parse_manifest("c.sluice.json", b"{}").run_options() == {"tags": {}}


@pytest.mark.parametrize("name, body, reason", [
    ("a.sluice.toml", b"budjet_usd = 5", "a.sluice.toml: unknown option 'budjet_usd' (options: budget_usd, choices,"),
    ("a.sluice.toml", b'budget_usd = "5"', "budget_usd: Input should be a valid number"),
    ("a.sluice.toml", b"budget_usd = -1", "budget_usd: Input should be greater than 0"),
    ("a.sluice.toml", b"priority = 1.5", "priority: Input should be a valid integer"),
    ("a.sluice.toml", b"premium_share = 1.5", "premium_share: Input should be less than or equal to 1"),
    ("a.sluice.toml", b"budget_usd = 1\npremium_share = 0.1", "give budget_usd or premium_share, not both"),
    ("a.sluice.toml", b'choices = ["a"]\nschema = "{}"', "give schema or choices, not both"),
    ("a.sluice.toml", b'choices = ["a", "a"]', "choices must be distinct non-empty labels"),
    ("a.sluice.toml", b'schema = "{not json"', "schema: "),
    ("a.sluice.toml", b"tags = { team = 5 }", "tags: tag 'team' must be a string, got int 5"),
    ("a.sluice.toml", b"budget_usd = ", "a.sluice.toml: not readable TOML"),
    ("a.sluice.json", b"[1, 2]", "a.sluice.json: must hold one object of options, got list"),
    ("a.sluice.json", b"{", "a.sluice.json: not readable JSON"),
])
def test_a_bad_manifest_says_which_and_why(name, body, reason):
    with pytest.raises(ManifestError) as exc:
        parse_manifest(name, body)
    assert reason in str(exc.value)


@pytest.fixture(scope="module")
def moto_endpoint():
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    srv = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="sluice-drop")
    yield client
    srv.stop()


@pytest.fixture(params=["local", "s3"])
def box(request, tmp_path):
    if request.param == "local":
        return open_drop_box(tmp_path / "drop")
    from sluice.dropbox.s3 import S3DropBox

    return S3DropBox("sluice-drop", f"t-{uuid.uuid4().hex[:8]}/drop", client=request.getfixturevalue("moto_endpoint"))


def put(box, tmp_path, name: str, data: bytes) -> None:
    src = tmp_path / uuid.uuid4().hex
    src.write_bytes(data)
    box.upload(src, f"incoming/{name}")


def test_the_manifest_is_not_a_file_of_its_own_and_travels_with_its_file(box, tmp_path):
    put(box, tmp_path, "a.sluice.toml", TOML)
    put(box, tmp_path, "a.parquet", b"data")
    [obj] = box.incoming()
    assert obj.key == "incoming/a.parquet"
    claim = box.claim(obj, "run-a")
    keys = claim_manifests(box, claim.obj, claim.run_id)
    assert keys == ["processing/run-a/a.sluice.toml"] and [o.key for o in box.list("incoming/")] == []
    assert claim_manifests(box, claim.obj, claim.run_id) == keys  # a taken-over claim finds it where it is
    assert read_options(box, keys).budget_usd == 5.0
    dest = box.finish(claim, ok=True, report={})
    file_manifests(box, keys, dest)
    assert sorted(o.key for o in box.list("done/")) == ["done/run-a/a.parquet", "done/run-a/a.sluice.toml"]
    assert box.list("processing/") == []


def test_two_manifests_for_one_file_are_refused(box, tmp_path):
    put(box, tmp_path, "b.sluice.toml", b"priority = 1")
    put(box, tmp_path, "b.sluice.json", b'{"priority": 2}')
    put(box, tmp_path, "b.parquet", b"data")
    [obj] = box.incoming()
    keys = claim_manifests(box, obj, "run-b")
    with pytest.raises(ManifestError, match="b.sluice.toml and b.sluice.json: give one manifest, not both"):
        read_options(box, keys)


def test_submit_manifest_replaces_an_older_one_and_priority_orders_a_pass(box, tmp_path):
    put(box, tmp_path, "low.parquet", b"1")
    put(box, tmp_path, "none.parquet", b"2")
    put(box, tmp_path, "soon.parquet", b"3")
    put(box, tmp_path, "urgent.parquet", b"4")
    put(box, tmp_path, "urgent.sluice.toml", b"priority = 1")
    submit_manifest(box, "urgent.parquet", parse_manifest("x.sluice.json", b'{"priority": 9}'))
    assert [o.key for o in box.list("incoming/") if "urgent.sluice" in o.key] == ["incoming/urgent.sluice.json"]
    submit_manifest(box, "low.parquet", parse_manifest("x.sluice.json", b'{"priority": -1}'))
    submit_manifest(box, "soon.parquet", parse_manifest("x.sluice.json", b'{"deadline_h": 2}'))
    order = [o.name for o in order_by_priority(box, box.incoming())]
    assert order == ["urgent.parquet", "soon.parquet", "none.parquet", "low.parquet"]


def test_a_manifest_may_turn_prompt_trimming_on_or_off():
    assert parse_manifest("t.sluice.toml", b"trim = true").run_options() == {"trim": True, "tags": {}}
    assert parse_manifest("t.sluice.json", b'{"trim": false}').run_options() == {"trim": False, "tags": {}}
    with pytest.raises(ManifestError, match="trim"):
        parse_manifest("t.sluice.toml", b'trim = "yes"')  # strict: a string is not a flag
