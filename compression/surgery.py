"""Model surgery: swap a module, delete decoder layers, count parameters.

Removing layers keeps the model self-consistent for transformers: the family's layer count field
(num_hidden_layers, GPT-2's n_layer), its per-layer config lists (layer_types: Gemma 2/3's sliding and
full attention) and every module's layer_idx (the KV-cache slot) all follow.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from compression.architectures import ArchSpec, decoder_layers, iter_target_linears
from compression.errors import InvalidInput


def replace_module(root: nn.Module, dotted_name: str, new_module: nn.Module) -> nn.Module:
    """Put new_module at root.<dotted_name>; returns the module it replaced."""
    parent_name, _, child = dotted_name.rpartition(".")
    try:
        parent = root.get_submodule(parent_name) if parent_name else root
        old = parent.get_submodule(child)
    except AttributeError:
        raise InvalidInput(f"no module named '{dotted_name}' in {type(root).__name__}") from None
    setattr(parent, child, new_module)
    return old


def remove_layers(model: nn.Module, arch: ArchSpec, indices: Iterable[int]) -> list[int]:
    """Delete the decoder layers at `indices` (any order, need not be contiguous); returns them sorted.

    Keeps config.num_hidden_layers, per-layer config lists and every `layer_idx` consistent so
    generate() with a KV cache still works and save_pretrained() gives a plain, loadable model.
    """
    layers = decoder_layers(model, arch)
    total = len(layers)
    drop = sorted(set(int(i) for i in indices))
    bad = [i for i in drop if not 0 <= i < total]
    if bad:
        raise InvalidInput(f"layer indices {bad} out of range: the model has {total} decoder layers")
    if len(drop) >= total:
        raise InvalidInput(f"cannot remove all {total} decoder layers; at least one must remain")
    if not drop:
        return []
    keep = [i for i in range(total) if i not in drop]
    new_layers = nn.ModuleList([layers[i] for i in keep])
    replace_module(model, arch.layers_path, new_layers)

    for new_idx, layer in enumerate(new_layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx

    config = getattr(model, "config", None)
    if config is not None and arch.config_path:
        config = getattr(config, arch.config_path)
    if config is not None:
        setattr(config, arch.layer_count_field, len(keep))
        for name in arch.per_layer_lists:
            values = getattr(config, name, None)
            if isinstance(values, (list, tuple)) and len(values) == total:
                setattr(config, name, type(values)(values[i] for i in keep))
    return drop


def count_params(model: nn.Module) -> int:
    """Number of distinct parameters; shared tensors (tied embeddings and head) count once."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already de-duplicates shared Parameter objects
        key = p.data_ptr() if p.numel() else id(p)
        if key in seen:
            continue
        seen.add(key)
        total += p.numel()
    return total


def decoder_linear_params(model: nn.Module, arch: ArchSpec) -> int:
    """Parameters of the target projections of every decoder layer (factors and biases included).

    This is the denominator of every ratio (DESIGN.md section 2): removed layers simply stop
    contributing, factorized linears contribute k (m + n) (+ bias).
    """
    return sum(
        p.numel() for _, _, _, module in iter_target_linears(model, arch) for p in module.parameters()
    )
