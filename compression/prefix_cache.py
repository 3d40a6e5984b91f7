"""Skip the unchanged bottom of the network while scoring GRASP's deeper layers.

GRASP modifies only the chosen layers, deepest first, so every decoder layer below the lowest
chosen one stays dense for the whole run: the hidden states entering that layer are the same for
every block. ``PrefixCache`` computes them once per calibration window (no grad) and, while active,
turns the layers below into pass-throughs and feeds the cached states in. The loss and every
gradient above are unchanged (the test compares against a full forward); the forward cost of the
prefix is paid once instead of once per block, and autograd never reaches it either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from compression.architectures import ArchSpec, decoder_layers
from compression.hooks import calibration_mode


class _PassThrough(nn.Module):
    """Stands in for a frozen bottom layer: returns its hidden states untouched."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


class PrefixCache:
    def __init__(self, model: nn.Module, arch: ArchSpec, first_layer: int, calibration: torch.Tensor,
                 device: torch.device) -> None:
        self.model, self.arch, self.first_layer = model, arch, first_layer
        self.inputs: list[torch.Tensor] = []
        self.current: int | None = None
        if first_layer <= 0:
            return
        layer = decoder_layers(model, arch)[first_layer]
        captured: list[torch.Tensor] = []

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            captured.append(hidden.detach().to("cpu", copy=True))
            raise _Stop  # nothing above is needed now

        handle = layer.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            with calibration_mode(model):
                for row in calibration:
                    try:
                        model(input_ids=row.unsqueeze(0).to(device), use_cache=False)
                    except _Stop:
                        pass
        finally:
            handle.remove()
        self.inputs = captured

    @contextmanager
    def active(self) -> Iterator[None]:
        """Inside, layers below first_layer are pass-throughs and first_layer reads the cache."""
        if self.first_layer <= 0:
            yield
            return
        layers = decoder_layers(self.model, self.arch)
        originals = [layers[i] for i in range(self.first_layer)]

        def feed(module: nn.Module, args: tuple, kwargs: dict):
            if self.current is None:
                raise RuntimeError("PrefixCache.use(window) must be called before the forward pass")
            cached = self.inputs[self.current]
            hidden = args[0] if args else kwargs["hidden_states"]
            cached = cached.to(device=hidden.device, dtype=hidden.dtype)
            if args:
                return (cached, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": cached}

        handle = layers[self.first_layer].register_forward_pre_hook(feed, with_kwargs=True)
        try:
            for i in range(self.first_layer):
                layers[i] = _PassThrough()
            yield
        finally:
            handle.remove()
            for i, original in enumerate(originals):
                layers[i] = original
            self.current = None

    def use(self, window: int) -> None:
        self.current = window if self.first_layer > 0 else None


class _Stop(Exception):
    """Ends a capture forward pass early."""
