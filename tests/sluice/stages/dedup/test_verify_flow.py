"""Verified clusters in a real run (flows/batch_run.py on replay tiers): a planted bad cluster is refused and its
members answered on their own; a good one keeps its reuse; the checks' cost and verdicts are recorded (the cost in
the run's total) and come back as the team's verdicts."""

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from flows.batch_run import sluice_run
from sluice.stages.dedup.verdicts import team_verdicts

PASSAGE = ("The warehouse received a shipment of crates this morning and the crew stacked them along the north "
           "wall beside the loading dock while the supervisor counted pallets, checked the labels against the "
           "manifest, noted the damaged corners on two of them, and asked the driver to wait until the paperwork "
           "was signed by the night manager who had already gone home for the day. ")
OTHER = ("A gardener planted rows of tomatoes and beans behind the old barn last spring, watered them every evening "
         "with rain collected in barrels, pulled weeds on weekends, tied the tallest stems to bamboo canes, and kept "
         "a notebook of which beds flowered first so that next season the seedlings could be started earlier "
         "indoors under lamps before the frost had fully passed. ")
WORDS = ["carefully", "quickly", "briefly", "plainly", "simply", "clearly", "exactly", "honestly", "directly", "calmly"]


def cluster(passage: str) -> list[str]:
    """Ten long prompts that differ in one adverb: the near stage puts them in one cluster (Jaccard ~0.95)."""
    return [f"{passage}Think {w} and give the number of things counted as a single integer." for w in WORDS]


def _planted(tmp_path):
    """Two clusters and recorded answers: the good cluster agrees on 42; the bad cluster's canonical says 42, its
    members 17. (the batch, the replay catalogue at $1 / $5 per 1M tokens, the good prompts, the bad prompts)"""
    good, bad = cluster(PASSAGE), cluster(OTHER)
    answers = {**{p: "42" for p in good}, bad[0]: "42", **{p: "17" for p in bad[1:]}}
    path = tmp_path / "answers.parquet"
    pq.write_table(pa.table({"prompt": list(answers), "response": list(answers.values()),
                             "input_tokens": [90] * len(answers), "output_tokens": [1] * len(answers)}), path)
    catalogue = tmp_path / "tiers.toml"
    catalogue.write_text('baseline = "big"\n' + "".join(
        f'[[tiers]]\nname = "{name}"\nbackend = "replay"\nmodel = "rec-{name}"\nanswers = "{path}"\n'
        f"input_usd_per_1m = {price}\noutput_usd_per_1m = {price}\n" for name, price in (("small", 1.0), ("big", 5.0))))
    data = tmp_path / "batch.parquet"
    pq.write_table(pa.table({"prompt": good + bad}), data)
    return data, catalogue, good, bad


def test_a_planted_bad_cluster_is_refused_in_the_run_and_its_members_are_answered(tmp_path):
    data, catalogue, good, bad = _planted(tmp_path)
    wh = tmp_path / "wh.duckdb"
    summary = sluice_run(str(data), warehouse=str(wh), catalogue=str(catalogue), data_dir=str(tmp_path / "data"))

    with duckdb.connect(str(wh), read_only=True) as con:
        checks = json.loads(con.execute("SELECT billing FROM runs").fetchone()[0])["dedup"]["checks"]
        rows = dict(con.execute("SELECT prompt, status || ':' || coalesce(response, '') FROM results").fetchall())
        run_cost, baseline = con.execute("SELECT cost_usd, baseline_cost_usd FROM runs").fetchone()
        rows_cost = con.execute("SELECT sum(cost_usd) FROM results").fetchone()[0]
    # the checks are the run's spend, in no row's cost: the run's total is its rows' plus the checks'
    assert abs(run_cost - (rows_cost + checks["cost_usd"])) < 1e-9 and rows_cost > 0
    assert abs(summary["saving_usd"] - (baseline - rows_cost - checks["cost_usd"])) < 1e-9
    assert summary["checks_cost_usd"] == checks["cost_usd"] and summary["clusters_refused"] == 1
    assert checks["clusters_checked"] == 2 and checks["clusters_refused"] == 1 and checks["members_checked"] == 8
    assert checks["cost_usd"] > 0  # 2 canonical probes + 8 members at $1 per 1M tokens
    assert all(rows[p] == "duplicate:42" for p in good[1:])  # the good cluster keeps its reuse
    assert all(rows[p] == "ok:17" for p in bad[1:])  # the bad cluster's members got their own answers
    assert rows[bad[0]] == "ok:42"
    verdicts = team_verdicts(wh)  # the checks are labels for the next run's calibration
    assert verdicts.label.size == 8 and int((~verdicts.label).sum()) == 4


def _run_with_budget(tmp_path, budget_usd):
    data, catalogue, good, bad = _planted(tmp_path)
    wh = tmp_path / "wh.duckdb"
    sluice_run(str(data), warehouse=str(wh), catalogue=str(catalogue), data_dir=str(tmp_path / "data"),
               budget_usd=budget_usd)
    with duckdb.connect(str(wh), read_only=True) as con:
        billing, budget, run_cost = con.execute("SELECT billing, budget, cost_usd FROM runs").fetchone()
        rows = dict(con.execute("SELECT prompt, status FROM results").fetchall())
    return json.loads(billing)["dedup"]["checks"], json.loads(budget), run_cost, rows, good, bad


def test_the_cluster_checks_are_held_to_the_budget_and_settled_in_its_ledger(tmp_path):
    checks, budget, run_cost, rows, good, bad = _run_with_budget(tmp_path, 1.0)
    probe = budget["passes"]["small/cluster-check"]
    # reserved before it was sent (10 rows: 2 canonical probes + 8 members), settled at what it cost
    assert probe["rows"] == 10 and probe["reserved_usd"] >= probe["spent_usd"] > 0
    assert abs(probe["spent_usd"] - checks["cost_usd"]) < 1e-6  # the record rounds to the micro-dollar
    assert checks["clusters_refused"] == 1
    assert abs(budget["spent_usd"] - run_cost) < 1e-12  # the ledger holds every dollar of the run, checks included


def test_cluster_checks_the_budget_has_no_room_for_are_not_sent_and_their_clusters_are_answered(tmp_path):
    # $0.003: under the probe pass's reservation (10 rows x up to 512 output tokens at $1 per 1M)
    checks, budget, run_cost, rows, good, bad = _run_with_budget(tmp_path, 0.003)
    assert checks["cost_usd"] == 0 and checks["clusters_checked"] == 2 and checks["clusters_refused"] == 2
    assert "small/cluster-check" not in budget["passes"]
    assert budget["skipped_rows"]["small/cluster-check"] == 10 and "cluster checks not sent" in budget["reached"]
    assert budget["spent_usd"] <= 0.003 + 1e-12 and abs(budget["spent_usd"] - run_cost) < 1e-12
    # no reuse without its check: every member is answered or deferred (never dropped), none a duplicate
    assert not any(rows[p] == "duplicate" for p in good[1:] + bad[1:])
    assert set(rows.values()) <= {"ok", "deferred"} and len(rows) == len(good) + len(bad)
