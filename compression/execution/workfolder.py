"""Per-layer results of a layer-by-layer run, kept in a work folder so a rerun can resume.

Layout: ``layers/<k>.json`` (the method's record for layer k and the layer's low-rank structure),
``layers/<k>.safetensors`` (the layer's weights when the method changed them), ``streams/<name>.<k>/``
(hidden states entering layer k) and ``progress.json`` ({digest, finished}). Writing progress.json
(atomically) is the commit point of a layer: everything it points at was written before it. A
folder written for another spec (different digest) is cleared, never mixed in.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

PROGRESS = "progress.json"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class WorkFolder:
    def __init__(self, root: Path, digest: str):
        self.root, self.digest = Path(root), digest
        progress = self.root / PROGRESS
        self.finished = 0
        if progress.is_file():
            saved = json.loads(progress.read_text())
            if saved.get("digest") == digest:
                self.finished = int(saved["finished"])
            else:
                shutil.rmtree(self.root)
        (self.root / "layers").mkdir(parents=True, exist_ok=True)
        (self.root / "streams").mkdir(parents=True, exist_ok=True)
        if self.finished == 0:  # leftovers of an attempt that finished no layer: start clean
            for leftover in (self.root / "streams").iterdir():
                shutil.rmtree(leftover, ignore_errors=True)

    def stream_folder(self, name: str, index: int) -> Path:
        return self.root / "streams" / f"{name}.{index}"

    def save_layer(self, index: int, record: dict[str, Any], state: dict[str, torch.Tensor] | None) -> None:
        from safetensors.torch import save_file

        weights = self.root / "layers" / f"{index}.safetensors"
        if state is not None:
            tmp = weights.with_name(weights.name + ".tmp")
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
            os.replace(tmp, weights)
        else:
            weights.unlink(missing_ok=True)
        _write_atomic(self.root / "layers" / f"{index}.json", json.dumps(record))

    def commit(self, finished: int, streams: tuple[str, ...]) -> None:
        """Layers [0, finished) are done; the streams entering layer `finished` are complete."""
        _write_atomic(self.root / PROGRESS, json.dumps({"digest": self.digest, "finished": finished}))
        self.finished = finished
        for name in streams:
            shutil.rmtree(self.stream_folder(name, finished - 1), ignore_errors=True)

    def record(self, index: int) -> dict[str, Any]:
        return json.loads((self.root / "layers" / f"{index}.json").read_text())

    def has_weights(self, index: int) -> bool:
        return (self.root / "layers" / f"{index}.safetensors").is_file()

    def weights(self, index: int, device: torch.device | str, dtype: torch.dtype | None = None
                ) -> dict[str, torch.Tensor]:
        from safetensors import safe_open

        out = {}
        with safe_open(self.root / "layers" / f"{index}.safetensors", framework="pt", device="cpu") as f:
            for name in f.keys():
                t = f.get_tensor(name)
                out[name] = (t.to(dtype) if dtype is not None and t.is_floating_point() else t).to(device)
        return out
