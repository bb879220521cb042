"""Request shapes at ingest: chat-shaped rows, sampling parameters and response schemas, with clear row errors."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.contracts.shapes import RequestDefaults, ShapeError, schema_from_choices, schema_from_file
from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate
from sluice.stages.ingest.read import IngestError, read_prompts, validate_prompts

SYSTEM = {"role": "system", "content": "Be brief."}


def turn(role, content):
    return {"role": role, "content": content}


def test_a_chat_becomes_prompt_system_and_history(tmp_path):
    msgs = [SYSTEM, turn("user", "hi"), turn("assistant", "hello"), turn("user", "what is 2+2?")]
    path = tmp_path / "chats.parquet"
    pq.write_table(pa.table({"messages": [msgs]}), path)
    row = read_prompts(path).to_pylist()[0]
    assert (row["prompt"], row["system"], row["status"]) == ("what is 2+2?", "Be brief.", "pending")
    assert json.loads(row["history"]) == [["user", "hi"], ["assistant", "hello"]]


def test_messages_as_json_text_are_accepted():
    raw = pa.table({"messages": [json.dumps([turn("user", "hello there")])]})
    row = validate_prompts(raw).to_pylist()[0]
    assert (row["prompt"], row["history"], row["status"]) == ("hello there", None, "pending")


@pytest.mark.parametrize("msgs, reason", [
    ([turn("assistant", "hi")], "must end with a user turn"),
    ([turn("user", "a"), SYSTEM, turn("user", "b")], "messages[1] is a system turn"),
    ([turn("tool", "x"), turn("user", "y")], "messages[0].role 'tool' is not one of"),
    ([turn("user", "  ")], "messages[0].content is empty"),
    ([], "non-empty list"),
    ("{not json", "messages is not valid JSON"),
])
def test_a_bad_conversation_is_quarantined_with_file_row_and_reason(msgs, reason):
    good = [turn("user", "fine")]
    raw = pa.table({"messages": [json.dumps(good), json.dumps(msgs) if not isinstance(msgs, str) else msgs]})
    out = validate_prompts(raw, source="chats.parquet").to_pylist()
    assert out[0]["status"] == "pending"
    assert out[1]["status"] == "quarantined"
    assert out[1]["error"].startswith("chats.parquet row 1: ") and reason in out[1]["error"]


def test_both_a_prompt_and_messages_in_one_row_is_an_error():
    raw = pa.table({"prompt": ["q", None], "messages": [json.dumps([turn("user", "x")])] * 2})
    out = validate_prompts(raw, source="f").to_pylist()
    assert out[0]["status"] == "quarantined" and "both a prompt and messages" in out[0]["error"]
    assert out[1]["status"] == "pending" and out[1]["prompt"] == "x"


def test_sampling_parameters_and_schemas_per_row_and_per_dataset():
    schema = json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}})
    raw = pa.table({"prompt": ["a", "b", "c", "d", "e"],
                    "temperature": [0.3, None, 5.0, None, None],
                    "stop": [["\n\n"], None, None, [""], None],
                    "response_schema": [None, schema, None, None, '{"type": "nope"}']})
    out = validate_prompts(raw, source="f", defaults=RequestDefaults(response_schema=schema_from_choices("x,y"),
                                                                     temperature=0.0)).to_pylist()
    assert out[0]["temperature"] == 0.3 and json.loads(out[0]["stop"]) == ["\n\n"]
    assert json.loads(out[0]["response_schema"]) == {"type": "string", "enum": ["x", "y"]}  # the dataset's
    assert json.loads(out[1]["response_schema"]) == json.loads(schema) and out[1]["temperature"] == 0.0  # its own
    assert out[2]["status"] == "quarantined" and "temperature=5.0 is outside 0..2" in out[2]["error"]
    assert out[3]["status"] == "quarantined" and "stop strings must be non-empty" in out[3]["error"]
    assert out[4]["status"] == "quarantined" and "not a valid JSON Schema" in out[4]["error"]


def test_a_bad_schema_file_names_the_file(tmp_path):
    bad = tmp_path / "schema.json"
    bad.write_text("{\"type\": ")
    with pytest.raises(ShapeError, match=r"schema\.json: response schema is not valid JSON"):
        schema_from_file(bad)
    with pytest.raises(ShapeError, match="distinct"):
        schema_from_choices("a,a")


def test_a_file_with_neither_prompt_nor_messages_is_rejected(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"question": ["q"]}), path)
    with pytest.raises(IngestError, match="missing required column 'prompt'.*'messages' instead"):
        read_prompts(path)


def test_conversations_differing_only_in_an_earlier_turn_are_not_duplicates():
    def chat(first):
        return json.dumps([SYSTEM, turn("user", first), turn("assistant", "Noted."), turn("user", "What next?")])

    raw = pa.table({"messages": [chat("I fly to Paris."), chat("I fly to Tokyo."), chat("I fly to Paris.")]})
    rows = validate_prompts(raw)
    out = deduplicate(rows, DedupConfig(stages=("exact", "near"))).to_pylist()
    assert [r["status"] for r in out] == ["pending", "pending", "duplicate"]
    assert out[2]["dup_of"] == "0"


def test_a_different_schema_or_temperature_is_not_a_duplicate():
    raw = pa.table({"prompt": ["Rate this film: superb."] * 4,
                    "temperature": [None, None, 0.9, None],
                    "response_schema": [None, None, None, schema_from_choices("good,bad")]})
    out = deduplicate(validate_prompts(raw), DedupConfig(stages=("exact", "near"))).to_pylist()
    assert [r["status"] for r in out] == ["pending", "duplicate", "pending", "pending"]
