"""Spectra low-rank models for ``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``.

Self-contained on purpose (only torch + transformers): this file is copied into every exported
folder. ``config.auto_map`` names ``Spectra<Class>`` where ``<Class>`` is the transformers class of the
model's family (compression/specs/families.py's ``export_class``); this module builds that class on
first access: the stock architecture, then every linear named in ``config.spectra_low_rank``
({dotted module name: rank}) replaced by a two-factor module whose weights are stored as
``<module>.in_proj.weight`` [rank, in] and ``<module>.out_proj.weight`` [out, rank] (+ ``<module>.out_proj.bias``).
Mixture-of-experts blocks listed in ``config.spectra_unfused_experts`` are first split into one linear
per expert (SpectraExperts), so ``model.layers.0.mlp.experts.down_proj.3`` is expert 3's down projection.
"""

from __future__ import annotations

import torch
import transformers
from torch import nn

PREFIX = "Spectra"
# A low-rank artifact's config.json names model_type "spectra_<family>", which transformers does not
# know: plain from_pretrained refuses it and says to pass trust_remote_code=True, instead of silently
# building the stock model with random projections where the factors are. auto_map's AutoConfig names
# Spectra<Family>Config, the family's stock config class under that model_type.
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


class SpectraExperts(nn.Module):
    """A mixture-of-experts block's experts as one linear per expert and matrix, so each can be factorized
    on its own. transformers 5 stores them fused, ``gate_up_proj`` [E, 2I, H] and ``down_proj`` [E, H, I];
    here ``gate_up_proj.<e>`` and ``down_proj.<e>`` are nn.Linear (or low-rank) modules with the same
    weights, and forward() routes exactly as the fused module does."""

    def __init__(self, gate_up: list[nn.Module], down: list[nn.Module], act_fn: nn.Module) -> None:
        super().__init__()
        self.num_experts = len(gate_up)
        self.gate_up_proj = nn.ModuleList(gate_up)
        self.down_proj = nn.ModuleList(down)
        self.act_fn = act_fn

    @classmethod
    def from_fused(cls, experts: nn.Module) -> SpectraExperts:
        def linear(weight: torch.Tensor) -> nn.Linear:
            module = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                module.weight.copy_(weight)
            return module

        return cls([linear(w) for w in experts.gate_up_proj], [linear(w) for w in experts.down_proj], experts.act_fn)

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                top_k_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)
        for expert in range(self.num_experts):
            token, slot = torch.where(top_k_index == expert)
            if token.numel() == 0:
                continue
            gate, up = self.gate_up_proj[expert](hidden_states[token]).chunk(2, dim=-1)
            hidden = self.down_proj[expert](self.act_fn(gate) * up) * top_k_weights[token, slot, None]
            out.index_add_(0, token, hidden.to(out.dtype))
        return out


def _unfuse_experts(model: nn.Module, paths: list[str]) -> None:
    for path in paths:
        parent_name, _, child = path.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, SpectraExperts.from_fused(getattr(parent, child)))


def _features(module: nn.Module, name: str) -> tuple[int, int, torch.Tensor]:
    """(in, out, weight) of an nn.Linear or of GPT-2's Conv1D (weight stored [in, out])."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, module.weight
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return module.weight.shape[0], module.nf, module.weight
    raise ValueError(f"spectra_low_rank names {name}, which is neither nn.Linear nor Conv1D in this model")


def _swap_low_rank(model: nn.Module, ranks: dict[str, int]) -> None:
    for name, rank in ranks.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        in_features, out_features, weight = _features(old, name)
        new = SpectraLowRankLinear(in_features, out_features, int(rank), getattr(old, "bias", None) is not None)
        new.to(device=weight.device, dtype=weight.dtype)
        setattr(parent, child, new)


def _spectra_config(base: type) -> type:
    class SpectraConfig(base):  # type: ignore[misc, valid-type]
        model_type = MODEL_TYPE_PREFIX + base.model_type

    SpectraConfig.__name__ = SpectraConfig.__qualname__ = f"{PREFIX}{base.__name__}"
    return SpectraConfig


def _low_rank_variant(base: type) -> type:
    class SpectraVariant(base):  # type: ignore[misc, valid-type]
        config_class = __getattr__(PREFIX + base.config_class.__name__)

        def __init__(self, config, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(config, *args, **kwargs)
            _unfuse_experts(self, list(getattr(config, "spectra_unfused_experts", None) or []))
            _swap_low_rank(self, dict(getattr(config, "spectra_low_rank", None) or {}))

    SpectraVariant.__name__ = SpectraVariant.__qualname__ = f"{PREFIX}{base.__name__}"
    return SpectraVariant


def __getattr__(name: str) -> type:
    """`SpectraLlamaForCausalLM` -> a low-rank variant of transformers.LlamaForCausalLM, `SpectraLlamaConfig`
    -> LlamaConfig under model_type spectra_llama (each built once)."""
    base = getattr(transformers, name.removeprefix(PREFIX), None) if name.startswith(PREFIX) else None
    if isinstance(base, type) and issubclass(base, transformers.PreTrainedModel):
        built = _low_rank_variant(base)
    elif isinstance(base, type) and issubclass(base, transformers.PretrainedConfig) and base.model_type:
        built = _spectra_config(base)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = built
    return built
