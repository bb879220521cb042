"""The self-hosted backend on the real vLLM engine (a tiny random Llama: real loader, scheduler, sampler)."""

import pytest

from models.backends import Request
from models.backends.vllm_offline import VLLMBackend, acquire_engine
from models.catalogue import Catalogue, Tier
from sluice.infer import row_costs

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
