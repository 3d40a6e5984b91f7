"""A model's files as Spectra accepts them: safetensors weights, a tokenizer transformers provides.

Each refusal is a named error saying what to change, never advice to lower a safety setting
(transformers' own messages suggest `weights_only=False` or `trust_remote_code=True`; neither is
ever an option here, so those messages never reach a user).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compression.errors import ModelTooLarge, UnsupportedModelFormat

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


def check_download_size(ref: str, revision: str, cache_dir: Path | None, snapshot: Path, limit: int) -> None:
    """Refuse a hub model whose files exceed `limit` bytes, before they are downloaded: the sizes the hub
    lists for the revision (a dry run), or, offline, what the cache holds for it."""
    from huggingface_hub import snapshot_download

    try:
        files = snapshot_download(ref, revision=revision, cache_dir=cache_dir, dry_run=True)
        total = sum(f.file_size or 0 for f in files)
    except Exception:  # offline or unreachable: the cache is all that a load could read
        total = sum(p.stat().st_size for p in snapshot.rglob("*") if p.is_file())
    if total > limit:
        raise ModelTooLarge(f"model '{ref}' is {total / 2**20:.0f} MiB, above this server's download limit of "
                            f"{limit / 2**20:.0f} MiB; choose a smaller model or ask the operator")
