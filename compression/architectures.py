"""The torch side of the family table (compression.specs.families): decoder layers, target linears.

`ArchSpec` is the table's `Family` itself, so there is one description per family; this module adds
what needs torch: finding the layers and linears in a model, and putting GPT-2's transposed Conv1D
projections into nn.Linear form (and back for export) so every method sees plain linears.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from compression.errors import UnsupportedArchitecture
from compression.specs.families import FAMILIES, Family, family_for

ArchSpec = Family
ARCHITECTURES = FAMILIES


def arch_for(model_type: str) -> ArchSpec:
    try:
        return family_for(model_type)
    except ValueError as exc:
        raise UnsupportedArchitecture(str(exc)) from None


def get_submodule(root: nn.Module, dotted: str) -> nn.Module:
    return root.get_submodule(dotted)


def decoder_layers(model: nn.Module, arch: ArchSpec) -> nn.ModuleList:
    layers = model.get_submodule(arch.layers_path)
    assert isinstance(layers, nn.ModuleList), f"{arch.layers_path} is not a ModuleList"
    return layers


def resolve_targets(arch: ArchSpec, targets: Sequence[str] | None) -> tuple[str, ...]:
    """The requested targets in table order (all of the family's when None); unknown names refused."""
    if targets is None:
        return arch.targets
    unknown = [t for t in targets if t not in arch.targets]
    if unknown:
        raise UnsupportedArchitecture(
            f"targets {unknown} do not exist in {arch.model_type} decoder layers; "
            f"this family's targets are: {', '.join(arch.targets)}"
        )
    return tuple(t for t in arch.targets if t in targets)


def iter_target_linears(
    model: nn.Module,
    arch: ArchSpec,
    targets: Sequence[str] | None = None,
    layer_indices: Sequence[int] | None = None,
) -> Iterator[tuple[str, int, str, nn.Module]]:
    """Yield (full dotted name, layer index, target name like 'q_proj', module) in layer order.

    A target that is a list of experts (after prepare_model) yields one linear per expert, named
    '<path>.<expert>'."""
    wanted = resolve_targets(arch, targets)
    layers = decoder_layers(model, arch)
    indices = range(len(layers)) if layer_indices is None else layer_indices
    for i in indices:
        for name in wanted:
            rel = arch.linear_path(name)
            module = layers[i].get_submodule(rel)
            if isinstance(module, nn.ModuleList):
                for expert, linear in enumerate(module):
                    yield f"{arch.layers_path}.{i}.{rel}.{expert}", i, name, linear
            else:
                yield f"{arch.layers_path}.{i}.{rel}", i, name, module


def target_of(arch: ArchSpec, full_name: str) -> tuple[int, str]:
    """'model.layers.3.self_attn.q_proj' -> (3, 'q_proj')."""
    rest = full_name.removeprefix(arch.layers_path + ".")
    index, _, rel = rest.partition(".")
    head, _, tail = rel.rpartition(".")
    for name in arch.targets:
        if arch.linear_path(name) in (rel, head if tail.isdigit() else None):
            return int(index), name
    raise KeyError(full_name)


def input_group_key(arch: ArchSpec, full_name: str) -> tuple[int, int] | None:
    """(layer, group) for a target that shares its input with others of its layer (q/k/v ...), else None."""
    layer, name = target_of(arch, full_name)
    group = next((g for g, members in enumerate(arch.input_groups) if name in members), None)
    return None if group is None else (layer, group)


def experts_modules(model: nn.Module, arch: ArchSpec) -> dict[str, nn.Module]:
    """{full name: experts module} of every decoder layer (empty for dense families)."""
    if not arch.experts:
        return {}
    return {f"{arch.layers_path}.{i}.{arch.experts}": layer.get_submodule(arch.experts)
            for i, layer in enumerate(decoder_layers(model, arch))}


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


@torch.no_grad()
def prepare_model(model: nn.Module, arch: ArchSpec) -> nn.Module:
    """Put a freshly built model in the form the methods expect: GPT-2's Conv1D (x @ W + b, W [in, out])
    becomes the equivalent nn.Linear (W^T), fused 3-D experts become one nn.Linear per expert
    (SpectraExperts); stock_layout turns both back for a plain artifact."""
    from compression.remote_code.modeling_spectra import SpectraExperts

    for full, module in experts_modules(model, arch).items():
        if not isinstance(module, SpectraExperts):
            parent, _, child = full.rpartition(".")
            setattr(model.get_submodule(parent), child, SpectraExperts.from_fused(module))
    if not arch.transposed:
        return model
    for full, _, _, module in list(iter_target_linears(model, arch)):
        if not _is_conv1d(module):
            continue
        weight = module.weight
        linear = nn.Linear(weight.shape[0], weight.shape[1], bias=module.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        linear.weight.copy_(weight.T)
        if module.bias is not None:
            linear.bias.copy_(module.bias)
        parent, _, child = full.rpartition(".")
        setattr(model.get_submodule(parent), child, linear)
    return model


EXPERT_MATRICES = ("gate_up_proj", "down_proj")


def fusable_experts(model: nn.Module, arch: ArchSpec, state: dict[str, torch.Tensor]) -> list[str]:
    """Experts modules whose every expert matrix is a dense '<m>.<e>.weight' in `state` (so they can be
    stored fused, as the stock class expects); the others stay split and are listed in the config."""
    names = []
    for full, module in experts_modules(model, arch).items():
        keys = [f"{full}.{m}.{e}.weight" for m in EXPERT_MATRICES for e in range(module.num_experts)]
        if all(key in state for key in keys):
            names.append(full)
    return names


def stock_layout(model: nn.Module, arch: ArchSpec, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict in the layout the stock transformers class loads: GPT-2 targets stored as a dense
    matrix (untouched, or low-rank merged by a dense export) transposed back to Conv1D's [in, out];
    dense experts stacked back into the fused [E, ...] tensors."""
    for full in fusable_experts(model, arch, state):
        count = experts_modules(model, arch)[full].num_experts
        for matrix in EXPERT_MATRICES:
            state[f"{full}.{matrix}"] = torch.stack([state.pop(f"{full}.{matrix}.{e}.weight") for e in range(count)])
    if not arch.transposed:
        return state
    for full, _, _, _ in iter_target_linears(model, arch):
        key = f"{full}.weight"
        if key in state:
            state[key] = state[key].T.contiguous()
    return state


def library_layout(model: nn.Module, arch: ArchSpec, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """stock_layout's inverse, for a model already through prepare_model: fused experts split per expert,
    GPT-2's dense targets transposed to nn.Linear's [out, in]."""
    for full in experts_modules(model, arch):
        for matrix in EXPERT_MATRICES:
            fused = state.pop(f"{full}.{matrix}", None)
            if fused is not None:
                state.update({f"{full}.{matrix}.{e}.weight": w for e, w in enumerate(fused.unbind(0))})
    if arch.transposed:
        for full, _, _, _ in iter_target_linears(model, arch):
            key = f"{full}.weight"
            if key in state:
                state[key] = state[key].T.contiguous()
    return state
