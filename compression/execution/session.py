"""A model opened for sequential execution: skeleton, lazy checkpoint, streamed evaluation, export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import torch
from torch import nn

from compression.errors import InvalidInput
from compression.execution.checkpoint import CheckpointReader
from compression.execution.evaluate import streamed_perplexity
from compression.execution.hidden import HiddenStates
from compression.execution.layers import StreamedLayers
from compression.execution.skeleton import empty_model, tied_names
from compression.execution.workfolder import WorkFolder
from compression.models import LocatedModel

WEIGHT_FILES = ["*.safetensors", "*.safetensors.index.json"]


def checkpoint_folder(located: LocatedModel, cache_dir: Path | None) -> Path:
    """The folder holding the safetensors: the local folder, or the hub snapshot with its weight files."""
    if located.local:
        return located.folder
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(located.ref, revision=located.source["commit"], cache_dir=cache_dir,
                                  allow_patterns=WEIGHT_FILES))


class StreamedSession:
    def __init__(self, located: LocatedModel, *, dtype: torch.dtype, device: torch.device, offload: str,
                 work: WorkFolder, cache_dir: Path | None):
        self.arch, self.source, self.device, self.work = located.arch, located.source, device, work
        self.offload = offload
        self.tokenizer = located.tokenizer()
        if located.arch.transposed or located.arch.experts:
            raise InvalidInput(f"sequential execution does not support {located.arch.model_type} models yet "
                               "(Conv1D or mixture-of-experts layouts); use execution mode 'resident'")
        self.model: nn.Module = empty_model(located.config, dtype)
        if (located.folder / "generation_config.json").is_file():  # as from_pretrained would read it
            from transformers import GenerationConfig

            self.model.generation_config = GenerationConfig.from_pretrained(located.folder)
        reader = CheckpointReader(checkpoint_folder(located, cache_dir), tied_names(self.model))
        self.layers = StreamedLayers(self.model, located.arch, reader, device, dtype, offload, work)
        self.layers.load_outer(device)

    def perplexity(self, tokens: torch.Tensor, seq_len: int, max_windows: int | None, batch_size: int, *,
                   dense: bool, progress: Callable[[float, str], None] | None = None) -> float:
        scratch = HiddenStates(self.work.root / "eval" if self.offload == "disk" else None)
        return streamed_perplexity(self.layers, tokens, seq_len, max_windows, batch_size, dense=dense,
                                   scratch=scratch, progress=progress)

    def export_model(self) -> nn.Module:
        """The skeleton: config, generation config and low-rank structure (export reads weight_groups)."""
        return self.model

    def weight_groups(self, dense: bool, dtype: torch.dtype | None):
        return self.layers.weight_groups(dense, dtype)
