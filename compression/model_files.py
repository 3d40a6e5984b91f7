"""A model's files as Spectra accepts them: safetensors weights, a tokenizer transformers provides.

Each refusal is a named error saying what to change, never advice to lower a safety setting
(transformers' own messages suggest `weights_only=False` or `trust_remote_code=True`; neither is
ever an option here, so those messages never reach a user).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compression.errors import UnsupportedModelFormat

NO_SAFETENSORS = ("model '{ref}' has no safetensors weights (model.safetensors or a sharded index); Spectra "
                  "never loads pickled weights (.bin, .pt), since unpickling runs code. Convert the weights "
                  "to safetensors and submit again")


def require_safetensors(folder: Path, ref: str) -> None:
    if not any(folder.glob("*.safetensors")):
        raise UnsupportedModelFormat(NO_SAFETENSORS.format(ref=ref))


def is_shape_mismatch(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(words in text for words in ("size mismatch", "mismatched_sizes", "mismatched sizes", "shape mismatch"))


def load_tokenizer(where: Any, ref: str, hub: dict[str, Any]) -> Any:
    """AutoTokenizer without the model's own code; a tokenizer that needs it is refused by name."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(where, trust_remote_code=False, **hub)
    except (ValueError, OSError, ImportError, KeyError, AttributeError) as exc:
        raise UnsupportedModelFormat(
            f"model '{ref}': its tokenizer could not be loaded from the files transformers reads "
            "(tokenizer.json, or a tokenizer class transformers provides); a tokenizer that needs code of "
            f"its own is not supported ({type(exc).__name__})") from None
