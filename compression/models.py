"""Load a causal LM by hub id (+ revision) or from a folder under an allowed local root.

Hub ids go through the real transformers / huggingface_hub path and its cache (``cache_dir``, or the
usual HF_HOME when None). Local folders are confined to ``model_roots``: a bare name is looked up in
each root, an absolute path must resolve (symlinks followed) inside one. Remote code is never trusted
when loading a source model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compression.architectures import ARCHITECTURES, ArchSpec, arch_for, prepare_model
from compression.checkpoint import card_license, checkpoint_dtype, weight_bytes
from compression.errors import InvalidConfig, InvalidInput, ModelNotFound, UnsupportedModelFormat
from compression.model_files import (
    NO_SAFETENSORS, check_download_size, is_shape_mismatch, load_tokenizer, require_safetensors,
)
from compression.sources import resolve_local  # noqa: F401  (torch-free; also imported from here)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any
    arch: ArchSpec
    source: dict[str, Any] = field(default_factory=dict)  # kind, ref, revision, path or commit


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("device 'cuda' was requested but no CUDA GPU is available; use 'cpu' or 'auto'")
    return dev


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise InvalidInput(f"dtype '{dtype}' is not supported; use one of {', '.join(DTYPES)}") from None


def _hub_snapshot(ref: str, revision: str | None, cache_dir: Path | None) -> Path:
    """Resolve ref@revision to its snapshot folder (named by the commit), by HF's own hub/cache rules."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        config_path = hf_hub_download(ref, "config.json", revision=revision, cache_dir=cache_dir)
    except (OSError, ValueError, HfHubHTTPError) as exc:
        where = f" at revision '{revision}'" if revision else ""
        # The exception's text names the cache folder and URLs of this server; its type says enough.
        raise ModelNotFound(
            f"model '{ref}'{where} was not found on the Hugging Face hub or in its cache ({type(exc).__name__})"
        ) from None
    return Path(config_path).parent  # .../snapshots/<commit>/config.json


def _hub_license(ref: str, commit: str, cache_dir: Path | None) -> str | None:
    """The license in the hub model card of ref@commit, when the card can be had (it is optional)."""
    from huggingface_hub import hf_hub_download

    try:
        card = Path(hf_hub_download(ref, "README.md", revision=commit, cache_dir=cache_dir))
    except Exception:  # no card, or offline without it cached: the license is simply unknown
        return None
    return card_license(card.parent)


# Called with the source's config.json (a dict) and its family before any weight is read.
ConfigCheck = Callable[[dict[str, Any], ArchSpec], None]


def _read_config(folder: Path, ref: str, check: ConfigCheck | None = None) -> Any:
    from transformers import AutoConfig

    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidConfig(f"model '{ref}': config.json is not valid JSON{where}") from None
    if not isinstance(raw, dict):
        raise InvalidConfig(f"model '{ref}': config.json must be a JSON object")
    arch = arch_for(str(raw.get("model_type")))  # refuse unsupported types before transformers parses them
    if check is not None:
        check(raw, arch)
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise InvalidConfig(f"model '{ref}': config.json could not be read as a "
                            f"{raw.get('model_type')} config ({type(exc).__name__})") from None


def preload_transformers() -> None:
    """Import now what transformers would import on a process's first model load.

    transformers loads most of itself lazily (the auto classes, each architecture's modules, the
    weight-loading machinery, parts of torch.distributed): ~6 s on first use, 0.14 s for a tiny
    model's whole job afterwards. A worker that runs each job in a fresh child calls this once in the
    parent before forking, so children start with it done.
    """
    import importlib
    import importlib.util

    import transformers

    for name in ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "PreTrainedTokenizerFast"):
        getattr(transformers, name)
    for arch in ARCHITECTURES.values():
        getattr(transformers, arch.causal_lm)  # imports the family's configuration and modeling modules
        package = f"transformers.models.{arch.model_type}"
        if importlib.util.find_spec(package) is None:  # e.g. gemma3_text lives in transformers.models.gemma3
            continue
        for name in (f"{package}.tokenization_{arch.model_type}", f"{package}.tokenization_{arch.model_type}_fast"):
            if importlib.util.find_spec(name) is not None:  # not every architecture has each
                importlib.import_module(name)
    for module in ("modeling_utils", "core_model_loading", "tokenization_utils_fast"):
        importlib.import_module(f"transformers.{module}")


@dataclass
class LocatedModel:
    """A model's folder (local, or the hub snapshot of one commit) and its parsed config; no weights read."""

    ref: str
    folder: Path
    config: Any
    arch: ArchSpec
    local: bool
    source: dict[str, Any]
    hub: dict[str, Any]  # extra from_pretrained arguments that pin a hub load to the resolved commit

    @property
    def where(self) -> Any:
        return self.folder if self.local else self.ref

    def tokenizer(self) -> Any:
        return load_tokenizer(self.where, self.ref, self.hub)


def locate_model(ref: str, revision: str | None = None, *, model_roots: Sequence[Path] = (),
                 cache_dir: Path | None = None, check: ConfigCheck | None = None,
                 max_download_bytes: int | None = None) -> LocatedModel:
    """What load_model does before reading weights (for layer-by-layer execution, which reads them
    itself): resolve the ref, refuse paths outside the roots, unknown types and folders without
    safetensors, and `check` the config."""
    try:
        local = resolve_local(ref, model_roots)
    except OSError as exc:  # a name too long for the file system, a folder that cannot be read
        raise ModelNotFound(f"model '{ref}' cannot be read from the model roots ({exc.strerror or 'error'})") from None
    if local is not None and revision:
        raise InvalidInput("revision applies to hub ids only; a local model folder has no revisions")
    snapshot = local if local is not None else _hub_snapshot(ref, revision, cache_dir)
    if local is None and max_download_bytes:
        check_download_size(ref, snapshot.name, cache_dir, snapshot, max_download_bytes)
    config = _read_config(snapshot, ref, check)
    commit = snapshot.name
    hub = {} if local is not None else {"revision": commit, "cache_dir": cache_dir}
    if local is not None:
        require_safetensors(local, ref)
        source = {"kind": "local", "ref": ref}
    else:
        source = {"kind": "hub", "ref": ref, "revision": revision, "commit": commit}
    return LocatedModel(ref=ref, folder=snapshot, config=config, arch=arch_for(config.model_type),
                        local=local is not None, source=source, hub=hub)


def load_model(
    ref: str,
    revision: str | None = None,
    *,
    model_roots: Sequence[Path] = (),
    cache_dir: Path | None = None,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "auto",
    check: ConfigCheck | None = None,
    max_download_bytes: int | None = None,
) -> LoadedModel:
    """Load model + tokenizer, check the architecture is supported (and `check` the config before any
    weight is read), move to device, eval mode."""
    from transformers import AutoModelForCausalLM

    located = locate_model(ref, revision, model_roots=model_roots, cache_dir=cache_dir, check=check,
                           max_download_bytes=max_download_bytes)
    config, arch, hub, where, snapshot = located.config, located.arch, located.hub, located.where, located.folder
    torch_dtype, dev = resolve_dtype(dtype), resolve_device(device)
    try:
        # use_safetensors: pickled weights are never loaded (unpickling runs code), whatever the files say.
        model = AutoModelForCausalLM.from_pretrained(
            where, config=config, dtype=torch_dtype, trust_remote_code=False, use_safetensors=True, **hub
        )
    except OSError as exc:
        if "safetensors" in str(exc):
            raise UnsupportedModelFormat(NO_SAFETENSORS.format(ref=ref)) from None
        raise ModelNotFound(f"model '{ref}': its weights could not be read ({type(exc).__name__})") from None
    except (RuntimeError, ValueError) as exc:
        if is_shape_mismatch(exc):
            raise InvalidConfig(f"model '{ref}': the weights do not match config.json (a tensor's shape differs "
                                "from what the config describes); fix config.json or the weights") from None
        raise
    tokenizer = load_tokenizer(where, ref, hub)
    prepare_model(model, arch).to(dev).eval()
    source = dict(located.source)  # no server path: compression.json goes to the tenant
    # What the checkpoint is stored as, so the artifact keeps it and the report can compare sizes.
    source.update(dtype=checkpoint_dtype(snapshot), weight_bytes=weight_bytes(snapshot),
                  license=card_license(snapshot) if located.local else _hub_license(ref, snapshot.name, cache_dir))
    return LoadedModel(model=model, tokenizer=tokenizer, arch=arch, source=source)


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model's positions support, if the config says."""
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)
