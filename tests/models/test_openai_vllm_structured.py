"""Structured outputs against vLLM's own OpenAI-compatible server (the demo's premium stand-in), serving the tiny
model: the strict `json_schema` response format the OpenAI backend sends is accepted, and vLLM's guided decoding
makes every answer that finished valid JSON for its schema, unwrapped like a provider's."""

import json
import socket

import jsonschema
import pytest

from models.backends import Request
from models.backends.openai_http import OpenAIBackend
from models.catalogue import Tier
from sluice.stand_in import openai_stand_in

pytestmark = pytest.mark.engine

REVIEW = {"type": "object", "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                                           "stars": {"type": "integer", "minimum": 1, "maximum": 5}},
          "required": ["sentiment", "stars"], "additionalProperties": False}
LABELS = ["billing", "shipping", "returns", "other"]


def test_vllm_server_accepts_the_json_schema_format_and_answers_within_it(tiny_model_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reqs = [Request(f"r{i}", f"Ticket {i}: I was charged twice.", "Answer in JSON.", 96,
                    history=(("user", "Hi."), ("assistant", "Hello.")), temperature=None if i % 2 else 0.5,
                    stop=("###",), response_schema=json.dumps(REVIEW if i < 3 else {"enum": LABELS}))
            for i in range(6)]
    with openai_stand_in(str(tiny_model_dir), "premium-stand-in", port, tmp_path / "server.log",
                         max_model_len=1024) as base_url:
        tier = Tier(name="premium", backend="openai", model="premium-stand-in", base_url=base_url,
                    input_usd_per_1m=2.5, output_usd_per_1m=10.0, max_retries=0)
        result = OpenAIBackend(tier).complete(reqs)
    assert all(c.ok for c in result.completions), [c.error for c in result.completions]
    finished = [(r, c) for r, c in zip(reqs, result.completions) if c.finish_reason == "stop"]
    # with vLLM's default grammar (any whitespace allowed) a random model can spend all its tokens on whitespace
    # after "{": greedy rows here did; `--structured-outputs-config '{"backend": "xgrammar",
    # "disable_any_whitespace": true}'` on the server made every row finish
    assert finished
    for r, c in finished:
        if r.choices():
            assert c.text in LABELS
        else:
            jsonschema.validate(json.loads(c.text), REVIEW)
