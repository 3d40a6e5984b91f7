"""Where a model's files are, without torch: local folders confined to the allowed roots, hub ids in the
Hugging Face cache. The loader (compression.models) and the preflight estimate (also run by the API,
which has no torch) both use it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from compression.errors import InvalidInput, ModelNotFound, PathNotAllowed


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# A model folder's files are checked one by one; a folder with more entries than this is refused.
MAX_MODEL_FILES = 10_000


def _check_links_stay_inside(folder: Path, ref: str, roots: Sequence[Path]) -> None:
    """Every file of the folder, symlinks resolved, lies under an allowed root: an allowed folder must
    not lend its name to a link to anything else on the worker's disk."""
    for n, path in enumerate(folder.rglob("*")):
        if n >= MAX_MODEL_FILES:
            raise InvalidInput(f"model folder '{ref}' has more than {MAX_MODEL_FILES} files")
        if path.is_symlink() and not any(_inside(path.resolve(), r) for r in roots):
            raise PathNotAllowed(f"model folder '{ref}' contains a link ({path.relative_to(folder)}) to a file "
                                 "outside the allowed model roots")


def resolve_local(ref: str, model_roots: Sequence[Path]) -> Path | None:
    """The folder a local ref names, or None for a hub id. Raises for paths outside the roots. Messages
    name what the user gave, never the roots (the server's paths)."""
    roots = [Path(r).resolve() for r in model_roots]
    if ref.startswith("/"):
        path = Path(ref).resolve()  # follows symlinks, so a link cannot smuggle a path out
        if not any(_inside(path, r) for r in roots):
            configured = "" if roots else " (none configured)"
            raise PathNotAllowed(f"model path {ref} is outside the allowed model roots{configured}")
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"model folder {ref} does not exist or has no config.json")
        _check_links_stay_inside(path, ref, roots)
        return path
    if "/" in ref:
        return None  # "org/name": a hub id
    for root in roots:
        candidate = (root / ref).resolve()
        if _inside(candidate, root) and (candidate / "config.json").is_file():
            _check_links_stay_inside(candidate, ref, roots)
            return candidate
    configured = "" if roots else " (none configured)"
    raise ModelNotFound(f"no model folder named '{ref}' under the allowed model roots{configured}")


def hub_metadata_folder(ref: str, revision: str | None, cache_dir: Path | None, *, cached_only: bool) -> Path | None:
    """The snapshot folder holding the hub model's config.json (and its safetensors index, when the
    checkpoint is sharded), fetched into the cache by huggingface_hub, or found there only with
    `cached_only`. None when it cannot be had (not cached, offline, unknown model)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        config = Path(hf_hub_download(ref, "config.json", revision=revision, cache_dir=cache_dir,
                                      local_files_only=cached_only))
    except (OSError, ValueError, HfHubHTTPError):
        return None
    try:  # only sharded checkpoints have one; its metadata.total_size is the checkpoint's size
        hf_hub_download(ref, "model.safetensors.index.json", revision=config.parent.name, cache_dir=cache_dir,
                        local_files_only=cached_only)
    except (EntryNotFoundError, LocalEntryNotFoundError, OSError, ValueError, HfHubHTTPError):
        pass
    return config.parent


def metadata_folder(ref: str, revision: str | None, model_roots: Sequence[Path], cache_dir: Path | None, *,
                    cached_only: bool) -> Path | None:
    """Where config.json (and the checkpoint or its index) of `ref` can be read; None if not available."""
    local = resolve_local(ref, model_roots)
    if local is not None:
        return local
    return hub_metadata_folder(ref, revision, cache_dir, cached_only=cached_only)
