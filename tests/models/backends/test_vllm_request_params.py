"""How a Request becomes vLLM sampling parameters (no engine: runs in the fast suite)."""

import json

import pytest

from models.backends import Request
from models.backends.vllm_offline import _engine_args, _sampling_params
from models.catalogue import Tier

pytest.importorskip("vllm")


def req(**kw) -> Request:
    return Request(row_id="r", prompt="p", system=None, max_tokens=32, **kw)


def test_a_plain_row_is_greedy_free_text():
    sp = _sampling_params(req(), 32, logprobs=False)
    assert sp.temperature == 0.0 and sp.max_tokens == 32
    assert not sp.stop and sp.structured_outputs is None and sp.logprobs is None


def test_temperature_stop_and_logprobs_reach_the_row():
    sp = _sampling_params(req(temperature=0.7, stop=("\n\n", "END")), 20, logprobs=True)
    assert sp.temperature == 0.7 and sp.stop == ["\n\n", "END"] and sp.max_tokens == 20 and sp.logprobs == 0


def test_a_choice_list_is_a_choice_and_a_schema_is_json():
    pick = _sampling_params(req(response_schema=json.dumps({"type": "string", "enum": ["yes", "no"]})), 8, False)
    assert pick.structured_outputs.choice == ["yes", "no"] and pick.structured_outputs.json is None
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    shaped = _sampling_params(req(response_schema=json.dumps(schema)), 8, False)
    assert shaped.structured_outputs.json == schema and shaped.structured_outputs.choice is None
    # an enum of non-strings is a JSON Schema, not a choice list
    mixed = _sampling_params(req(response_schema=json.dumps({"enum": ["a", 1]})), 8, False)
    assert mixed.structured_outputs.json == {"enum": ["a", 1]}


def test_schema_text_that_is_not_json_is_refused_before_the_engine():
    with pytest.raises(ValueError):
        _sampling_params(req(response_schema="{nope"), 8, False)


def test_the_engine_writes_compact_json_unless_the_tier_says_otherwise():
    tier = Tier(name="s", backend="vllm", model="m", worker="cpu")
    assert _engine_args(tier, "m")["structured_outputs_config"] == {"backend": "guidance",
                                                                    "disable_any_whitespace": True}
    own = tier.model_copy(update={"engine_args": {"structured_outputs_config": {"backend": "xgrammar"}}})
    assert _engine_args(own, "m")["structured_outputs_config"] == {"backend": "xgrammar"}
