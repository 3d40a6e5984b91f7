"""Perplexity with one decoder layer on the device at a time: the same protocol and numbers as
compression.evaluation.perplexity (same windows, batches, float32 logits, summed NLL)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from compression.architectures import decoder_layers
from compression.errors import InvalidInput
from compression.execution.forward import capture_inputs
from compression.execution.hidden import HiddenStates
from compression.execution.layers import StreamedLayers


@torch.no_grad()
def streamed_perplexity(source: StreamedLayers, tokens: torch.Tensor, seq_len: int, max_windows: int | None,
                        batch_size: int, *, dense: bool, scratch: HiddenStates | None = None,
                        progress: Callable[[float, str], None] | None = None) -> float:
    """exp(mean NLL) of the model `source` streams; dense=True reads every layer from the checkpoint."""
    model, arch, device = source.model, source.arch, source.device
    n_windows = tokens.numel() // seq_len
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows < 1:
        raise InvalidInput(f"the evaluation text has {tokens.numel()} tokens, fewer than one window of {seq_len}")
    windows = tokens[: n_windows * seq_len].view(n_windows, seq_len)
    hidden = scratch if scratch is not None else HiddenStates()
    inputs = capture_inputs(model, arch, windows, batch_size, device, into=hidden)
    layers = decoder_layers(model, arch)
    for done, layer in enumerate(layers):
        source.bring(layer, dense=dense)
        following = HiddenStates(None if hidden.folder is None else hidden.folder.with_name(hidden.folder.name + "+"))
        for i in range(len(hidden)):
            following.append(inputs.forward(layer, hidden[i], device))
        source.send_back(layer, dense=dense)
        hidden.discard()
        if following.folder is not None:  # keep one folder name for the stream
            following.folder.rename(hidden.folder)
            following = HiddenStates.reopen(hidden.folder)  # type: ignore[arg-type]
        hidden = following
        if progress is not None:
            progress((done + 1) / (len(layers) + 1), f"layer {done + 1}/{len(layers)}")
    norm = model.get_submodule(arch.final_norm_path)
    head = model.get_output_embeddings()
    total_nll, total_count = 0.0, 0
    for i, start in enumerate(range(0, n_windows, batch_size)):
        batch = windows[start : start + batch_size].to(device)
        logits = head(norm(hidden[i].to(device))).float()
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                              reduction="sum")
        total_nll += float(nll)
        total_count += batch[:, 1:].numel()
    hidden.discard()
    if progress is not None:
        progress(1.0, f"{n_windows} windows")
    return math.exp(total_nll / total_count)
