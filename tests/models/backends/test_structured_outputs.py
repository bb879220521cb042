"""Request shapes and structured outputs through the API backends, against the loopback servers.

What a provider receives (the conversation, temperature, stop, a strict `json_schema` response format for OpenAI,
a forced `answer` tool for Anthropic) is read from the servers' records; what comes back is parsed and validated
with `jsonschema` here, in the test: the backends themselves only unwrap, the infer stage validates. The invalid-
answer knobs (`Faults.invalid_answers`) must produce answers that fail validation and that the backends return
as they came.
"""

import json

import jsonschema
import pytest

from models.backends import Request, make_backend
from models.backends.anthropic_http import AnthropicBackend
from models.backends.api_rows import answer_shape, structured_text
from models.backends.openai_http import OpenAIBackend
from models.catalogue import Tier
from tests.support.anthropic_server import AnthropicCompatServer
from tests.support.openai_server import (
    Faults,
    InvalidAnswers,
    OpenAICompatServer,
    schema_instance,
    violating_instance,
)

REVIEW = {
    "type": "object",
    "properties": {
        "sentiment": {"enum": ["positive", "negative", "neutral"]},
        "topic": {"type": "string", "maxLength": 40},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["sentiment", "topic", "stars", "tags"],
    "additionalProperties": False,
}
LABELS = ["billing", "shipping", "returns", "other"]
CHOICES = {"enum": LABELS}
SCORES = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 10}, "minItems": 2}
HISTORY = (("user", "I bought a kettle."), ("assistant", "Noted: a kettle."))


def openai_tier(base_url, model="premium-test", **kw):
    kw = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "batch_poll_interval_s": 0.05, **kw}
    return Tier(name="premium", backend="openai", model=model, base_url=base_url, input_usd_per_1m=2.5,
                output_usd_per_1m=10.0, batch_input_usd_per_1m=1.25, batch_output_usd_per_1m=5.0, **kw)


def anthropic_tier(root_url, **kw):
    kw = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05, "batch_poll_interval_s": 0.05, **kw}
    return Tier(name="premium", backend="anthropic", model="claude-test", base_url=root_url,
                input_usd_per_1m=3.0, output_usd_per_1m=15.0, batch_input_usd_per_1m=1.5,
                batch_output_usd_per_1m=7.5, **kw)


def rows(n, schema, prefix="review"):
    return [Request(f"{prefix}{i}", f"{prefix} {i}: the kettle leaks", "Label it.", 64,
                    response_schema=json.dumps(schema) if schema is not None else None) for i in range(n)]


def valid(text, schema):
    return jsonschema.Draft202012Validator(schema).is_valid(json.loads(text))


def by_prompt(received):
    out = {}
    for r in received:
        msgs = r.body.get("messages", [])
        out[msgs[-1]["content"]] = r
    return out


# ---- OpenAI-compatible: real time -------------------------------------------------------------------------------

def test_openai_sends_the_conversation_sampling_and_a_strict_json_schema(openai_server):
    reqs = [Request(f"r{i}", f"review {i}: the kettle leaks", "Extract the fields.", 64, history=HISTORY,
                    temperature=0.3, stop=("###", "END"), response_schema=json.dumps(REVIEW)) for i in range(6)]
    result = OpenAIBackend(openai_tier(openai_server.base_url)).complete(reqs)
    got = by_prompt(openai_server.received)
    assert len(got) == 6
    for req, c in zip(reqs, result.completions):
        body = got[req.prompt].body
        assert body["messages"] == [{"role": "system", "content": "Extract the fields."},
                                    {"role": "user", "content": "I bought a kettle."},
                                    {"role": "assistant", "content": "Noted: a kettle."},
                                    {"role": "user", "content": req.prompt}]
        assert body["temperature"] == 0.3 and body["stop"] == ["###", "END"]
        # an object schema goes as it is, strict
        assert body["response_format"] == {"type": "json_schema",
                                           "json_schema": {"name": "answer", "schema": REVIEW, "strict": True}}
        assert c.ok and valid(c.text, REVIEW)
        assert json.loads(c.text) == schema_instance(REVIEW, req.prompt)  # the server's answer, untouched
        assert got[req.prompt].structured == "valid"


def test_openai_free_text_requests_stay_as_they_were(openai_server):
    result = OpenAIBackend(openai_tier(openai_server.base_url)).complete(rows(2, None))
    body = openai_server.received[0].body
    assert body["temperature"] == 0.0  # None: greedy
    assert "stop" not in body and "response_format" not in body
    assert [c.text for c in result.completions] == ["answer to: review 0: the kettle leaks",
                                                    "answer to: review 1: the kettle leaks"]


def test_openai_non_object_schemas_are_wrapped_and_the_answer_unwrapped(openai_server):
    result = OpenAIBackend(openai_tier(openai_server.base_url)).complete(rows(4, SCORES))
    sent = openai_server.received[0].body["response_format"]["json_schema"]
    assert sent["strict"] is True
    assert sent["schema"] == {"type": "object", "properties": {"value": SCORES}, "required": ["value"],
                              "additionalProperties": False}
    for c in result.completions:
        assert c.ok and valid(c.text, SCORES) and isinstance(json.loads(c.text), list)


def test_openai_choice_lists_come_back_as_labels(openai_server):
    reqs = rows(12, CHOICES)
    result = OpenAIBackend(openai_tier(openai_server.base_url)).complete(reqs)
    schema = openai_server.received[0].body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["value"] == {"type": "string", "enum": LABELS}
    labels = [c.text for c in result.completions]
    assert all(label in LABELS for label in labels)
    # each row its own answer, not one label for all: the server picks by a hash of the prompt
    assert labels == [schema_instance(answer_shape(r).schema, r.prompt)["value"] for r in reqs]
    assert len(set(labels)) > 1


# ---- OpenAI Batch API ----------------------------------------------------------------------------------------

def test_openai_batch_lines_carry_the_request_shape_and_answers_unwrap():
    reqs = (rows(3, REVIEW, "review") + rows(3, CHOICES, "ticket") +
            [Request("chat", "and now?", None, 32, history=HISTORY, temperature=0.5, stop=("\n\n",))])
    with OpenAICompatServer(model="premium-test") as srv:
        result = OpenAIBackend(openai_tier(srv.base_url, batch_api="always")).complete(reqs)
        got = srv.received
    assert {r.endpoint for r in got} == {"batch"} and len(got) == 7
    assert all(c.ok and c.via_batch_api for c in result.completions)
    sent = by_prompt(got)
    for req, c in zip(reqs, result.completions):
        body = sent[req.prompt].body
        if req.response_schema:
            assert body["response_format"]["json_schema"]["schema"] == answer_shape(req).schema
            assert valid(c.text, REVIEW) if req.prompt.startswith("review") else c.text in LABELS
        else:
            assert "response_format" not in body and c.text == "answer to: and now?"
            assert body["messages"][:2] == [{"role": "user", "content": "I bought a kettle."},
                                            {"role": "assistant", "content": "Noted: a kettle."}]
            assert body["temperature"] == 0.5 and body["stop"] == ["\n\n"]


# ---- Anthropic: tool use ---------------------------------------------------------------------------------------

def test_anthropic_answers_through_a_forced_tool_with_the_conversation_mapped():
    reqs = [Request(f"r{i}", f"review {i}: the kettle leaks", "Extract the fields.", 64,
                    history=HISTORY, temperature=0.2, stop=("END",), response_schema=json.dumps(REVIEW))
            for i in range(3)] + rows(6, CHOICES, "ticket") + rows(2, SCORES, "scores")
    with AnthropicCompatServer(model="claude-test") as srv:
        result = AnthropicBackend(anthropic_tier(srv.root_url)).complete(reqs)
        got = by_prompt(srv.received)
    for req, c in zip(reqs, result.completions):
        body = got[req.prompt].body
        assert body["tools"] == [{"name": "answer", "description": "Record the answer.",
                                  "input_schema": answer_shape(req).schema}]
        assert body["tool_choice"] == {"type": "tool", "name": "answer"}
        assert c.ok and c.finish_reason == "tool_use"
        if req.prompt.startswith("review"):
            assert body["system"] == "Extract the fields."
            assert body["messages"] == [{"role": "user", "content": "I bought a kettle."},
                                        {"role": "assistant", "content": "Noted: a kettle."},
                                        {"role": "user", "content": req.prompt}]
            assert body["temperature"] == 0.2 and body["stop_sequences"] == ["END"]
            assert answer_shape(req).schema == REVIEW and valid(c.text, REVIEW)
        elif req.prompt.startswith("ticket"):
            assert c.text in LABELS and body["temperature"] == 0.0 and "stop_sequences" not in body
        else:
            assert valid(c.text, SCORES)
    assert len({c.text for c in result.completions[3:9]}) > 1


def test_anthropic_system_turns_of_the_history_join_the_system_prompt():
    req = Request("r", "go on", "Be brief.", 16, history=(("system", "Answer in French."), ("user", "hi"),
                                                             ("assistant", "salut")))
    with AnthropicCompatServer(model="claude-test") as srv:
        c = AnthropicBackend(anthropic_tier(srv.root_url)).complete([req]).completions[0]
        body = srv.received[0].body
    assert c.ok and c.text == "answer to: go on"
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert "tools" not in body


def test_anthropic_message_batches_carry_the_tool_and_answers_unwrap():
    reqs = rows(4, CHOICES, "ticket") + rows(2, REVIEW, "review")
    with AnthropicCompatServer(model="claude-test") as srv:
        backend = make_backend(anthropic_tier(srv.root_url, batch_api="auto"), deadline_s=48 * 3600)
        result = backend.complete(reqs)
        got = srv.received
    assert {r.endpoint for r in got} == {"batch"} and all(r.body["tool_choice"]["name"] == "answer" for r in got)
    assert all(c.ok and c.via_batch_api for c in result.completions)
    assert all(c.text in LABELS for c in result.completions[:4])
    assert all(valid(c.text, REVIEW) for c in result.completions[4:])


# ---- invalid answers: returned as they came, for the infer stage to reject ---------------------------------------

def test_malformed_and_schema_violating_answers_are_returned_as_is(openai_server):
    rules = (InvalidAnswers(marker="[cut]"), InvalidAnswers(marker="[wrong]", kind="schema"))
    openai_server.set_faults(Faults(invalid_answers=rules))
    reqs = [Request(f"{tag}{i}", f"{tag} review {i}", None, 64, response_schema=json.dumps(schema))
            for tag in ("[cut]", "[wrong]", "[fine]") for i, schema in enumerate((REVIEW, CHOICES, SCORES))]
    result = OpenAIBackend(openai_tier(openai_server.base_url)).complete(reqs)
    got = by_prompt(openai_server.received)
    for req, c in zip(reqs, result.completions):
        schema = json.loads(req.response_schema)
        assert c.ok, "an invalid answer is still an answer: validation is the infer stage's"
        tag = req.row_id[:-1]
        if tag == "[cut]":
            assert got[req.prompt].structured == "malformed"
            with pytest.raises(json.JSONDecodeError):
                json.loads(c.text)
            assert c.text == got[req.prompt].text  # raw, as the server sent it
        elif tag == "[wrong]":
            assert got[req.prompt].structured == "schema"
            if schema == CHOICES:
                assert c.text not in LABELS  # a label outside the list, still unwrapped to plain text
            else:
                assert not valid(c.text, schema)
        else:
            assert got[req.prompt].structured == "valid"
            assert c.text in LABELS if schema == CHOICES else valid(c.text, schema)


def test_times_makes_only_the_first_answers_invalid_and_models_pick_the_tier():
    rules = (InvalidAnswers(marker="[flaky]", times=1), InvalidAnswers(marker="[hard]", models=("mid-test",)))
    reqs = [Request(t, f"{t} ticket", None, 32, response_schema=json.dumps(CHOICES)) for t in ("[flaky]", "[hard]")]
    with OpenAICompatServer(faults=Faults(invalid_answers=rules), model="premium-test") as srv:
        first = OpenAIBackend(openai_tier(srv.base_url, model="mid-test")).complete(reqs).completions
        retry = OpenAIBackend(openai_tier(srv.base_url, model="mid-test")).complete(reqs).completions
        escalated = OpenAIBackend(openai_tier(srv.base_url, model="premium-test")).complete(reqs).completions
        verdicts = [(r.model, r.body["messages"][-1]["content"], r.structured) for r in srv.received]
    assert first[0].text not in LABELS and retry[0].text in LABELS and escalated[0].text in LABELS
    assert first[1].text not in LABELS and retry[1].text not in LABELS and escalated[1].text in LABELS
    assert sorted(verdicts) == sorted([
        ("mid-test", "[flaky] ticket", "malformed"), ("mid-test", "[flaky] ticket", "valid"),
        ("premium-test", "[flaky] ticket", "valid"), ("mid-test", "[hard] ticket", "malformed"),
        ("mid-test", "[hard] ticket", "malformed"), ("premium-test", "[hard] ticket", "valid")])


def test_a_rate_of_invalid_rows_is_per_row_and_repeatable():
    faults = Faults(invalid_answers=(InvalidAnswers(rate=0.3, kind="schema"),), seed=7)
    reqs = rows(60, REVIEW)
    with OpenAICompatServer(faults=faults, model="premium-test") as srv:
        once = OpenAIBackend(openai_tier(srv.base_url)).complete(reqs).completions
        again = OpenAIBackend(openai_tier(srv.base_url)).complete(reqs).completions
    bad = [c.row_id for c in once if not valid(c.text, REVIEW)]
    assert 8 <= len(bad) <= 30  # ~30% of 60
    assert bad == [c.row_id for c in again if not valid(c.text, REVIEW)]  # the same rows each time
    assert all(c.ok for c in once + again)


def test_invalid_answers_reach_the_batch_paths_too():
    rules = (InvalidAnswers(marker="[cut]"), InvalidAnswers(marker="[wrong]", kind="schema"))
    reqs = [Request(t, f"{t} ticket", None, 32, response_schema=json.dumps(CHOICES))
            for t in ("[cut]", "[wrong]", "[fine]")]
    with OpenAICompatServer(faults=Faults(invalid_answers=rules), model="premium-test") as srv:
        oa = OpenAIBackend(openai_tier(srv.base_url, batch_api="always")).complete(reqs).completions
    with AnthropicCompatServer(faults=Faults(invalid_answers=rules), model="claude-test") as srv:
        an = AnthropicBackend(anthropic_tier(srv.root_url, batch_api="always")).complete(reqs).completions
    for comps in (oa, an):
        assert all(c.ok and c.via_batch_api for c in comps)
        cut, wrong, fine = (c.text for c in comps)
        with pytest.raises(json.JSONDecodeError):
            json.loads(cut)
        assert wrong not in LABELS and fine in LABELS


def test_anthropic_invalid_answers_are_returned_as_is():
    rules = (InvalidAnswers(marker="[cut]"), InvalidAnswers(marker="[wrong]", kind="schema"))
    reqs = [Request(f"{t}{i}", f"{t} review {i}", None, 64, response_schema=json.dumps(s))
            for t in ("[cut]", "[wrong]") for i, s in enumerate((REVIEW, SCORES))]
    with AnthropicCompatServer(faults=Faults(invalid_answers=rules), model="claude-test") as srv:
        comps = AnthropicBackend(anthropic_tier(srv.root_url)).complete(reqs).completions
    cut_review, cut_scores, wrong_review, wrong_scores = comps
    for c in (cut_review, cut_scores):  # no tool call: the text block comes back, not JSON
        assert c.ok and c.finish_reason == "end_turn"
        with pytest.raises(json.JSONDecodeError):
            json.loads(c.text)
    assert not valid(wrong_review.text, REVIEW) and not valid(wrong_scores.text, SCORES)


def test_answers_that_do_not_unwrap_come_back_unchanged():
    req = Request("r", "q", None, 8, response_schema=json.dumps(SCORES))
    label = Request("l", "q", None, 8, response_schema=json.dumps(CHOICES))
    for raw in ('{"value": ', "{}", '{"other": 1}', "[1, 2]", "plain words"):
        assert structured_text(req, raw) == raw
    assert structured_text(req, '{"value": [3, 4]}') == "[3, 4]"
    assert structured_text(label, '{"value": "returns"}') == "returns"
    assert structured_text(label, '{"value": 7}') == '{"value": 7}'  # not a label: left for validation
    obj = Request("o", "q", None, 8, response_schema=json.dumps(REVIEW))
    assert structured_text(obj, '{"sentiment": "neutral"}') == '{"sentiment": "neutral"}'  # objects: not wrapped
    assert structured_text(None, "x") == "x" and structured_text(req, None) is None


# ---- the server's schema instances -------------------------------------------------------------------------

SCHEMAS = [
    REVIEW, CHOICES, SCORES,
    {"type": "string", "minLength": 30},
    {"type": "integer", "exclusiveMinimum": 3, "multipleOf": 4},
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": ["string", "null"]},
    {"type": "boolean"},
    {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
               {"properties": {"b": {"type": "string", "format": "date"}}, "required": ["b"]}]},
    {"$defs": {"P": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}},
     "type": "object", "properties": {"people": {"type": "array", "items": {"$ref": "#/$defs/P"}}},
     "required": ["people"]},
    {"$defs": {"L": {"enum": ["u", "v"]}}, "$ref": "#/$defs/L"},
    {"type": "array", "items": {"enum": ["x", "y", "z"]}, "minItems": 3, "uniqueItems": True},
    {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"},
                                      "code": {"type": "string", "pattern": "^[0-9]+$"}}},
    {"type": "object", "properties": {"ok": {"const": True}}, "required": ["ok"]},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: json.dumps(s)[:40])
def test_server_instances_satisfy_and_violations_break_the_schema_and_its_wrapper(schema):
    shape = answer_shape(Request("r", "q", None, 8, response_schema=json.dumps(schema)))
    wrapper = shape.schema
    assert shape.wrapped == (schema.get("type") != "object")
    for text in ("review 3: the kettle leaks", "", "x"):
        for s in (schema, wrapper):
            jsonschema.validate(schema_instance(s, text), s)
        broken, bad = violating_instance(wrapper, text)
        assert broken and not jsonschema.Draft202012Validator(wrapper).is_valid(bad)
        if shape.wrapped:
            assert set(bad) == {"value"}  # it still unwraps: the inner value is what is wrong
        broken, bad = violating_instance(schema, text)
        assert broken and not jsonschema.Draft202012Validator(schema).is_valid(bad)


def test_the_schema_counts_toward_a_rows_estimated_tokens():
    from models.backends.api_rows import estimated_input_tokens, estimated_tokens

    plain = Request("r", "review 1: the kettle leaks", None, 16)
    shaped = Request("r", "review 1: the kettle leaks", None, 16, response_schema=json.dumps(REVIEW))
    assert estimated_input_tokens(shaped) > estimated_input_tokens(plain) + 20  # the schema is billed as input
    assert estimated_tokens(shaped) == estimated_input_tokens(shaped) + 16


def test_a_schema_openai_strict_mode_would_refuse_is_sent_non_strict(openai_server):
    loose = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]}
    reqs = [Request(f"r{i}", f"q {i}", None, 16, response_schema=json.dumps(loose)) for i in range(2)]
    OpenAIBackend(openai_tier(openai_server.base_url)).complete(reqs)
    sent = openai_server.received[0].body["response_format"]["json_schema"]
    assert sent["strict"] is False and sent["schema"] == loose
