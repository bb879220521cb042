"""The judge of free-text shadow pairs through the real flow: a free-text batch on a replay cheap tier (recorded
answers, no model) and a premium tier on a loopback OpenAI-compatible server that also judges (`judge =
"premium"`, scripted verdicts: tests/support/judge.py). Without a judge every free-text shadow pair is unjudged;
with it the pairs are judged in both orders, the quality estimate gets its n, the pairs whose verdict does not
parse or whose judge failed stay unjudged (counted apart, the row keeps its answer), and the judge's spend lands
as its own line: attempts of kind "judge", a "premium/judge" billing entry, runs.judge_cost_usd, and the total."""

import json

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.batch_run import sluice_run
from sluice.reports.summary import summary_lines
from tests.support.judge import judge_question, scripted_judge
from tests.support.openai_server import OpenAICompatServer

N = 40
MARKERS = ["[good]", "[good]", "[bad]", "[biased]", "[good]", "[garbled]", "[good]", "[down]"]


def batch(folder):
    prompts = [f"Summarise this note about harbour number {i}: the tides were high and the boats stayed in."
               for i in range(N)]
    cheap = [f"Harbour {i} kept its boats in at high tide. {MARKERS[i % len(MARKERS)]}" for i in range(N)]
    pq.write_table(pa.table({"id": [f"n{i}" for i in range(N)], "prompt": prompts}), folder / "notes.parquet")
    pq.write_table(pa.table({"prompt": prompts, "response": cheap}), folder / "cheap_answers.parquet")
    return dict(zip(prompts, cheap))


def catalogue(folder, base_url, judge):
    path = folder / f"tiers-{judge or 'none'}.toml"
    path.write_text(
        'baseline = "premium"\n' + (f'judge = "{judge}"\n' if judge else "") +
        f'[[tiers]]\nname = "cheap"\nbackend = "replay"\nmodel = "cheap-recorded"\n'
        f'answers = "{folder / "cheap_answers.parquet"}"\ninput_usd_per_1m = 0.5\noutput_usd_per_1m = 1.5\n'
        f'[[tiers]]\nname = "premium"\nbackend = "openai"\nmodel = "premium-test"\nbase_url = "{base_url}"\n'
        "input_usd_per_1m = 2.5\noutput_usd_per_1m = 10\nmax_retries = 0\n")
    return path


def test_a_judge_judges_the_free_text_shadow_pairs_and_lands_its_spend_as_its_own_line(tmp_path):
    recorded = batch(tmp_path)
    runs = {}
    with OpenAICompatServer(responder=scripted_judge()) as srv:
        for judge in (None, "premium"):
            before = len(srv.received)
            runs[judge] = sluice_run(str(tmp_path / "notes.parquet"), warehouse=str(tmp_path / "wh.duckdb"),
                                     catalogue=str(catalogue(tmp_path, srv.base_url, judge)),
                                     data_dir=str(tmp_path / "data"), use_cache=False, premium_share=0.2,
                                     cascade_share=0.0, shadow_share=0.5)
            runs[judge]["received"] = srv.received[before:]
    plain, judged = runs[None], runs["premium"]
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)

    # without a judge: every shadow pair is free text, unjudged, and nothing asks a judge
    assert plain["shadow"] > 8 and plain["quality_unjudged"] == plain["shadow"] and plain["quality_n"] == 0
    assert not any(judge_question(r.body["messages"]) for r in plain["received"]) and "judge_tier" not in plain

    # with the judge: each shadowed row's pair asked twice, the cheap answer once in each place
    rid = judged["run_id"]
    shadowed = dict(con.execute("SELECT row_id, response FROM results WHERE run_id = ? AND shadow", [rid]).fetchall())
    assert len(shadowed) == judged["shadow"] == plain["shadow"]  # the same rows: the sample is deterministic
    questions = [q for q in (judge_question(r.body["messages"]) for r in judged["received"]) if q]
    assert sorted(q[0] for q in questions) == sorted(list(shadowed.values()) * 2)
    assert {(q[0], q[2]) for q in questions} == {(a, w) for a in shadowed.values() for w in "AB"}

    def count(marker):
        return sum(marker in answer for answer in shadowed.values())

    unparseable, failed = count("[garbled]"), count("[down]")
    assert unparseable and failed and count("[biased]")
    # the unjudged fall to the pairs whose judge said nothing usable, counted apart
    assert judged["quality_unjudged"] == unparseable + failed < plain["quality_unjudged"]
    assert (judged["quality_unparseable"], judged["quality_judge_failed"]) == (unparseable, failed)
    assert judged["quality_n"] == judged["shadow"] - unparseable - failed
    cheap = judged["quality_per_tier"]["cheap"]
    assert cheap["acceptable"] == count("[good]") and cheap["split"] == count("[biased]")  # a split is not acceptable
    assert cheap["estimate"] == pytest.approx(count("[good]") / judged["quality_n"])
    # a row whose judge failed (or said nothing usable) keeps its recorded answer, landed ok on its tier
    kept = con.execute("SELECT r.response, r.status, r.tier, r.prompt FROM results r WHERE r.run_id = ? AND r.shadow "
                       "AND (r.response LIKE '%[down]%' OR r.response LIKE '%[garbled]%')", [rid]).fetchall()
    assert len(kept) == unparseable + failed
    assert all(status == "ok" and tier == "cheap" and response == recorded[prompt]
               for response, status, tier, prompt in kept)

    # the judge's spend: attempts of kind judge, its billing line, its own summary line, in the total
    judge_usd, judge_requests, failed_requests = con.execute(
        "SELECT sum(cost_usd), count(*), count(*) FILTER (status = 'failed') FROM attempts "
        "WHERE run_id = ? AND kind = 'judge'", [rid]).fetchone()
    assert judge_requests == 2 * judged["shadow"] and failed_requests == 2 * failed and judge_usd > 0
    billing, cost, stored_judge_usd = con.execute(
        "SELECT billing, cost_usd, judge_cost_usd FROM runs WHERE run_id = ?", [rid]).fetchone()
    line = json.loads(billing)["premium/judge"]
    assert line["cost_usd"] == pytest.approx(judge_usd) == pytest.approx(stored_judge_usd)
    assert line["pairs"] == judged["shadow"] and line["rows"] == judge_requests
    rows_usd = con.execute("SELECT sum(cost_usd) FROM results WHERE run_id = ?", [rid]).fetchone()[0]
    assert cost == pytest.approx(rows_usd + judge_usd) == pytest.approx(judged["cost_usd"])
    assert sum(judged["cost_per_tier_usd"].values()) == pytest.approx(rows_usd)
    assert con.execute("SELECT count(*) FROM errors WHERE run_id = ? AND stage = 'review'", [rid]).fetchone()[0] \
        == 2 * (unparseable + failed)
    lines = dict(summary_lines(judged))
    assert lines["judge on premium (quality assurance)"] == (
        f"{judged['shadow']} free-text shadow pairs, {judge_requests} requests  (${judge_usd:.6f})")
    assert f"(n={judged['quality_n']} judged shadow pairs; {unparseable + failed} unjudged pairs" in \
        lines["quality estimate"]
    con.close()
