"""Spectra low-rank models for ``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``.

Self-contained on purpose (only torch + transformers): this file is copied into every exported
folder. Each class builds the stock architecture for the config's model_type, then replaces every
linear named in ``config.spectra_low_rank`` ({dotted module name: rank}) with a two-factor module
whose weights are stored as ``<module>.in_proj.weight`` [rank, in] and ``<module>.out_proj.weight``
[out, rank] (+ ``<module>.out_proj.bias``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config,
                          Qwen2ForCausalLM)

# A low-rank artifact's config.json names model_type "spectra_<family>", which transformers does not
# know: plain from_pretrained refuses it and says to pass trust_remote_code=True, instead of silently
# building the stock model with random projections where the factors are.
MODEL_TYPE_PREFIX = "spectra_"


class SpectraLowRankLinear(nn.Module):
    """y = out_proj(in_proj(x)): a rank-k stand-in for nn.Linear(in_features, out_features)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.in_proj = nn.Linear(in_features, rank, bias=False)
        self.out_proj = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.in_proj(x))


def _swap_low_rank(model: nn.Module, ranks: dict[str, int]) -> None:
    for name, rank in ranks.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        if not isinstance(old, nn.Linear):
            raise ValueError(f"spectra_low_rank names {name}, which is not an nn.Linear in this model")
        new = SpectraLowRankLinear(old.in_features, old.out_features, int(rank), old.bias is not None)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        setattr(parent, child, new)


def _spectra_config(base: type) -> type:
    class SpectraConfig(base):  # type: ignore[misc, valid-type]
        model_type = MODEL_TYPE_PREFIX + base.model_type

    SpectraConfig.__name__ = SpectraConfig.__qualname__ = f"Spectra{base.__name__}"
    return SpectraConfig


def _low_rank_variant(base: type, config_class: type) -> type:
    class SpectraVariant(base):  # type: ignore[misc, valid-type]
        def __init__(self, config, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(config, *args, **kwargs)
            _swap_low_rank(self, dict(getattr(config, "spectra_low_rank", None) or {}))

    SpectraVariant.config_class = config_class
    SpectraVariant.__name__ = SpectraVariant.__qualname__ = f"Spectra{base.__name__}"
    return SpectraVariant


SpectraLlamaConfig = _spectra_config(LlamaConfig)
SpectraMistralConfig = _spectra_config(MistralConfig)
SpectraQwen2Config = _spectra_config(Qwen2Config)
SpectraLlamaForCausalLM = _low_rank_variant(LlamaForCausalLM, SpectraLlamaConfig)
SpectraMistralForCausalLM = _low_rank_variant(MistralForCausalLM, SpectraMistralConfig)
SpectraQwen2ForCausalLM = _low_rank_variant(Qwen2ForCausalLM, SpectraQwen2Config)

# model_type -> class name in this file (export.py writes the matching one, and its Config, into auto_map)
CLASS_FOR_MODEL_TYPE = {
    "llama": "SpectraLlamaForCausalLM",
    "mistral": "SpectraMistralForCausalLM",
    "qwen2": "SpectraQwen2ForCausalLM",
}
