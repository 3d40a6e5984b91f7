"""The model without its weights: parameters on the meta device, filled one module at a time.

The skeleton is the model's own transformers class built from its config under accelerate's
init_empty_weights (buffers such as rotary inverse frequencies stay real, so the model's forward
computes positions exactly as a loaded model does). A decoder layer is materialized from the
checkpoint (or from a saved result) onto the device, used, and sent back to meta or to the host.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compression.lowrank import LowRankLinear
from compression.surgery import replace_module

SOURCE_INDEX = "_spectra_source_index"  # a decoder layer's index in the checkpoint, kept across removals


def empty_model(config: Any, dtype: torch.dtype) -> nn.Module:
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    return model.eval()


def tied_names(model: nn.Module) -> dict[str, str]:
    """{head weight: embedding weight} when the config ties them, else {}."""
    if not getattr(model.config, "tie_word_embeddings", False):
        return {}
    keys = getattr(model, "_tied_weights_keys", None) or {}
    return dict(keys) if isinstance(keys, dict) else {}


def is_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def fill(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Assign `state` as the module's parameters (no copy; strict, so a missing tensor is an error)."""
    module.load_state_dict(state, strict=True, assign=True)
    for p in module.parameters():
        p.requires_grad_(False)


def fill_from_checkpoint(module: nn.Module, prefix: str, reader: Any, device: torch.device,
                         dtype: torch.dtype) -> None:
    names = list(module.state_dict().keys())
    fill(module, reader.tensors(names, prefix, device, dtype))


def release(module: nn.Module) -> None:
    """Drop the module's weights (back to meta): its memory is freed."""
    module.to("meta")


def move_buffers(model: nn.Module, device: torch.device) -> None:
    """Real (non-meta) buffers, e.g. rotary frequencies, onto the device."""
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and not buffer.is_meta:
                module._buffers[name] = buffer.to(device)


def low_rank_structure(layer: nn.Module) -> dict[str, int]:
    """{relative module name: rank} of the layer's factorized linears."""
    return {name: m.rank for name, m in layer.named_modules() if isinstance(m, LowRankLinear)}


def shape_like(layer: nn.Module, structure: dict[str, int]) -> None:
    """Replace the named linears by empty (meta) LowRankLinear of the recorded rank."""
    for name, rank in structure.items():
        linear = layer.get_submodule(name)
        if isinstance(linear, LowRankLinear):
            continue
        with torch.device("meta"):
            low = LowRankLinear(linear.in_features, linear.out_features, rank, bias=linear.bias is not None,
                                dtype=linear.weight.dtype)
        replace_module(layer, name, low)
