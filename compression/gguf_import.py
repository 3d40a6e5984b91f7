"""Convert a GGUF checkpoint (e.g. SmolLM2-135M-Instruct Q4_1) into a plain Hugging Face folder.

transformers dequantizes GGUF tensors on load; we then save fp32 safetensors so every later load is
an ordinary ``from_pretrained(folder)``. The weights are 4-bit rounded, not the upstream bf16 ones.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write ``out_dir`` (config, fp32 safetensors, tokenizer) from ``gguf_path``; atomic via rename."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file {gguf_path} does not exist")
    folder, name = str(gguf_path.parent), gguf_path.name
    kwargs: dict[str, object] = {"gguf_file": name}
    try:  # transformers 5.x wants an explicit dequantizing config to produce plain tensors
        from transformers import GgufConfig  # type: ignore[attr-defined]

        kwargs["quantization_config"] = GgufConfig(gguf_file=name, dequantize=True)
    except ImportError:
        pass
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = out_dir.with_name(out_dir.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    if out_dir.exists():
        shutil.rmtree(partial)
    else:
        partial.rename(out_dir)
    return out_dir
