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


def test_a_planted_bad_cluster_is_refused_in_the_run_and_its_members_are_answered(tmp_path):
    good, bad = cluster(PASSAGE), cluster(OTHER)
    # recorded answers: the good cluster agrees on 42; the bad cluster's canonical says 42, its members 17
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
