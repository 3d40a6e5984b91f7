"""Context managers for running a model over calibration data without side effects."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


@contextmanager
def calibration_mode(model: nn.Module) -> Iterator[nn.Module]:
    """eval(), no KV cache, no_grad; the training flag and config.use_cache are restored on exit."""
    was_training = model.training
    config = getattr(model, "config", None)
    had_use_cache = hasattr(config, "use_cache")
    use_cache = getattr(config, "use_cache", None)
    model.eval()
    if had_use_cache:
        config.use_cache = False
    try:
        with torch.no_grad():
            yield model
    finally:
        if had_use_cache:
            config.use_cache = use_cache
        model.train(was_training)


def first_tensor(value: Any) -> torch.Tensor:
    """The hidden states in a module's input args or output (a tensor, or the first item of a tuple)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(f"expected a tensor or a tuple starting with one, got {type(value).__name__}")


@contextmanager
def forward_hooks(modules: dict[str, nn.Module], hook_factory) -> Iterator[None]:
    """Register hook_factory(name) as a forward hook on every module; always removed on exit."""
    handles = [module.register_forward_hook(hook_factory(name)) for name, module in modules.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class _StopForward(Exception):
    """Raised by a hook to end a forward pass early; never escapes run_batches."""


@contextmanager
def stop_forward_after(module: nn.Module | None) -> Iterator[None]:
    """While active, a forward pass ends (silently, inside run_batches) right after `module` ran."""
    if module is None:
        yield
        return

    def hook(mod: nn.Module, args: tuple, output) -> None:
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run_batches(
    model: nn.Module,
    calibration: torch.Tensor,
    device: torch.device | str,
    batch_size: int = 1,
    progress=None,
) -> None:
    """Forward every calibration window (in batches) through the model, for the hooks' sake."""
    if calibration.dim() != 2:
        raise ValueError(f"calibration must be a LongTensor [n_samples, seq_len], got {tuple(calibration.shape)}")
    n = calibration.shape[0]
    for start in range(0, n, batch_size):
        batch = calibration[start : start + batch_size].to(device)
        try:
            model(input_ids=batch, use_cache=False)
        except _StopForward:
            pass
        if progress is not None:
            progress(min(start + batch_size, n) / n, f"calibration batch {start // batch_size + 1}")
