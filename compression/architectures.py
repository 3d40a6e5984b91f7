"""One table per architecture: where the decoder layers are and which linears a method may target.

Adding an architecture is one entry here (and a test on a tiny random model of that type).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch import nn

from compression.errors import UnsupportedArchitecture


@dataclass(frozen=True)
class ArchSpec:
    model_type: str
    layers_path: str  # dotted path from the CausalLM to the nn.ModuleList of decoder layers
    final_norm_path: str
    attention: str  # attribute of a decoder layer holding the attention projections
    attention_linears: tuple[str, ...]
    mlp: str
    mlp_linears: tuple[str, ...]

    @property
    def linear_names(self) -> tuple[str, ...]:
        return self.attention_linears + self.mlp_linears

    def linear_path(self, name: str) -> str:
        """'q_proj' -> 'self_attn.q_proj', relative to a decoder layer."""
        if name in self.attention_linears:
            return f"{self.attention}.{name}"
        if name in self.mlp_linears:
            return f"{self.mlp}.{name}"
        raise KeyError(name)


_LLAMA_LIKE = dict(
    layers_path="model.layers",
    final_norm_path="model.norm",
    attention="self_attn",
    attention_linears=("q_proj", "k_proj", "v_proj", "o_proj"),
    mlp="mlp",
    mlp_linears=("gate_proj", "up_proj", "down_proj"),
)

# Llama covers Llama 2/3, SmolLM and TinyStories; Qwen2 has biased q/k/v, which every method keeps.
ARCHITECTURES: dict[str, ArchSpec] = {
    t: ArchSpec(model_type=t, **_LLAMA_LIKE) for t in ("llama", "mistral", "qwen2")
}


def arch_for(model_type: str) -> ArchSpec:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitecture(
            f"model_type '{model_type}' is not supported; supported architectures: {supported}"
        ) from None


def get_submodule(root: nn.Module, dotted: str) -> nn.Module:
    return root.get_submodule(dotted)


def decoder_layers(model: nn.Module, arch: ArchSpec) -> nn.ModuleList:
    layers = model.get_submodule(arch.layers_path)
    assert isinstance(layers, nn.ModuleList), f"{arch.layers_path} is not a ModuleList"
    return layers


def iter_target_linears(
    model: nn.Module,
    arch: ArchSpec,
    targets: Sequence[str] | None = None,
    layer_indices: Sequence[int] | None = None,
) -> Iterator[tuple[str, int, str, nn.Module]]:
    """Yield (full dotted name, layer index, short name like 'q_proj', module) in layer order."""
    wanted = tuple(targets) if targets is not None else arch.linear_names
    unknown = [t for t in wanted if t not in arch.linear_names]
    if unknown:
        raise UnsupportedArchitecture(f"targets {unknown} do not exist in {arch.model_type} layers")
    layers = decoder_layers(model, arch)
    indices = range(len(layers)) if layer_indices is None else layer_indices
    for i in indices:
        for short in arch.linear_names:
            if short in wanted:
                rel = arch.linear_path(short)
                yield f"{arch.layers_path}.{i}.{rel}", i, short, layers[i].get_submodule(rel)
