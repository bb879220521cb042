"""The W8A8 int8 builder (models/quantise.py) on the tiny random Llama: the compressed-tensors checkpoint it writes,
and (marked engine) the real vLLM engine serving it."""

import json

import pytest
import torch
from safetensors.torch import load_file

from models.backends import Request
from models.catalogue import Tier
from models.quantise import quantise_w8a8, weights_bytes


@pytest.fixture(scope="session")
def tiny_w8a8_dir(tiny_model_dir, tmp_path_factory):
    return quantise_w8a8(tiny_model_dir, tmp_path_factory.mktemp("models") / "tiny-llama-w8a8")


def test_the_checkpoint_is_int8_per_channel_with_dynamic_int8_activations(tiny_model_dir, tiny_w8a8_dir):
    q = json.loads((tiny_w8a8_dir / "config.json").read_text())["quantization_config"]
    assert (q["quant_method"], q["format"], q["quantization_status"], q["ignore"]) == (
        "compressed-tensors", "int-quantized", "compressed", ["lm_head"])
    group = q["config_groups"]["group_0"]
    assert (group["weights"]["num_bits"], group["weights"]["strategy"], group["weights"]["symmetric"]) == (8, "channel", True)
    assert (group["input_activations"]["strategy"], group["input_activations"]["dynamic"]) == ("token", True)

    full, quant = load_file(tiny_model_dir / "model.safetensors"), load_file(tiny_w8a8_dir / "model.safetensors")
    linear = [k[: -len(".weight")] for k in full if k.endswith("proj.weight")]
    assert len(linear) == 14  # 2 layers x (q, k, v, o, gate, up, down)
    for name in linear:
        w, q8, scale = full[f"{name}.weight"], quant[f"{name}.weight"], quant[f"{name}.weight_scale"]
        assert q8.dtype == torch.int8 and scale.shape == (w.shape[0], 1)
        # one scale per output row, the row's largest |weight| over half the int8 range (255 / 2, as compressed-
        # tensors computes it); every weight lands within half a step
        assert torch.allclose(scale, w.abs().amax(dim=1, keepdim=True) / 127.5)
        assert (q8.to(torch.int16).abs().amax(dim=1) >= 127).all()  # the largest lands on the range edge
        assert ((q8.float() * scale - w).abs() <= scale * 0.501).all()
    for kept in ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"):
        assert quant[kept].dtype == torch.float32 and torch.equal(quant[kept], full[kept])
    # the linear layers shrink to a quarter (+ one fp32 scale per row); the fp32 embeddings and lm_head stay
    fp32_bytes = sum(full[f"{n}.weight"].numel() * 4 for n in linear)
    int8_bytes = sum(quant[f"{n}.weight"].numel() + quant[f"{n}.weight_scale"].numel() * 4 for n in linear)
    assert int8_bytes / fp32_bytes < 0.26
    saved = weights_bytes(tiny_model_dir) - weights_bytes(tiny_w8a8_dir)
    assert saved == pytest.approx(fp32_bytes - int8_bytes, rel=0.01)
    assert quantise_w8a8(tiny_model_dir, tiny_w8a8_dir) == tiny_w8a8_dir  # built once, then reused


@pytest.mark.engine
def test_the_quantised_checkpoint_loads_and_answers_on_the_real_engine(tiny_w8a8_dir):
    from models.backends import release_engines
    from models.backends.vllm_offline import VLLMBackend, acquire_engine

    # bf16: on a CPU with AMX, vLLM's int8 kernel takes bf16 or fp16 activations only (models/quantise.py)
    tier = Tier(name="small", backend="vllm", model=str(tiny_w8a8_dir), dtype="bfloat16", worker="cpu",
                max_model_len=512, logprobs=True)
    try:
        llm, _ = acquire_engine(tier)
        assert llm.llm_engine.model_config.quantization == "compressed-tensors"
        result = VLLMBackend(tier).complete([Request(f"r{i}", p, None, 8) for i, p in enumerate(
            ["What is the capital of France?", "Write a Python function.", "Classify the sentiment."])])
        assert [c.ok for c in result.completions] == [True] * 3
        assert all(c.output_tokens > 0 and c.mean_logprob is not None for c in result.completions)
        again = VLLMBackend(tier).complete([Request("r0", "What is the capital of France?", None, 8)])
        assert again.completions[0].text == result.completions[0].text  # greedy: the same answer
    finally:
        release_engines()
