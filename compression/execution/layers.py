"""Where decoder layers come from: the resident model, or the checkpoint one layer at a time.

Both sources give the engine the same four operations (load a dense layer onto the device, put a
finished one away, restore a finished one from the work folder, bring any layer of the current
model onto the device for a forward pass), so a method's per-layer code never knows which runs it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from compression.architectures import ArchSpec, decoder_layers
from compression.execution.checkpoint import CheckpointReader
from compression.execution.skeleton import (
    SOURCE_INDEX,
    fill,
    fill_from_checkpoint,
    is_meta,
    move_buffers,
    release,
    shape_like,
    tied_names,
)
from compression.execution.workfolder import WorkFolder


class ResidentLayers:
    """Every weight already on the device (today's execution)."""

    streamed = False

    def __init__(self, model: nn.Module, arch: ArchSpec, device: torch.device):
        self.model, self.arch, self.device = model, arch, device

    def load(self, index: int) -> nn.Module:
        return decoder_layers(self.model, self.arch)[index]

    def put_away(self, index: int, layer: nn.Module) -> None:
        pass

    def restore(self, index: int, structure: dict[str, int], work: WorkFolder) -> None:
        layer = decoder_layers(self.model, self.arch)[index]
        if work.has_weights(index):
            shape_like(layer, structure)
            fill(layer, work.weights(index, self.device, None))

    def bring(self, layer: nn.Module, dense: bool = False) -> nn.Module:
        return layer

    def send_back(self, layer: nn.Module, dense: bool = False) -> None:
        pass


class StreamedLayers:
    """A weightless skeleton; each layer is read from the checkpoint (or the work folder) when needed.

    offload='cpu' keeps finished layers in host memory; offload='disk' keeps them only in the work
    folder, so neither the device nor the host ever holds the whole model's layers.
    """

    streamed = True

    def __init__(self, model: nn.Module, arch: ArchSpec, reader: CheckpointReader, device: torch.device,
                 dtype: torch.dtype, offload: str, work: WorkFolder):
        self.model, self.arch, self.reader = model, arch, reader
        self.device, self.dtype, self.offload, self.work = device, dtype, offload, work
        for i, layer in enumerate(decoder_layers(model, arch)):
            setattr(layer, SOURCE_INDEX, i)
        self._names = {id(m): name for name, m in model.named_modules()}

    # -- embeddings, final norm, head -------------------------------------------------------------
    def load_outer(self, device: torch.device) -> None:
        """Embedding, final norm and head onto `device` (the head re-tied to the embedding if tied)."""
        model = self.model
        embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
        norm = model.get_submodule(self.arch.final_norm_path)
        for module in (embedding, norm):
            fill_from_checkpoint(module, self._names[id(module)] + ".", self.reader, device, self.dtype)
        if tied_names(model):
            head.weight = embedding.weight
        else:
            fill_from_checkpoint(head, self._names[id(head)] + ".", self.reader, device, self.dtype)
        move_buffers(model, device)

    # -- decoder layers ---------------------------------------------------------------------------
    def _prefix(self, layer: nn.Module) -> str:
        return f"{self.arch.layers_path}.{getattr(layer, SOURCE_INDEX)}."

    def load(self, index: int) -> nn.Module:
        layer = decoder_layers(self.model, self.arch)[index]
        fill_from_checkpoint(layer, self._prefix(layer), self.reader, self.device, self.dtype)
        return layer

    def put_away(self, index: int, layer: nn.Module) -> None:
        if self.offload == "cpu":
            layer.to("cpu")
        else:
            release(layer)

    def restore(self, index: int, structure: dict[str, int], work: WorkFolder) -> None:
        layer = decoder_layers(self.model, self.arch)[index]
        shape_like(layer, structure)
        if self.offload == "cpu":
            self._fill(layer, torch.device("cpu"))

    def _fill(self, layer: nn.Module, device: torch.device, dense: bool = False) -> None:
        source = getattr(layer, SOURCE_INDEX)
        if not dense and self.work.has_weights(source):
            shape_like(layer, self.work.record(source)["structure"])
            fill(layer, self.work.weights(source, device))
        else:
            fill_from_checkpoint(layer, self._prefix(layer), self.reader, device, self.dtype)

    def bring(self, layer: nn.Module, dense: bool = False) -> nn.Module:
        """The layer on the device: its current weights (finished or dense), or (dense=True) the checkpoint's."""
        if dense or is_meta(layer):
            self._fill(layer, self.device, dense)
        else:
            layer.to(self.device)
        return layer

    def send_back(self, layer: nn.Module, dense: bool = False) -> None:
        """After a pass: a dense copy is simply dropped (the checkpoint has it); a finished layer waits
        where the offload setting keeps it."""
        if dense:
            release(layer)
        else:
            self.put_away(-1, layer)

    def weight_groups(self, dense: bool, dtype: torch.dtype | None) -> Iterator[dict[str, torch.Tensor]]:
        """The artifact's tensors in the model's state_dict order, one decoder layer at a time on the host.

        A layer waiting on disk is read back, yielded and dropped again, so writing the artifact never
        holds more than the embeddings, the head and one layer (plus the shard being filled).
        """
        from compression.export import artifact_state_dict

        host = torch.device("cpu")
        self.load_outer(host)
        layers = decoder_layers(self.model, self.arch)
        prefix = self.arch.layers_path + "."
        outer = {name: t for name, t in self.model.state_dict().items() if not name.startswith(prefix)}
        seen: set[tuple[int, int]] = set()
        done_layers: set[int] = set()
        for name in self.model.state_dict(keep_vars=True):
            if name.startswith(prefix):
                index = int(name[len(prefix):].split(".", 1)[0])
                if index in done_layers:
                    continue
                done_layers.add(index)
                layer = layers[index]
                was_meta = is_meta(layer)
                if was_meta:
                    self._fill(layer, host)
                else:
                    layer.to(host)
                state = artifact_state_dict(layer, dense, dtype)
                yield {f"{prefix}{index}.{key}": t for key, t in state.items()}
                if was_meta:
                    release(layer)
                continue
            t = outer[name]
            key = (t.untyped_storage().data_ptr(), t.storage_offset())
            if key in seen:  # the head tied to the embedding: transformers re-ties it on load
                continue
            seen.add(key)
            t = t.detach()
            if dtype is not None and t.is_floating_point():
                t = t.to(dtype)
            yield {name: t.contiguous()}
