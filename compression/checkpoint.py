"""Facts about a source checkpoint on disk: the dtype its weights are stored in and how many bytes they take.

The artifact is written in the source's dtype by default (a bf16 model stays bf16), and the report
compares the artifact's weight bytes with these.
"""

from __future__ import annotations

import json
from pathlib import Path

# safetensors' dtype names -> the names JobSpec and resolve_dtype use
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
SUPPORTED = ("float32", "bfloat16", "float16")


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files: safetensors shards, else PyTorch .bin shards."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    return files or sorted(folder.glob("pytorch_model*.bin"))


def weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in weight_files(folder))


def checkpoint_dtype(folder: Path) -> str:
    """'float32' | 'bfloat16' | 'float16': what the config says, else the first float tensor stored."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    named = config.get("dtype") or config.get("torch_dtype")
    if isinstance(named, str) and named in SUPPORTED:
        return named
    from safetensors import safe_open

    for path in weight_files(folder):
        if path.suffix != ".safetensors":
            break
        with safe_open(str(path), "pt") as fh:
            for key in fh.keys():
                dtype = fh.get_slice(key).get_dtype()
                if dtype in _SAFETENSORS_DTYPES:
                    return _SAFETENSORS_DTYPES[dtype]
    return "float32"


def card_license(folder: Path) -> str | None:
    """The license named in a checkpoint's model card front matter (README.md), if there is one."""
    readme = Path(folder) / "README.md"
    if not readme.is_file():
        return None
    from huggingface_hub.repocard import metadata_load

    try:
        license_ = (metadata_load(readme) or {}).get("license")
    except Exception:  # a card whose front matter does not parse names no license we can trust
        return None
    return str(license_) if license_ else None
