import pytest

from models.backends import Completion, Request
from models.catalogue import Tier
from sluice.stages.infer.quantisation import agreement, compare, reference_tier


def test_agreement_is_the_shared_leading_words_over_the_longer_answer():
    assert agreement("the capital is Paris", "the capital is Paris") == 1.0
    assert agreement("the capital is Paris", "the capital was Paris") == 0.5
    assert agreement("Paris", "Lyon is nice") == 0.0
    assert agreement("", "") == 1.0


def test_compare_scores_rows_and_decides_against_the_threshold():
    tier = Tier(name="small", backend="vllm", model="m", worker="cpu", dtype="bfloat16",
                quantization="int8_per_channel_weight_only")
    sample = [Request(f"r{i}", "q", None, 8) for i in range(3)]
    ref = [Completion(f"r{i}", t) for i, t in enumerate(["a b c d", "a b c d", "x y"])]
    cand = [Completion("r0", "a b c d"), Completion("r1", "a b z d"), Completion("r2", None, error="boom")]
    v = compare(sample, ref, cand, tier, threshold=0.6)
    assert [r["agreement"] for r in v.rows] == [1.0, 0.5, 0.0]
    assert v.mean_agreement == pytest.approx(0.5) and v.exact_rate == pytest.approx(1 / 3)
    assert not v.passed and "REFUSED" in v.message() and v.validator == "quantisation:small:int8_per_channel_weight_only"
    assert compare(sample, ref, cand, tier, threshold=0.5).passed


def test_the_reference_is_the_same_model_unquantised_in_fp32():
    tier = Tier(name="small", backend="vllm", model="m", worker="cpu", dtype="bfloat16", quantization="fp8_per_channel")
    ref = reference_tier(tier)
    assert (ref.model, ref.quantization, ref.dtype) == ("m", None, "float32")
