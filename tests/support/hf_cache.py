"""Lay out a Hugging Face hub cache from /work/shared/models so hub ids resolve offline.

With ``HF_HOME=<hf_home>`` and ``HF_HUB_OFFLINE=1``, ``from_pretrained("raincandy-u/TinyStories-656K")``
then goes through the real huggingface_hub cache lookup with no network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import SHARED

TINYSTORIES_ID = "raincandy-u/TinyStories-656K"
# A made-up but well-formed commit sha: the snapshot folder name and what refs/main points at.
TINYSTORIES_REVISION = "0123456789abcdef0123456789abcdef01234567"
_SKIP = {"SOURCE.md"}


def seed_hf_cache(
    hf_home: Path,
    repo_id: str = TINYSTORIES_ID,
    source: Path | None = None,
    revision: str = TINYSTORIES_REVISION,
) -> Path:
    """Copy ``source`` (default: the shared TinyStories-656K) into the hub cache; returns the snapshot."""
    source = source or SHARED / "models" / "TinyStories-656K"
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} is not a model folder (no config.json)")
    org, name = repo_id.split("/")
    repo = Path(hf_home) / "hub" / f"models--{org}--{name}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and f.name not in _SKIP:
            shutil.copy2(f, snapshot / f.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot
