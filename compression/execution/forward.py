"""Running decoder layers one at a time exactly as the model's own forward runs them.

The first layer's inputs are captured from the model's real forward (a pre-hook on layer 0 that
stops the pass), so the hidden states, attention mask, position ids and rotary embeddings are the
ones transformers computes for this architecture and version; every later layer gets the same
keyword arguments, as in the model's loop over its layers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compression.architectures import ArchSpec, decoder_layers
from compression.execution.hidden import HiddenStates
from compression.hooks import calibration_mode, first_tensor


class _Captured(Exception):
    pass


class LayerInputs:
    """The non-hidden arguments every decoder layer receives, per batch shape [batch, seq]."""

    def __init__(self) -> None:
        self.by_shape: dict[tuple[int, ...], tuple[tuple, dict[str, Any]]] = {}

    def forward(self, layer: nn.Module, hidden: torch.Tensor, device: torch.device) -> torch.Tensor:
        args, kwargs = self.by_shape[tuple(hidden.shape[:-1])]
        return first_tensor(layer(hidden.to(device), *args, **kwargs))


def capture_inputs(model: nn.Module, arch: ArchSpec, windows: torch.Tensor, batch_size: int,
                   device: torch.device, into: HiddenStates | None) -> LayerInputs:
    """Embed every batch of `windows` with the model's own forward; hidden states go `into` (None: dropped)."""
    inputs = LayerInputs()
    first = decoder_layers(model, arch)[0]
    captured: dict[str, Any] = {}

    def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured["args"], captured["kwargs"] = args, kwargs
        raise _Captured

    handle = first.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        with calibration_mode(model):
            for start in range(0, windows.shape[0], batch_size):
                batch = windows[start : start + batch_size].to(device)
                try:
                    model(input_ids=batch, use_cache=False)
                except _Captured:
                    pass
                args, kwargs = captured["args"], dict(captured["kwargs"])
                hidden = args[0] if args else kwargs.pop("hidden_states")
                rest = args[1:] if args else ()
                inputs.by_shape.setdefault(tuple(hidden.shape[:-1]), (rest, kwargs))
                if into is not None:
                    into.append(hidden)
    finally:
        handle.remove()
    return inputs
