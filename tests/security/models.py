"""Model folders a careless or hostile tenant might point Spectra at: copies of TinyStories-656K with
one thing broken."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import SHARED

SOURCE = SHARED / "models" / "TinyStories-656K"


def clone(root: Path, name: str) -> Path:
    folder = root / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(SOURCE, folder)
    return folder


def edit_json(path: Path, **keys: object) -> None:
    data = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**data, **keys}))


def pickled_weights(root: Path, name: str) -> Path:
    import torch
    from safetensors.torch import load_file

    folder = clone(root, name)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def custom_tokenizer(root: Path, name: str) -> Path:
    folder = clone(root, name)
    (folder / "tokenizer.json").unlink()
    edit_json(folder / "tokenizer_config.json", tokenizer_class="EvilTokenizer",
              auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]})
    return folder


def broken_config(root: Path, name: str) -> Path:
    folder = clone(root, name)
    (folder / "config.json").write_text('{"model_type": "llama", ')
    return folder


def shape_mismatch(root: Path, name: str) -> Path:
    folder = clone(root, name)
    config = json.loads((folder / "config.json").read_text())
    edit_json(folder / "config.json", intermediate_size=config["intermediate_size"] + 8)
    return folder


def link_outside(root: Path, name: str, target: Path) -> Path:
    """An allowed folder whose tokenizer file is a link to a file outside the model roots."""
    folder = clone(root, name)
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").symlink_to(target)
    return folder
