"""The self-hosted backend on the real vLLM engine (a tiny random Llama: real loader, scheduler, sampler)."""

import pytest

from models.backends import Request
from models.backends.vllm_offline import VLLMBackend, acquire_engine
from models.catalogue import Catalogue, Tier
from sluice.stages.infer.answer import row_costs

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def tier(tiny_model_dir):
    return Tier(name="small", backend="vllm", model=str(tiny_model_dir), dtype="float32", worker="cpu",
                max_model_len=1024)


def test_a_shard_in_one_call_with_per_row_max_tokens_and_token_counts(tier):
    reqs = [Request(row_id=f"r{i}", prompt=f"Summarise story number {i}.", system="You are terse." if i % 2 else None,
                    max_tokens=4 + i) for i in range(12)]
    result = VLLMBackend(tier).complete(reqs)
    assert [c.row_id for c in result.completions] == [r.row_id for r in reqs]
    for i, c in enumerate(result.completions):
        assert c.ok and isinstance(c.text, str)
        # a random model rarely emits EOS: it runs to its own max_tokens, which proves per-row limits reach vLLM
        assert c.output_tokens <= 4 + i
        assert c.finish_reason in ("length", "stop")
        assert c.input_tokens > 0 and c.latency_ms > 0
    lengths = [c.output_tokens for c in result.completions]
    assert sum(1 for i, n in enumerate(lengths) if n == 4 + i) >= 8
    # the system prompt goes through the chat template: those prompts are longer
    assert result.completions[1].input_tokens > result.completions[0].input_tokens
    assert result.billed_seconds >= result.details["generate_s"] > 0


def test_greedy_answers_are_deterministic_and_the_engine_is_reused(tier):
    reqs = [Request(row_id="a", prompt="What is the capital of France?", system=None, max_tokens=12)]
    first = VLLMBackend(tier).complete(reqs)
    second = VLLMBackend(tier).complete(reqs)
    assert first.completions[0].text == second.completions[0].text
    assert second.details["engine_start_s"] == 0.0  # same settings: the warm engine answers
    assert acquire_engine(tier)[1] == 0.0


def test_self_hosted_cost_apportions_the_billed_time_by_tokens(tier):
    reqs = [Request(row_id=f"r{i}", prompt="word " * (5 + 20 * i), system=None, max_tokens=8) for i in range(3)]
    result = VLLMBackend(tier).complete(reqs)
    cat = Catalogue.model_validate({
        "baseline": "p", "workers": {"cpu": {"usd_per_hour": 3.6}},
        "tiers": [tier.model_dump(), {"name": "p", "backend": "openai", "model": "m", "base_url": "http://x",
                                      "input_usd_per_1m": 1, "output_usd_per_1m": 1}]})
    costs = row_costs(result, tier, cat)
    assert sum(costs) == pytest.approx(result.billed_seconds * 3.6 / 3600)
    tokens = [c.input_tokens + c.output_tokens for c in result.completions]
    assert costs[2] / costs[0] == pytest.approx(tokens[2] / tokens[0])


def test_a_prompt_over_the_context_fails_alone_and_long_answers_are_cut_to_fit(tier):
    reqs = [Request(row_id="ok", prompt="What is the capital of France?", system=None, max_tokens=6),
            Request(row_id="huge", prompt="word " * 3000, system=None, max_tokens=6),
            Request(row_id="tight", prompt="word " * 240, system=None, max_tokens=500)]
    result = VLLMBackend(tier).complete(reqs)
    by = {c.row_id: c for c in result.completions}
    assert by["ok"].ok and by["ok"].output_tokens > 0
    assert not by["huge"].ok and "tier 'small' holds 1024 tokens" in by["huge"].error
    assert by["tight"].ok and by["tight"].input_tokens + by["tight"].output_tokens <= 1024


def test_logprobs_give_each_answer_a_confidence(tier):
    reqs = [Request(row_id=f"r{i}", prompt=f"Question {i}?", system=None, max_tokens=5) for i in range(3)]
    plain = VLLMBackend(tier).complete(reqs).completions
    scored = VLLMBackend(tier.model_copy(update={"logprobs": True})).complete(reqs).completions
    assert all(c.mean_logprob is None for c in plain)
    assert all(c.mean_logprob is not None and c.mean_logprob <= 0 for c in scored)
    assert [c.text for c in scored] == [c.text for c in plain]  # scoring does not change greedy answers


# --- request shapes and structured outputs -------------------------------------------------------------------------

SENTIMENT_SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]},
                   "score": {"type": "integer", "minimum": 0, "maximum": 100}},
    "required": ["sentiment", "score"],
    "additionalProperties": False,
}


def test_every_row_with_a_json_schema_answers_json_that_validates(tier):
    import json

    import jsonschema

    schema = json.dumps(SENTIMENT_SCHEMA)
    reqs = [Request(row_id=f"r{i}", prompt=f"Review {i}: the parcel came {'late' if i % 2 else 'early'}.",
                    system="Label the review's sentiment." if i % 3 else None, max_tokens=64, response_schema=schema)
            for i in range(10)]
    result = VLLMBackend(tier).complete(reqs)
    assert [c.row_id for c in result.completions] == [r.row_id for r in reqs]
    for c in result.completions:
        assert c.ok, c.error
        # A random model would ramble, but every field is bounded (enum, integer 0-100, no extra properties, no
        # free whitespace): the longest valid object is far under 64 tokens, and once it closes the grammar allows
        # only end-of-sequence. So every row must finish on its own, and validate.
        assert c.finish_reason == "stop", (c.text, c.finish_reason)
        jsonschema.validate(json.loads(c.text), SENTIMENT_SCHEMA)
    # Not a constant answer: the grammar constrains the form, the (random) model still picks the content.
    assert len({c.text for c in result.completions}) > 1


def test_a_choice_list_answers_one_of_its_labels_as_plain_text(tier):
    import json

    labels = ["billing", "shipping", "product quality", "other"]
    reqs = [Request(row_id=f"r{i}", prompt=f"Topic of ticket {i}: where is my order?", system=None, max_tokens=16,
                    response_schema=json.dumps({"type": "string", "enum": labels})) for i in range(8)]
    assert reqs[0].choices() == labels
    for c in VLLMBackend(tier).complete(reqs).completions:
        assert c.ok and c.text in labels and c.finish_reason == "stop", (c.text, c.finish_reason)


def test_rows_of_one_batch_keep_their_own_sampling_and_schema(tier):
    import json

    free = Request(row_id="free", prompt="Tell me about Paris.", system=None, max_tokens=12)
    pick = Request(row_id="pick", prompt="Tell me about Paris.", system=None, max_tokens=12,
                   response_schema=json.dumps({"enum": ["yes", "no"]}))
    shaped = Request(row_id="json", prompt="Tell me about Paris.", system=None, max_tokens=64,
                     response_schema=json.dumps(SENTIMENT_SCHEMA))
    alone = {c.row_id: c for c in VLLMBackend(tier).complete([free]).completions}
    mixed = {c.row_id: c for c in VLLMBackend(tier).complete([free, pick, shaped]).completions}
    assert mixed["free"].text == alone["free"].text and mixed["free"].output_tokens == 12  # unconstrained, greedy
    assert mixed["pick"].text in ("yes", "no")
    assert set(json.loads(mixed["json"].text)) == {"sentiment", "score"}


def test_earlier_turns_of_a_conversation_reach_the_prompt(tier):
    base = Request(row_id="a", prompt="And the capital of Italy?", system="Answer briefly.", max_tokens=8)
    chat = Request(row_id="b", prompt="And the capital of Italy?", system="Answer briefly.", max_tokens=8,
                   history=(("user", "What is the capital of France?"), ("assistant", "Paris.")))
    backend = VLLMBackend(tier)
    llm, _ = acquire_engine(tier)
    ids_base, ids_chat = backend._prompt_ids(llm, base), backend._prompt_ids(llm, chat)
    tok = llm.get_tokenizer()
    assert "What is the capital of France?" in tok.decode(ids_chat) and "Paris." in tok.decode(ids_chat)
    assert ids_chat[-len(ids_base) + len(tok.encode("<|im_start|>system\nAnswer briefly.<|im_end|>\n")):] \
        == ids_base[len(tok.encode("<|im_start|>system\nAnswer briefly.<|im_end|>\n")):]
    res = {c.row_id: c for c in backend.complete([base, chat]).completions}
    assert res["b"].input_tokens == len(ids_chat) > res["a"].input_tokens == len(ids_base)


def test_stop_strings_end_the_answer_before_them(tier):
    import json

    # The tiny model's vocabulary is mostly ids its tokenizer cannot spell (free answers decode to ''), so the
    # answer is shaped by a schema: greedy and constrained, it is repeatable, and its text is known.
    schema = json.dumps(SENTIMENT_SCHEMA)
    req = Request(row_id="a", prompt="Review: it broke.", system=None, max_tokens=64, response_schema=schema)
    full = VLLMBackend(tier).complete([req]).completions[0]
    assert full.text.startswith('{"sentiment":"') and full.finish_reason == "stop"
    cut = VLLMBackend(tier).complete([Request(row_id="a", prompt=req.prompt, system=None, max_tokens=64,
                                              response_schema=schema, stop=('"score"', "never-generated-xyz"))]
                                     ).completions[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index('"score"')]  # the stop string itself is not returned
    assert cut.output_tokens < full.output_tokens


def test_temperature_samples_instead_of_greedy(tier):
    import json

    schema = json.dumps(SENTIMENT_SCHEMA)
    greedy = [Request(row_id=f"g{i}", prompt=f"Review {i}.", system=None, max_tokens=64, response_schema=schema)
              for i in range(4)]
    warm = [Request(row_id=f"g{i}", prompt=f"Review {i}.", system=None, max_tokens=64, response_schema=schema,
                    temperature=1.5) for i in range(4)]
    a = [c.text for c in VLLMBackend(tier).complete(greedy).completions]
    assert a == [c.text for c in VLLMBackend(tier).complete(greedy).completions]  # greedy: repeatable
    b = [c.text for c in VLLMBackend(tier).complete(warm).completions]
    # a random model's near-flat distribution: sampled labels and scores (0-100) leave the greedy path
    assert a != b


def test_a_schema_vllm_refuses_fails_its_rows_only(tier):
    import json

    from vllm.sampling_params import MAX_STRUCTURED_OUTPUT_JSON_NESTING

    deep: dict = {"type": "integer"}
    for _ in range(MAX_STRUCTURED_OUTPUT_JSON_NESTING + 2):
        deep = {"type": "object", "properties": {"a": deep}, "required": ["a"]}
    reqs = [Request(row_id="bad-json", prompt="Hi", system=None, max_tokens=8, response_schema="{not json"),
            # valid JSON Schema that vLLM's own validation refuses (handed to generate, it sinks the whole call)
            Request(row_id="too-deep", prompt="Hi", system=None, max_tokens=8, response_schema=json.dumps(deep)),
            Request(row_id="ok", prompt="Hi", system=None, max_tokens=8),
            Request(row_id="pick", prompt="Hi", system=None, max_tokens=8, response_schema='{"enum": ["a", "b"]}')]
    by = {c.row_id: c for c in VLLMBackend(tier).complete(reqs).completions}
    assert not by["bad-json"].ok and "response schema refused" in by["bad-json"].error
    assert not by["too-deep"].ok and "nested too deeply" in by["too-deep"].error
    assert by["ok"].ok and by["ok"].output_tokens == 8
    assert by["pick"].ok and by["pick"].text in ("a", "b")
