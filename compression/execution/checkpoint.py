"""Read a Hugging Face checkpoint's tensors lazily: one module's weights at a time, memory-mapped.

A folder holds either one ``model.safetensors`` or shards listed in ``model.safetensors.index.json``.
safetensors.safe_open maps each file, so asking for one layer's tensors reads only those bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from compression.errors import ModelNotFound

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


class CheckpointReader:
    """Tensor name -> file map of a safetensors checkpoint, read one prefix at a time."""

    def __init__(self, folder: Path, tied: dict[str, str] | None = None):
        self.folder = Path(folder)
        if (self.folder / INDEX).is_file():
            weight_map = json.loads((self.folder / INDEX).read_text())["weight_map"]
            self.files = {name: self.folder / file for name, file in weight_map.items()}
        elif (self.folder / SINGLE).is_file():
            with safe_open(self.folder / SINGLE, framework="pt") as f:
                self.files = {name: self.folder / SINGLE for name in f.keys()}
        else:
            raise ModelNotFound(
                f"{self.folder} has no {SINGLE} or {INDEX}; layer-streaming execution reads safetensors only"
            )
        # Tied weights (lm_head <-> embed_tokens) may be stored under only one of their names.
        self.tied = dict(tied or {})
        self.tied.update({b: a for a, b in list(self.tied.items())})

    def __contains__(self, name: str) -> bool:
        return self._stored_name(name) is not None

    def _stored_name(self, name: str) -> str | None:
        if name in self.files:
            return name
        other = self.tied.get(name)
        return other if other in self.files else None

    def tensor(self, name: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
        stored = self._stored_name(name)
        if stored is None:
            raise ModelNotFound(f"tensor '{name}' is not in the checkpoint at {self.folder}")
        with safe_open(self.files[stored], framework="pt", device="cpu") as f:
            t = f.get_tensor(stored)
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        return t.to(device)

    def tensors(self, names: list[str], prefix: str, device: torch.device | str,
                dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
        """{relative name: tensor} for `prefix + name`, grouped per file so each file is opened once."""
        by_file: dict[Path, list[tuple[str, str]]] = {}
        for name in names:
            stored = self._stored_name(prefix + name)
            if stored is None:
                raise ModelNotFound(f"tensor '{prefix + name}' is not in the checkpoint at {self.folder}")
            by_file.setdefault(self.files[stored], []).append((name, stored))
        out: dict[str, torch.Tensor] = {}
        for file, pairs in by_file.items():
            with safe_open(file, framework="pt", device="cpu") as f:
                for name, stored in pairs:
                    t = f.get_tensor(stored)
                    if dtype is not None and t.is_floating_point():
                        t = t.to(dtype)
                    out[name] = t.to(device)
        return out
