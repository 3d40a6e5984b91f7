"""Hidden states between decoder layers: one tensor per calibration batch, on the host or on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


class HiddenStates:
    """A list of per-batch hidden-state tensors kept in host memory (folder=None) or as files in a folder.

    Files are written once and read back memory-mapped, so a disk-backed stream costs page cache,
    not anonymous memory.
    """

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self._items: list[torch.Tensor | Path] = []
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def reopen(cls, folder: Path) -> "HiddenStates":
        """A disk-backed stream written before (e.g. by an interrupted run), in batch order."""
        stream = cls(folder)
        stream._items = sorted(folder.glob("*.pt"), key=lambda p: int(p.stem))
        return stream

    def append(self, hidden: torch.Tensor) -> None:
        hidden = hidden.detach()
        if self.folder is None:
            self._items.append(hidden.to("cpu", copy=True) if hidden.device.type == "cpu" else hidden.cpu())
            return
        path = self.folder / f"{len(self._items)}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(hidden.cpu().contiguous(), tmp)
        tmp.rename(path)
        self._items.append(path)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self._items[i]
        return torch.load(item, mmap=True, weights_only=True) if isinstance(item, Path) else item

    def discard(self) -> None:
        self._items = []
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
