"""The API client against vLLM's own OpenAI-compatible server (the demo's premium stand-in), serving the tiny
model on loopback: real chat completions with real usage, priced like the premium tier; and structured outputs:
the strict `json_schema` response format the OpenAI backend sends is accepted, and vLLM's guided decoding keeps
every answer valid for its schema, unwrapped like a provider's. One server for the module (a start is minutes)."""

import json
import socket

import jsonschema
import pytest

from models.backends import Request
from models.backends.openai_http import OpenAIBackend
from models.catalogue import Tier
from models.stand_in import openai_stand_in

pytestmark = pytest.mark.engine

REVIEW = {"type": "object", "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                                           "stars": {"type": "integer", "minimum": 1, "maximum": 5}},
          "required": ["sentiment", "stars"], "additionalProperties": False}
LABELS = ["billing", "shipping", "returns", "other"]


@pytest.fixture(scope="module")
def premium_tier(tiny_model_dir, tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("stand-in") / "server.log"
    with openai_stand_in(str(tiny_model_dir), "premium-stand-in", port, log, max_model_len=1024) as base_url:
        yield Tier(name="premium", backend="openai", model="premium-stand-in", base_url=base_url,
                   input_usd_per_1m=2.5, output_usd_per_1m=10.0, max_retries=0)


def test_vllm_openai_server_answers_the_api_tier(premium_tier):
    reqs = [Request(f"r{i}", f"Summarise story number {i}.", "Be brief." if i else None, 6) for i in range(4)]
    result = OpenAIBackend(premium_tier).complete(reqs)
    assert [c.row_id for c in result.completions] == ["r0", "r1", "r2", "r3"]
    for c in result.completions:
        assert c.ok and isinstance(c.text, str)
        assert c.input_tokens > 0 and 0 < c.output_tokens <= 6  # usage as vLLM counted it
        assert not c.usage_estimated
    assert result.completions[1].input_tokens > result.completions[0].input_tokens  # the system prompt counted


def test_vllm_server_accepts_the_json_schema_format_and_answers_within_it(premium_tier):
    reqs = [Request(f"r{i}", f"Ticket {i}: I was charged twice.", "Answer in JSON.", 96,
                    history=(("user", "Hi."), ("assistant", "Hello.")), temperature=None if i % 2 else 0.5,
                    stop=("###",), response_schema=json.dumps(REVIEW if i < 3 else {"enum": LABELS}))
            for i in range(6)]
    result = OpenAIBackend(premium_tier).complete(reqs)
    assert all(c.ok for c in result.completions), [c.error for c in result.completions]
    # the stand-in decodes compact JSON (no free whitespace), so even a random model's answers finish in budget
    assert all(c.finish_reason == "stop" for c in result.completions), [c.finish_reason for c in result.completions]
    for r, c in zip(reqs, result.completions):
        if r.choices():
            assert c.text in LABELS
        else:
            jsonschema.validate(json.loads(c.text), REVIEW)
