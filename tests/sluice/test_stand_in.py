"""The API client against vLLM's own OpenAI-compatible server (the demo's premium stand-in), serving the tiny
model on loopback: real chat completions with real usage, priced like the premium tier."""

import socket

import pytest

from models.backends import Request
from models.backends.openai_http import OpenAIBackend
from models.catalogue import Tier
from sluice.stand_in import openai_stand_in

pytestmark = pytest.mark.engine


def test_vllm_openai_server_answers_the_api_tier(tiny_model_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with openai_stand_in(str(tiny_model_dir), "premium-stand-in", port, tmp_path / "server.log",
                         max_model_len=1024) as base_url:
        tier = Tier(name="premium", backend="openai", model="premium-stand-in", base_url=base_url,
                    input_usd_per_1m=2.5, output_usd_per_1m=10.0, max_retries=0)
        reqs = [Request(f"r{i}", f"Summarise story number {i}.", "Be brief." if i else None, 6) for i in range(4)]
        result = OpenAIBackend(tier).complete(reqs)
    assert [c.row_id for c in result.completions] == ["r0", "r1", "r2", "r3"]
    for c in result.completions:
        assert c.ok and isinstance(c.text, str)
        assert c.input_tokens > 0 and 0 < c.output_tokens <= 6  # usage as vLLM counted it
        assert not c.usage_estimated
    assert result.completions[1].input_tokens > result.completions[0].input_tokens  # the system prompt counted
