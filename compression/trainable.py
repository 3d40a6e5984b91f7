"""Train a few parameters of a model in place: everything else frozen for the duration, every flag restored."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def trainable_only(model: nn.Module, params: Iterable[nn.Parameter], *, train: bool | None = None) -> Iterator[None]:
    """Freeze every parameter of `model` except `params`; on exit each one's requires_grad is restored and
    so is train/eval mode (`train` sets the mode inside the block; None leaves it). Parameters created
    inside the block (e.g. scores a method re-allocates) were trainable only for the block: frozen on exit."""
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    try:
        for p in flags:
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        if train is not None:
            model.train(train)
        yield
    finally:
        for p in model.parameters():
            p.requires_grad_(flags.get(p, False))
        model.train(was_training)
