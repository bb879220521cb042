"""A run records its semantic rule, delta, bound and label count in runs.billing['dedup']; earlier runs' graded
duplicates come back as the team's verdicts."""

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from flows.batch_run import sluice_run
from sluice.stages.dedup.calibrate import NEVER, read_calibration
from sluice.stages.dedup.verdicts import TEAM_SET, team_verdicts

PROMPTS = ["What is the capital of France?", "Explain how a bicycle gear works.", "What is the capital of France?"]


def test_a_run_records_the_rule_it_chose_for_its_max_false_hit(tmp_path):
    answers = tmp_path / "small.parquet"
    pq.write_table(pa.table({"prompt": PROMPTS[:2], "response": ["Paris", "Gears trade force for speed."],
                             "input_tokens": [8, 7], "output_tokens": [1, 6]}), answers)
    catalogue = tmp_path / "tiers.toml"
    catalogue.write_text('baseline = "big"\n' + "".join(
        f'[[tiers]]\nname = "{name}"\nbackend = "replay"\nmodel = "rec-{name}"\nanswers = "{answers}"\n'
        f"input_usd_per_1m = {price}\noutput_usd_per_1m = {price}\n" for name, price in (("small", 1.0), ("big", 5.0))))
    data = tmp_path / "batch.parquet"
    pq.write_table(pa.table({"prompt": PROMPTS}), data)
    wh = tmp_path / "wh.duckdb"
    sluice_run(str(data), warehouse=str(wh), catalogue=str(catalogue), data_dir=str(tmp_path / "data"),
               max_false_hit=0.02)
    with duckdb.connect(str(wh), read_only=True) as con:
        record = json.loads(con.execute("SELECT billing FROM runs").fetchone()[0])["dedup"]
    assert record["max_false_hit"] == 0.02 and record["bound"] <= 0.02
    assert record["labels"] == len(read_calibration().label)  # the shipped set, no verdicts in a new warehouse
    assert record["rule"]["char_shingles"] and NEVER > record["rule"]["thresholds"][0] > 0.5
    assert "pair score >=" in record["rule_text"] and set(record["binding_sets"]) >= {"qqp_tune", "mrpc_train"}
    scorer = record["rule"]["scorer"]  # the learned pair score's weights, and the labels it was fitted on
    assert len(scorer["weights"]) == len(scorer["features"]) and 0 < record["fit_labels"] < record["labels"]
    assert team_verdicts(wh).label.size == 0


def test_graded_duplicates_whose_canonical_was_right_are_the_teams_verdicts(tmp_path):
    from sluice.warehouse.db import connect

    wh = tmp_path / "wh.duckdb"
    with connect(wh) as con:  # a migrated, empty warehouse
        con.execute("INSERT INTO runs (run_id, dataset, billing) VALUES ('r1', 'd', ?)", [json.dumps(
            {"dedup": {"checks": {"verdicts": [[6, "semantic", 0.95, True], [6, "semantic", 0.93, False]]}}})])
        for row_id, prompt, dup_of, kind, score, correct in (
                ("a", "What is two plus two?", None, None, None, True),
                ("b", "What is two and two?", "a", "semantic", 0.97, True),
                ("c", "What is two times two, please?", "a", "near", 0.8, False),
                ("d", "What is 3+3?", None, None, None, False),
                ("e", "What is three plus three?", "d", "semantic", 0.96, True)):  # canonical wrong: no verdict
            con.execute("INSERT INTO results (run_id, dataset, row_id, prompt, status, dup_of, dup_kind, dup_score, "
                        "correct) VALUES ('r1', 'd', ?, ?, ?, ?, ?, ?, ?)",
                        [row_id, prompt, "duplicate" if dup_of else "ok", dup_of, kind, score, correct])
    team = team_verdicts(wh)
    assert set(team.set_name.tolist()) == {TEAM_SET} and team.metric == {TEAM_SET: "reuses"}
    assert sorted(zip(team.label.tolist(), team.other_hit.tolist())) == [
        (False, False), (False, True), (True, False), (True, False)]
