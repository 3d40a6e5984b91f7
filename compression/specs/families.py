"""THE table of decoder families, torch-free: everything per-family in Spectra derives from it.

The API imports it (GET /v1/architectures, target-name checks at submission), the library builds its
ArchSpec from it (compression.architectures), the exporter writes `export_class` into auto_map, and the
remote-code file resolves that name back to the transformers class. Adding a family is one entry here
plus a tiny random model of that type in tests/compression/test_families.py.

Target names are the family's own: Phi-3's fused `qkv_proj` / `gate_up_proj`, GPT-NeoX's
`query_key_value`, GPT-2's `attn.c_attn` ... (GPT-2 names its attention and MLP output projections both
`c_proj`, so its targets carry the block's name). A target is a path relative to a decoder layer; a bare
name lives in the family's attention or MLP block.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Family:
    model_type: str
    causal_lm: str  # the transformers class AutoModelForCausalLM builds for this model_type
    layers_path: str  # dotted path from the CausalLM to the nn.ModuleList of decoder layers
    final_norm_path: str
    attention: str  # attribute of a decoder layer holding the attention projections
    attention_linears: tuple[str, ...]
    mlp: str  # attribute holding the MLP projections ("" when they sit on the layer itself, as in OPT)
    mlp_linears: tuple[str, ...]
    norms: tuple[str, ...]  # per-layer norm modules, relative to a decoder layer
    # Targets that read the same input tensor (one calibration statistic serves the group).
    input_groups: tuple[tuple[str, ...], ...] = ()
    transposed: bool = False  # GPT-2's Conv1D stores weights [in, out]; the library works on nn.Linear
    config_path: str = ""  # where the text decoder's config lives ("text_config" for multimodal Gemma 3)
    # Mixture of experts: the layer-relative path of the fused experts module (transformers 5 stores every
    # expert's gate_up_proj [E, 2I, H] and down_proj [E, H, I] as one 3-D tensor each). The library splits
    # it into one linear per expert (targets "<experts>.gate_up_proj", "<experts>.down_proj").
    experts: str = ""
    layer_count_field: str = "num_hidden_layers"
    per_layer_lists: tuple[str, ...] = ("layer_types",)  # config lists with one entry per layer
    refused: Mapping[str, str] = field(default_factory=dict)  # method -> why it does not apply

    @property
    def export_class(self) -> str:
        """The low-rank class written into auto_map; remote_code/modeling_spectra.py resolves it."""
        return f"Spectra{self.causal_lm}"

    @property
    def targets(self) -> tuple[str, ...]:
        return self.attention_linears + self.mlp_linears

    @property
    def linear_names(self) -> tuple[str, ...]:  # the name the library has always used for `targets`
        return self.targets

    def linear_path(self, name: str) -> str:
        """Target name -> path relative to a decoder layer ('q_proj' -> 'self_attn.q_proj')."""
        for block, names in ((self.attention, self.attention_linears), (self.mlp, self.mlp_linears)):
            if name in names:
                return name if ("." in name or not block) else f"{block}.{name}"
        raise KeyError(name)


_LLAMA_NORMS = ("input_layernorm", "post_attention_layernorm")
_EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
_MOE_REFUSED = {
    "grasp": "GRASP scores each singular component by the loss gradient through it; an expert the calibration "
             "tokens are never routed to has no gradient, so its remnant would be arbitrary",
    "soco": "SoCo learns each component's score from the loss gradient; experts the calibration never routes "
            "to get none, so their pruning would be arbitrary",
}
_GEMMA_NORMS = _LLAMA_NORMS + ("pre_feedforward_layernorm", "post_feedforward_layernorm")
_QKV = ("q_proj", "k_proj", "v_proj")
_LLAMA_GROUPS = (_QKV, ("gate_proj", "up_proj"))


def _llama_like(model_type: str, causal_lm: str, norms: tuple[str, ...] = _LLAMA_NORMS, **extra: Any) -> Family:
    return Family(
        model_type=model_type, causal_lm=causal_lm, layers_path=extra.pop("layers_path", "model.layers"),
        final_norm_path=extra.pop("final_norm_path", "model.norm"), attention="self_attn",
        attention_linears=(*_QKV, "o_proj"), mlp="mlp", mlp_linears=("gate_proj", "up_proj", "down_proj"),
        norms=norms, input_groups=_LLAMA_GROUPS, **extra,
    )


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        # Llama covers Llama 2/3, SmolLM and TinyStories; Qwen2 has biased q/k/v, which every method keeps.
        _llama_like("llama", "LlamaForCausalLM"),
        _llama_like("mistral", "MistralForCausalLM"),
        _llama_like("qwen2", "Qwen2ForCausalLM"),
        _llama_like("qwen3", "Qwen3ForCausalLM", _LLAMA_NORMS + ("self_attn.q_norm", "self_attn.k_norm")),
        _llama_like("gemma2", "Gemma2ForCausalLM", _GEMMA_NORMS),
        _llama_like("gemma3_text", "Gemma3ForCausalLM", _GEMMA_NORMS + ("self_attn.q_norm", "self_attn.k_norm")),
        # Multimodal Gemma 3: only the text tower's decoder layers are compressed; vision stays as it is.
        _llama_like("gemma3", "Gemma3ForConditionalGeneration", _GEMMA_NORMS + ("self_attn.q_norm", "self_attn.k_norm"),
                    layers_path="model.language_model.layers", final_norm_path="model.language_model.norm",
                    config_path="text_config"),
        # Mixture of experts: attention as Llama, every expert's matrices factorized on their own.
        Family(
            model_type="mixtral", causal_lm="MixtralForCausalLM", layers_path="model.layers",
            final_norm_path="model.norm", attention="self_attn", attention_linears=(*_QKV, "o_proj"),
            mlp="mlp", mlp_linears=_EXPERTS, norms=_LLAMA_NORMS, input_groups=(_QKV,), experts="mlp.experts",
            refused=_MOE_REFUSED,
        ),
        Family(
            model_type="qwen2_moe", causal_lm="Qwen2MoeForCausalLM", layers_path="model.layers",
            final_norm_path="model.norm", attention="self_attn", attention_linears=(*_QKV, "o_proj"), mlp="mlp",
            mlp_linears=_EXPERTS + ("mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj",
                                    "mlp.shared_expert.down_proj"),
            norms=_LLAMA_NORMS, input_groups=(_QKV, ("mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj")),
            experts="mlp.experts", refused=_MOE_REFUSED,
        ),
        Family(
            model_type="qwen3_moe", causal_lm="Qwen3MoeForCausalLM", layers_path="model.layers",
            final_norm_path="model.norm", attention="self_attn", attention_linears=(*_QKV, "o_proj"),
            mlp="mlp", mlp_linears=_EXPERTS, norms=_LLAMA_NORMS + ("self_attn.q_norm", "self_attn.k_norm"),
            input_groups=(_QKV,), experts="mlp.experts", refused=_MOE_REFUSED,
        ),
        Family(
            model_type="phi3", causal_lm="Phi3ForCausalLM", layers_path="model.layers", final_norm_path="model.norm",
            attention="self_attn", attention_linears=("qkv_proj", "o_proj"),
            mlp="mlp", mlp_linears=("gate_up_proj", "down_proj"), norms=_LLAMA_NORMS,
        ),
        Family(
            model_type="gpt_neox", causal_lm="GPTNeoXForCausalLM", layers_path="gpt_neox.layers",
            final_norm_path="gpt_neox.final_layer_norm", attention="attention",
            attention_linears=("query_key_value", "dense"), mlp="mlp",
            mlp_linears=("dense_h_to_4h", "dense_4h_to_h"), norms=_LLAMA_NORMS,
        ),
        Family(
            model_type="opt", causal_lm="OPTForCausalLM", layers_path="model.decoder.layers",
            final_norm_path="model.decoder.final_layer_norm", attention="self_attn",
            attention_linears=(*_QKV, "out_proj"), mlp="", mlp_linears=("fc1", "fc2"),
            norms=("self_attn_layer_norm", "final_layer_norm"), input_groups=(_QKV,),
        ),
        Family(
            model_type="gpt2", causal_lm="GPT2LMHeadModel", layers_path="transformer.h",
            final_norm_path="transformer.ln_f", attention="attn", attention_linears=("attn.c_attn", "attn.c_proj"),
            mlp="mlp", mlp_linears=("mlp.c_fc", "mlp.c_proj"), norms=("ln_1", "ln_2"), transposed=True,
            layer_count_field="n_layer",
        ),
    )
}

# Every target name some family has: a spec naming none of them is refused before the model is known.
KNOWN_TARGETS: tuple[str, ...] = tuple(sorted({t for f in FAMILIES.values() for t in f.targets}))


def family_for(model_type: str) -> Family:
    """The family of a model_type; ValueError naming the supported ones otherwise."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        supported = ", ".join(sorted(FAMILIES))
        raise ValueError(f"model_type '{model_type}' is not supported; supported architectures: {supported}") from None


def decoder_config(config: Mapping[str, Any], family: Family) -> Mapping[str, Any]:
    """The part of a config.json dict that describes the decoder layers (text_config for multimodal)."""
    section = config.get(family.config_path) if family.config_path else config
    return section if isinstance(section, Mapping) else {}


def num_layers(config: Mapping[str, Any], family: Family) -> int | None:
    """The decoder depth config.json states, or None when it states no positive integer (the loader then
    says what is wrong with the config)."""
    section = decoder_config(config, family)
    value = section.get(family.layer_count_field, section.get("num_hidden_layers"))  # GPT-2: either spelling
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None
