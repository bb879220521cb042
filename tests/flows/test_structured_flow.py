"""Structured outputs through a whole flow run, against a loopback OpenAI-compatible server for every tier:
`response_format` is sent, every answer is validated, an invalid answer is retried once on its tier, then
escalated, then landed as failed with the validation error; each attempt's tokens and cost add up to the row's;
the shadow sample and the cascade land in results, attempts and router_training; the schema's fields are typed
columns of a per-dataset view. Also: chat-shaped (`messages`) input end to end."""

import json

import duckdb
import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.batch_run import sluice_run
from tests.support.openai_server import Faults, InvalidAnswers, OpenAICompatServer

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["sentiment", "stars", "topic"],
          "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                         "stars": {"type": "integer", "minimum": 1, "maximum": 5},
                         "topic": {"type": "string"}}}
TIERS = [("small", 0.10, 0.40), ("mid", 0.50, 1.50), ("premium", 2.50, 10.00)]


def catalogue(path, base_url):
    path.write_text('baseline = "premium"\n' + "".join(
        f'[[tiers]]\nname = "{n}"\nbackend = "openai"\nmodel = "{n}-test"\nbase_url = "{base_url}"\n'
        f"input_usd_per_1m = {i}\noutput_usd_per_1m = {o}\nmax_retries = 2\n" for n, i, o in TIERS))
    return path


def reviews(n=16):
    # "Classify ..." routes to the cheapest tier (classification intent)
    texts = [f"Classify this review of product {i}: it arrived on day {i} and works well." for i in range(n)]
    texts[1] += " [flaky]"  # the first answer is malformed, the retry on the same tier is fine
    texts[2] += " [hard]"  # malformed on small every time: escalated to mid, valid there
    texts[3] += " [bad]"  # violates the schema on every tier: failed with the validation error
    return texts


@pytest.fixture
def structured_run(tmp_path):
    rules = (InvalidAnswers(marker="[flaky]", times=1), InvalidAnswers(marker="[hard]", models=("small-test",)),
             InvalidAnswers(marker="[bad]", kind="schema"))
    data = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(16)], "prompt": reviews()}), data)
    with OpenAICompatServer(faults=Faults(invalid_answers=rules)) as server:
        summary = sluice_run(str(data), warehouse=str(tmp_path / "wh.duckdb"),
                             catalogue=str(catalogue(tmp_path / "cat.toml", server.base_url)),
                             data_dir=str(tmp_path / "data"), response_schema=json.dumps(SCHEMA),
                             cascade_share=0.25, shadow_share=0.25)
        received = list(server.received)
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    yield summary, received, con
    con.close()


def test_structured_answers_are_validated_retried_escalated_and_typed(structured_run):
    summary, received, con = structured_run
    # response_format json_schema went with every request, carrying the schema
    assert received and all(r.body["response_format"]["type"] == "json_schema" for r in received)
    # attempts other than the shadow answer (the shadow sample is random among the cheapest tier's answers)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT row_id, status, tier, attempts - shadow::INT, escalated, escalated_from, parsed, error, cost_usd "
        "FROM results").fetchall()}
    assert len(rows) == 16
    for rid, (status, tier, attempts, escalated, frm, parsed, error, cost) in rows.items():
        if status == "ok":
            jsonschema.validate(json.loads(parsed), SCHEMA)
    # [flaky]: answered twice on small, kept there
    assert rows["r1"][:4] == ("ok", "small", 2, False)
    # [hard]: small twice (first + retry), then mid
    assert rows["r2"][:5] == ("ok", "mid", 3, True, "small")
    # [bad]: never valid: failed with the schema error after its retries and escalations
    status, tier, attempts, escalated, _, parsed, error, _ = rows["r3"]
    assert status == "failed" and parsed is None and escalated and attempts >= 4
    assert "schema" in error
    # every attempt is landed, and a row's cost is the sum of its attempts' costs (nothing charged twice)
    per_row = dict(con.execute("SELECT row_id, sum(cost_usd) FROM attempts GROUP BY 1").fetchall())
    for rid, r in rows.items():
        assert r[7] == pytest.approx(per_row.get(rid, 0.0), abs=1e-12)
    assert con.execute("SELECT count(*) FROM attempts").fetchone()[0] == len(received)
    kinds = dict(con.execute("SELECT kind, count(*) FROM attempts GROUP BY 1").fetchall())
    assert kinds["retry"] >= 3 and kinds["escalation"] >= 2 and kinds["shadow"] >= 1
    assert sum(r[7] for r in rows.values()) == pytest.approx(summary["cost_usd"])
    # the schema's fields are typed columns of the dataset's view
    typed = con.execute("SELECT row_id, sentiment, stars, topic FROM structured_reviews ORDER BY row_id").fetchall()
    assert len(typed) == sum(r[0] == "ok" for r in rows.values())
    assert all(isinstance(t[2], int) and 1 <= t[2] <= 5 and t[1] in ("positive", "negative", "neutral")
               for t in typed)


def test_shadow_answers_land_as_router_training_labels(structured_run):
    _, _, con = structured_run
    shadow = con.execute("SELECT row_id, shadow_agrees, shadow_cost_usd FROM results WHERE shadow").fetchall()
    assert len(shadow) >= 2  # 25% of the cheapest tier's kept answers
    assert all(agree is not None and cost > 0 for _, agree, cost in shadow)
    labels = con.execute("SELECT row_id, cheap_ok, source FROM router_training").fetchall()
    assert sorted((r, ok) for r, ok, _ in labels) == sorted((r, a) for r, a, _ in shadow)
    assert {s for _, _, s in labels} == {"shadow"}


def test_chat_shaped_input_runs_end_to_end_and_earlier_turns_block_dedup(tmp_path):
    def chat(first, last="What should I do next?"):
        return [{"role": "system", "content": "You are a travel agent."}, {"role": "user", "content": first},
                {"role": "assistant", "content": "Noted."}, {"role": "user", "content": last}]

    convs = [chat("I am flying to Paris."), chat("I am flying to Tokyo."), chat("I am flying to Paris."),
             chat("I am flying to Paris.", "What should I pack?")]
    data = tmp_path / "chats.parquet"
    pq.write_table(pa.table({"messages": convs}), data)
    with OpenAICompatServer() as server:
        summary = sluice_run(str(data), warehouse=str(tmp_path / "wh.duckdb"),
                             catalogue=str(catalogue(tmp_path / "cat.toml", server.base_url)),
                             data_dir=str(tmp_path / "data"), shadow_share=0.0)
        received = list(server.received)
    with duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True) as con:
        rows = {r[0]: r[1:] for r in con.execute(
            "SELECT row_id, status, dup_of, prompt, history FROM results").fetchall()}
    assert summary["rows"] == 4
    # Paris and Tokyo differ only in an earlier turn: both answered; the repeated Paris chat is a duplicate
    assert rows["0"][0] == "ok" and rows["1"][0] == "ok" and rows["3"][0] == "ok"
    assert rows["2"][:2] == ("duplicate", "0")
    assert rows["0"][2] == "What should I do next?" and "Paris" in rows["0"][3]
    # the whole conversation was sent: system + both earlier turns + the last user turn
    sent = [r.body["messages"] for r in received if r.status == 200]
    assert len(sent) == 3
    assert all(len(m) == 4 and m[0]["role"] == "system" and m[2]["role"] == "assistant" for m in sent)
