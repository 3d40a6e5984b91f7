"""The per-layer engine: every layer-wise method runs through it, resident or streamed.

For each decoder layer in turn the engine loads it (from the resident model, or from the
checkpoint onto the device), hands the method a LayerStep (the dense layer plus the hidden
states entering it), lets the method compress it, pushes the streams on to the next layer,
saves the layer's result to the work folder (resume) and puts the layer away.

Two hidden-state streams exist; a method declares which it reads (LayerwiseMethod.streams):
- "dense": the calibration windows through the original, uncompressed lower layers;
- "compressed": the first n windows through the already-compressed lower layers.
"""

from __future__ import annotations

import hashlib
import json
import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch
from pydantic import BaseModel
from torch import nn

from compression.activations import InputStatistics
from compression.architectures import decoder_layers
from compression.execution.choice import RESUMED
from compression.execution.forward import LayerInputs, capture_inputs
from compression.execution.hidden import HiddenStates
from compression.execution.layers import ResidentLayers
from compression.execution.skeleton import low_rank_structure
from compression.hooks import forward_hooks
from compression.progress import layer_message

if TYPE_CHECKING:
    from compression.methods.base import CompressionContext, MethodReport

DENSE, COMPRESSED = "dense", "compressed"
Options = TypeVar("Options", bound=BaseModel)


def spec_digest(spec_json: dict[str, Any]) -> str:
    """What a work folder is valid for: the job's spec, canonically serialized."""
    return hashlib.sha256(json.dumps(spec_json, sort_keys=True).encode()).hexdigest()


class LayerStep:
    """One decoder layer, dense and on the device, with the hidden states entering it."""

    def __init__(self, index: int, layer: nn.Module, streams: dict[str, HiddenStates], inputs: LayerInputs,
                 device: torch.device, next_dense: HiddenStates | None):
        self.index, self.layer, self.device = index, layer, device
        self._streams, self._inputs, self._next_dense = streams, inputs, next_dense
        self.dense_pass_done = False
        self._influence: tuple[float, int] | None = None

    @torch.no_grad()
    def input_statistics(self, modules: dict[str, nn.Module], stat: str = "gram",
                         dtype: torch.dtype = torch.float32, stream: str = DENSE,
                         token_counts: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
        """`stat` of each module's input while the (still dense) layer runs on `stream`'s windows.

        The first pass over the dense stream also produces the next layer's dense inputs and the
        layer's Block Influence, so call it before changing the layer.
        """
        stats = InputStatistics(modules, stat, dtype)
        with forward_hooks(modules, stats.hook):
            if stream == DENSE and not self.dense_pass_done:
                self._dense_pass()
            else:
                source = self._streams[stream]
                for i in range(len(source)):
                    self._inputs.forward(self.layer, source[i], self.device)
        return stats.result(token_counts)

    def block_influence(self) -> float:
        """1 - mean cos(layer input, layer output) over every dense-stream token (ShortGPT's BI)."""
        if not self.dense_pass_done:
            self._dense_pass()
        assert self._influence is not None
        total, count = self._influence
        return total / count

    @torch.no_grad()
    def _dense_pass(self) -> None:
        source = self._streams[DENSE]
        total, count = torch.zeros((), dtype=torch.float64), 0
        for i in range(len(source)):
            h_in = source[i]
            h_out = self._inputs.forward(self.layer, h_in, self.device)
            cos = torch.nn.functional.cosine_similarity(h_in.to(self.device).float(), h_out.float(), dim=-1)
            total += (1.0 - cos).double().sum().cpu()
            count += cos.numel()
            if self._next_dense is not None:
                self._next_dense.append(h_out)
        self._influence = (float(total), count)
        self.dense_pass_done = True


class LayerwiseMethod(ABC, Generic[Options]):
    """The per-layer interface a method implements once; resident and streamed execution both use it."""

    layerwise = True  # run() lets only such methods stream
    layer_work = "compressed"  # what a layer's progress message says was done to it

    def streams(self, ctx: CompressionContext[Options]) -> dict[str, int | None]:
        """Which hidden-state streams the method reads, with how many windows (None: all)."""
        return {}

    def begin(self, ctx: CompressionContext[Options]) -> None:
        """Plan before the first layer (shapes only: in streamed mode the weights are not loaded)."""

    @abstractmethod
    def layer(self, ctx: CompressionContext[Options], step: LayerStep) -> dict[str, Any]:
        """Compress step.layer in place; return this layer's JSON-able record (ranks, scores)."""

    @abstractmethod
    def finish(self, ctx: CompressionContext[Options], records: list[dict[str, Any]]) -> MethodReport:
        """After the last layer: whole-model decisions (layer removal) and the report."""


def _stream(work: Any, name: str, index: int) -> HiddenStates:
    return HiddenStates(work.stream_folder(name, index) if work is not None else None)


def run_layerwise(ctx: CompressionContext[Options], method: LayerwiseMethod[Options]) -> MethodReport:
    """Drive `method` over every decoder layer of ctx.model, resuming from ctx.work if it has layers."""
    source = ctx.layers if ctx.layers is not None else ResidentLayers(ctx.model, ctx.arch, ctx.device)
    work = ctx.work
    method.begin(ctx)
    n_layers = len(decoder_layers(ctx.model, ctx.arch))
    wanted = method.streams(ctx)
    names = tuple(wanted)
    start = work.finished if work is not None else 0
    records: list[dict[str, Any]] = []
    for index in range(start):
        record = work.record(index)
        source.restore(index, record["structure"], work)
        records.append(record["method"])
    if start:
        # "k of N", not "k/N": progress parsers read "layer i/N" as i layers finished.
        ctx.progress(start / n_layers, f"{RESUMED} {start + 1} of {n_layers} ({start} finished before)")

    streams: dict[str, HiddenStates] = {}
    inputs = LayerInputs()
    if wanted and start < n_layers:
        calibration = ctx.calibration
        assert calibration is not None, "a method reading hidden states needs calibration windows"
        if start:
            streams = {name: HiddenStates.reopen(work.stream_folder(name, start)) for name in names}
            inputs = capture_inputs(ctx.model, ctx.arch, calibration, 1, ctx.device, into=None)
        else:
            dense = _stream(work, DENSE, 0)
            inputs = capture_inputs(ctx.model, ctx.arch, calibration, 1, ctx.device, into=dense)
            if DENSE in wanted:
                streams[DENSE] = dense
            if COMPRESSED in wanted:
                compressed = _stream(work, COMPRESSED, 0)
                for i in range(min(len(dense), wanted[COMPRESSED] or len(dense))):
                    compressed.append(dense[i])
                streams[COMPRESSED] = compressed
            if DENSE not in wanted:
                dense.discard()

    for index in range(start, n_layers):
        ctx.check_stop()
        began = time.perf_counter()
        layer = source.load(index)
        next_dense = _stream(work, DENSE, index + 1) if DENSE in streams else None
        step = LayerStep(index, layer, streams, inputs, ctx.device, next_dense)
        with torch.no_grad() if not getattr(method, "needs_grad", False) else nullcontext():
            record = method.layer(ctx, step)
        nexts: dict[str, HiddenStates] = {}
        if next_dense is not None:
            if not step.dense_pass_done:
                raise RuntimeError(f"{type(method).__name__} read the dense stream but never ran the dense layer")
            nexts[DENSE] = next_dense
        if COMPRESSED in streams:
            nexts[COMPRESSED] = _stream(work, COMPRESSED, index + 1)
            with torch.no_grad():
                for i in range(len(streams[COMPRESSED])):
                    nexts[COMPRESSED].append(inputs.forward(layer, streams[COMPRESSED][i], ctx.device))
        structure = low_rank_structure(layer)
        if work is not None:
            work.save_layer(index, {"method": record, "structure": structure},
                            layer.state_dict() if structure else None)
            work.commit(index + 1, names)
        else:
            for old in streams.values():
                old.discard()
        streams = nexts
        source.put_away(index, layer)
        records.append(record)
        seconds = time.perf_counter() - began
        ctx.progress((index + 1) / n_layers, layer_message(index + 1, n_layers, f"{method.layer_work} in {seconds:.1f} s"))
    for stream in streams.values():
        stream.discard()
    return method.finish(ctx, records)
