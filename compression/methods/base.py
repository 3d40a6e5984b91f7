"""The method interface and its explicit registry.

A method is one file in compression/methods/ with a Compressor subclass decorated with
@register, and one import line in compression/methods/__init__.py. Its options class and
whether it needs calibration data come from the torch-free table in compression.specs, so the
API and the library can never disagree about them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
from pydantic import BaseModel
from torch import nn

from compression.architectures import ArchSpec
from compression.errors import Cancelled
from compression.specs import METHODS, Method, MethodInfo
from compression.specs.fit import DEFAULT_TOLERANCE


Options = TypeVar("Options", bound=BaseModel)


@dataclass
class CompressionContext(Generic[Options]):
    """Everything a method may use. The model is modified in place."""

    model: nn.Module  # a transformers CausalLM, already on `device`, in eval mode
    tokenizer: Any
    arch: ArchSpec
    options: Options  # the method's own options class, validated
    target_ratio: float  # fraction of decoder-layer linear parameters to remove
    calibration: torch.Tensor | None  # LongTensor [n_samples, seq_len] on CPU; None if not required
    device: torch.device
    seed: int
    data_dir: Path | None = None  # corpora folder (recovery data, etc.)
    ratio_tolerance: float = DEFAULT_TOLERANCE  # how far the achieved ratio may land from target_ratio
    progress: Callable[[float, str], None] = lambda fraction, message: None  # fraction of this stage
    should_stop: Callable[[], bool] = lambda: False

    def check_stop(self) -> None:
        """Call between layers / blocks / steps; raises Cancelled when the caller asked to stop."""
        if self.should_stop():
            raise Cancelled("stopped on request")


@dataclass
class MethodReport:
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able: ranks, removed layers, scores
    metrics: dict[str, Any] = field(default_factory=dict)  # extra numbers, e.g. ppl after recovery
    files: dict[str, bytes] = field(default_factory=dict)  # extra artifact files, e.g. a PNG figure


class Compressor(ABC, Generic[Options]):
    """One method; `Compressor[SVDOptions]` receives a CompressionContext[SVDOptions] (no downcasts)."""

    method: ClassVar[Method]

    @property
    def info(self) -> MethodInfo:
        return METHODS[self.method]

    @abstractmethod
    def compress(self, ctx: CompressionContext[Options]) -> MethodReport:
        """Compress ctx.model in place toward ctx.target_ratio."""


_REGISTRY: dict[Method, type[Compressor[Any]]] = {}
_C = TypeVar("_C", bound=type[Compressor[Any]])


def register(cls: _C) -> _C:
    method = Method(cls.method)
    if method in _REGISTRY:
        raise RuntimeError(f"method {method} registered twice ({_REGISTRY[method]} and {cls})")
    _REGISTRY[method] = cls
    return cls


def get(method: Method | str) -> Compressor[Any]:
    try:
        return _REGISTRY[Method(method)]()
    except (KeyError, ValueError):
        raise KeyError(f"unknown method '{method}'; available: {', '.join(available())}") from None


def available() -> list[str]:
    return [m.value for m in _REGISTRY]
