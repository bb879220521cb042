"""Per-submission options through the drop-box flow, in process, on the local drop box and replay tiers (recorded
GSM8K answers: no engine, no network). `sluice submit --budget-usd --tag --priority` writes a manifest the run
honours: the landed cost stays under the budget (rows the budget cannot plan land `deferred`), every row
carries the tags, the options are recorded on the run, and the higher priority goes first. A manifest with an
unknown option files the pair in failed/ with the reason; a file without one runs on the deployment's defaults."""

from __future__ import annotations

import json

import duckdb
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.drop_box import process_drop_box
from sluice.cli.app import app
from sluice.dropbox import open_drop_box
from tests.support.replay import GSM8K, gsm8k_replay_catalogue

BUDGET = 0.0015  # 12 rows on the cheap tier are planned at ~$0.0021 (256 answer tokens each): not all fit


@pytest.fixture(scope="module")
def passed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("manifests")
    rows = pq.read_table(GSM8K).select(["id", "prompt"])
    # other questions for each file: answers landed by an earlier file would be reused (cache hits, never routed)
    for i, name in enumerate(("budgeted", "plain", "shared", "typo")):
        pq.write_table(rows.slice(12 * i, 12), tmp / f"{name}.parquet")
    drop = tmp / "drop"
    box = open_drop_box(drop)
    cli = CliRunner()
    res = cli.invoke(app, ["submit", str(tmp / "budgeted.parquet"), "--drop", str(drop), "--no-notify",
                           "--budget-usd", str(BUDGET), "--deadline-h", "24", "--tag", "team=search",
                           "--tag", "project=x", "--priority", "5"])
    assert res.exit_code == 0, res.output
    assert "budgeted.sluice.json" in res.output
    for name in ("plain", "shared"):
        box.submit(tmp / f"{name}.parquet")
    (tmp / "shared.sluice.toml").write_text("premium_share = 0.5\n")
    box.upload(tmp / "shared.sluice.toml", "incoming/shared.sluice.toml")
    (tmp / "typo.sluice.toml").write_text("budjet_usd = 5\n")
    box.upload(tmp / "typo.sluice.toml", "incoming/typo.sluice.toml")
    box.submit(tmp / "typo.parquet")
    wh = tmp / "wh.duckdb"
    out = process_drop_box(drop=str(drop), warehouse=str(wh), catalogue=str(gsm8k_replay_catalogue(tmp)),
                           data_dir=str(tmp / "data"))
    return out, box, wh


def test_a_bad_option_files_the_pair_in_failed_with_the_reason(passed):
    out, box, _ = passed
    [failed] = out["failed"]
    assert failed["key"] == "incoming/typo.parquet"
    assert failed["reason"].startswith("typo.sluice.toml: unknown option 'budjet_usd' (options: budget_usd,")
    folder = failed["dest"].rsplit("/", 1)[0]
    assert sorted(o.key for o in box.list(folder + "/")) == [
        f"{folder}/typo.parquet", f"{folder}/typo.parquet.error.json", f"{folder}/typo.sluice.toml"]
    report = box.read_entry(f"{folder}/typo.parquet.error.json")[0]
    assert report["reason"] == failed["reason"] and report["kind"] == "bad_file"
    assert box.list("incoming/") == [] and box.list("processing/") == []


def test_the_budget_and_tags_of_the_manifest_are_honoured(passed):
    out, box, wh = passed
    done = {o["key"].split("/")[-1]: o for o in out["done"]}
    assert list(done) == ["budgeted.parquet", "plain.parquet", "shared.parquet"]  # priority 5 first, then by name
    run_id = done["budgeted.parquet"]["run_id"]
    with duckdb.connect(str(wh), read_only=True) as con:
        cost, tags, submission = con.execute("SELECT cost_usd, tags, submission FROM runs WHERE run_id = ?",
                                             [run_id]).fetchone()
        statuses = dict(con.execute("SELECT status, count(*) FROM results WHERE run_id = ? GROUP BY 1",
                                    [run_id]).fetchall())
        row_tags = {t for (t,) in con.execute("SELECT tags FROM results WHERE run_id = ?", [run_id]).fetchall()}
        reasons = [r for (r,) in con.execute("SELECT route_reason FROM results WHERE run_id = ? AND status = 'ok'",
                                             [run_id]).fetchall()]
        plain = con.execute("SELECT r.cost_usd, r.tags, r.submission, count(*) FILTER (x.status = 'ok') "
                            "FROM runs r JOIN results x USING (run_id) WHERE r.dataset = 'plain' GROUP BY ALL").fetchone()
        tiers = dict(con.execute("SELECT tier, count(*) FROM results r JOIN runs u USING (run_id) "
                                 "WHERE u.dataset = 'shared' GROUP BY 1").fetchall())
        by_tag = con.execute("SELECT tag_value, sum(cost_usd) FROM cost_by_tag WHERE dataset = 'budgeted' "
                             "AND tag_key = 'team' GROUP BY 1").fetchall()
    assert 0 < cost <= BUDGET
    assert statuses["ok"] >= 1 and statuses["deferred"] >= 1 and sum(statuses.values()) == 12
    assert reasons and all(f"budget ${BUDGET:g}" in r for r in reasons)  # routed under the manifest's budget
    assert json.loads(tags) == {"project": "x", "team": "search"}
    assert row_tags == {'{"project": "x", "team": "search"}'}
    assert json.loads(submission) == {"budget_usd": BUDGET, "deadline_h": 24.0, "priority": 5,
                                      "tags": {"project": "x", "team": "search"}, "manifest": "budgeted.sluice.json"}
    assert by_tag == [("search", pytest.approx(cost))]
    # a file without a manifest: the deployment's defaults, every row answered, nothing recorded
    assert plain[0] > 0 and plain[1:] == (None, None, 12)
    assert tiers == {"premium": 6, "cheap": 6}  # premium_share = 0.5
    folder = done["budgeted.parquet"]["dest"].rsplit("/", 1)[0]
    assert sorted(o.key.rsplit("/", 1)[1] for o in box.list(folder + "/")) == ["budgeted.parquet",
                                                                              "budgeted.sluice.json"]
