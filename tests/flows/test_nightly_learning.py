"""The router that learns every night and the quality floor's loop, through the real flow over two "nights" on
replay tiers (recorded answers, no model, no network).

Learning: a cheap tier that answers short everyday questions right and demanding ones wrong, premium right on
both. The warehouse starts with a router version trained on last month's traffic, when the cheap tier failed the
other way round. Night 1 routes with it by default, lands its graded rows as labels and retrains: the new version
beats it on held-out folds and is promoted. Night 2 routes with the new version by default, and more of its
answers are right. The warehouse shows both versions and why the second was promoted.

The loop (GSM8K: Mixtral cheap, GPT-4 premium): night 1 falls under its quality floor; night 2 of the same
dataset sends 0.1 more of its rows to premium, and says so on the run, in its summary and in `sluice runs show`.
"""

import json
from datetime import datetime, timezone

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.batch_run import sluice_run
from sluice.cli import app
from sluice.reports.summary import summary_lines
from sluice.stages.route.learned import train_router
from sluice.warehouse.routers import list_routers, register
from tests.support.replay import GSM8K, gsm8k_replay_catalogue
from tests.support.routing_prompts import EASY, HARD


def night(tmp_path, catalogue, dataset=GSM8K, **options):
    return sluice_run(str(dataset), warehouse=str(tmp_path / "wh.duckdb"), catalogue=str(catalogue),
                      data_dir=str(tmp_path / "data"), grader="number", use_cache=False, premium_share=0.3,
                      cascade_share=0.0, shadow_share=0.5, **options)


def easy_and_hard(tmp_path):
    """The questions (reference 1 for all) and a catalogue: cheap right on EASY only, premium right on all."""
    prompts = EASY + HARD
    data = tmp_path / "questions.parquet"
    pq.write_table(pa.table({"id": [f"q{i}" for i in range(len(prompts))], "prompt": prompts,
                             "reference": ["1"] * len(prompts)}), data)
    for name, answers in (("cheap", ["#### 1"] * len(EASY) + ["#### 2"] * len(HARD)),
                          ("premium", ["#### 1"] * len(prompts))):
        pq.write_table(pa.table({"prompt": prompts, "response": answers}), tmp_path / f"{name}.parquet")
    catalogue = tmp_path / "tiers.toml"
    catalogue.write_text('baseline = "premium"\n' + "".join(
        f'[[tiers]]\nname = "{n}"\nbackend = "replay"\nmodel = "{n}-recorded"\nanswers = "{n}.parquet"\n'
        f"input_usd_per_1m = {p}\noutput_usd_per_1m = {p}\n" for n, p in (("cheap", 0.5), ("premium", 10))))
    return data, catalogue


def last_months_router(wh, folder):
    """Version 1: trained when the cheap tier got the demanding questions right and the everyday ones wrong."""
    labels = pl.DataFrame({"prompt": EASY + HARD, "cheap_ok": [False] * len(EASY) + [True] * len(HARD)})
    old = train_router(labels, use_embeddings=False, l2_text=1.0)
    register(wh, old.save(folder), labels=labels.height, target=old.target, cv_auroc=1.0, previous_auroc=None,
             promote=True, reason="trained by hand on last month's labels", labels_through=datetime.now(timezone.utc))


def test_night_two_routes_with_the_router_retrained_and_promoted_after_night_one(tmp_path):
    data, catalogue = easy_and_hard(tmp_path)
    wh = tmp_path / "wh.duckdb"
    last_months_router(wh, tmp_path / "last-month")

    first = night(tmp_path, catalogue, data, retrain_min_new_labels=10)
    assert first["routing"]["router"] == "version 1 (promoted)" and first["routing"]["router_version"] == 1
    with duckdb.connect(str(wh), read_only=True) as con:
        labels = dict(con.execute("SELECT source, count(*) FROM router_training GROUP BY 1").fetchall())
    # the 17 rows routed to cheap (24 - round(0.3 x 24)), graded: their verdicts replace the shadow pairs' agreement
    assert labels == {"graded": 17}
    assert first["routing"]["retrain"] == {"trained": True, "new_labels": 17, "version": 2, "promoted": True,
                                           "reason": first["routing"]["retrain"]["reason"]}

    second = night(tmp_path, catalogue, data, retrain_min_new_labels=1000)
    assert second["routing"]["router"] == "version 2 (promoted)" and second["routing"]["router_version"] == 2
    assert second["routing"]["retrain"] == {
        "trained": False, "new_labels": 17,
        "reason": "17 new labels since version 2, under the 1000 a retraining needs "
                  "(RouterSettings.retrain_min_new_labels)"}
    # last month's router sent 7 everyday questions to premium and left all 12 demanding ones to fail on cheap;
    # tonight's sends 7 demanding ones: the most a premium share of 0.3 can get right (24 - 5)
    assert (first["correct"], second["correct"]) == (12, 19)

    versions = list_routers(wh)
    assert versions["version"].to_list() == [1, 2] and versions["promoted"].to_list() == [False, True]
    assert versions["replaces"].to_list() == [None, 1] and versions["labels"].to_list() == [24, 17]
    v2 = versions.row(1, named=True)
    assert v2["cv_auroc"] > v2["previous_auroc"]
    assert v2["reason"] == (f"after run {first['run_id']} (17 new labels since version 1): promoted: held-out "
                            f"AUROC {v2['cv_auroc']:.3f} beats the promoted version's {v2['previous_auroc']:.3f} "
                            "on the same 17 labels")
    assert first["routing"]["retrain"]["reason"] == v2["reason"].split(": ", 1)[1]
    with duckdb.connect(str(wh), read_only=True) as con:
        used = dict(con.execute("SELECT run_id, router_version FROM runs").fetchall())
        reasons = con.execute("SELECT DISTINCT split_part(route_reason, ':', 1) FROM results WHERE run_id = ? "
                              "AND route_reason IS NOT NULL", [second["run_id"]]).fetchall()
    assert used == {first["run_id"]: 1, second["run_id"]: 2}
    assert reasons == [("router",)]  # routed by the learned router, not the heuristic
    lines = dict(summary_lines(second))
    assert lines["router"] == "version 2 (promoted), routing by share"
    assert lines["router retrained"] == f"no: {second['routing']['retrain']['reason']}"


def test_a_night_under_its_floor_raises_the_next_nights_premium_share(tmp_path):
    catalogue = gsm8k_replay_catalogue(tmp_path)
    first = night(tmp_path, catalogue, min_quality=0.95, retrain_min_new_labels=1000)
    assert first["quality_alert"] and first["quality_low"] < 0.95 and first["quality_loop"] is None
    assert first["routing"]["router"] == "heuristic gatekeeper"

    second = night(tmp_path, catalogue, min_quality=0.95, retrain_min_new_labels=1000)
    loop = second["quality_loop"]
    assert (loop["setting"], loop["from"], loop["to"], loop["configured"]) == ("premium_share", 0.3, 0.4, 0.3)
    assert loop["why"] == f"run {first['run_id']}: {first['quality_alert']}: its premium share 0.30 + 0.1"
    routed = second["rows_per_tier"]
    assert second["routing"]["premium_share"] == 0.4
    assert second["routing"]["routed_premium_share"] == pytest.approx(0.4)  # 24 of the 60 distinct questions
    assert first["routing"]["routed_premium_share"] == pytest.approx(0.3) and routed["premium"] == 24
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        stored = dict(con.execute("SELECT run_id, quality_loop FROM runs").fetchall())
    assert stored[first["run_id"]] is None and json.loads(stored[second["run_id"]]) == loop
    line = f"premium_share 0.3 -> 0.4: {loop['why']}"
    assert dict(summary_lines(second))["quality loop"] == line
    shown = CliRunner().invoke(app, ["runs", "show", second["run_id"], "--warehouse", str(tmp_path / "wh.duckdb")],
                               env={"COLUMNS": "400"})
    assert shown.exit_code == 0 and line in " ".join(shown.output.split())


def test_a_retraining_that_fails_is_recorded_and_the_run_still_lands(tmp_path, monkeypatch):
    import tasks.learn

    def broken(*args, **kwargs):
        raise RuntimeError("the labels table is unreadable")

    monkeypatch.setattr(tasks.learn, "retrain", broken)
    data, catalogue = easy_and_hard(tmp_path)
    summary = night(tmp_path, catalogue, data)
    failed = {"trained": False, "failed": True,
              "reason": "retraining failed: RuntimeError: the labels table is unreadable"}
    assert summary["rows"] == 24 and summary["routing"]["retrain"] == failed
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        routing = con.execute("SELECT routing FROM runs WHERE run_id = ?", [summary["run_id"]]).fetchone()[0]
    assert json.loads(routing)["retrain"] == failed
