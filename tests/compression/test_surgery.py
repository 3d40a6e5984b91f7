"""Surgery on the real TinyStories model: layer removal keeps generate() with a KV cache working."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compression.architectures import arch_for, decoder_layers
from compression.errors import InvalidInput
from compression.lowrank import LowRankLinear
from compression.surgery import count_params, decoder_linear_params, remove_layers, replace_module


def test_remove_zero_layers_changes_nothing(tiny_model, tiny_calib) -> None:
    arch = arch_for("llama")
    with torch.no_grad():
        before = tiny_model(tiny_calib[:2]).logits
        assert remove_layers(tiny_model, arch, []) == []
        after = tiny_model(tiny_calib[:2]).logits
    assert torch.equal(before, after)
    assert tiny_model.config.num_hidden_layers == 2


def test_remove_layer_keeps_config_and_cache_consistent(tiny_model, tiny_tokenizer, tiny_calib) -> None:
    arch = arch_for("llama")
    second = decoder_layers(tiny_model, arch)[1]
    with torch.no_grad():
        # the layer-1-only model is exactly: embeddings -> layer 1 -> norm -> head
        expected_params = count_params(tiny_model) - sum(
            p.numel() for p in decoder_layers(tiny_model, arch)[0].parameters()
        )
    assert remove_layers(tiny_model, arch, [0]) == [0]
    layers = decoder_layers(tiny_model, arch)
    assert len(layers) == 1 and layers[0] is second
    assert tiny_model.config.num_hidden_layers == 1
    assert layers[0].self_attn.layer_idx == 0
    assert count_params(tiny_model) == expected_params

    prompt = tiny_tokenizer("Once upon a time", return_tensors="pt")
    with torch.no_grad():
        cached = tiny_model.generate(**prompt, max_new_tokens=12, do_sample=False, use_cache=True)
        uncached = tiny_model.generate(**prompt, max_new_tokens=12, do_sample=False, use_cache=False)
    assert cached.shape[1] == prompt["input_ids"].shape[1] + 12
    assert torch.equal(cached, uncached)


def test_remove_layers_trims_per_layer_config_lists(tiny_model) -> None:
    arch = arch_for("llama")
    tiny_model.config.layer_types = ["full_attention", "sliding_attention"]
    remove_layers(tiny_model, arch, [0])
    assert tiny_model.config.layer_types == ["sliding_attention"]


def test_remove_layers_bad_indices(tiny_model) -> None:
    arch = arch_for("llama")
    with pytest.raises(InvalidInput, match="out of range: the model has 2"):
        remove_layers(tiny_model, arch, [2])
    with pytest.raises(InvalidInput, match="cannot remove all 2"):
        remove_layers(tiny_model, arch, [0, 1])


def test_count_params_counts_tied_embeddings_once(tiny_model) -> None:
    assert tiny_model.lm_head.weight is tiny_model.model.embed_tokens.weight
    naive = sum(p.numel() for _, p in tiny_model.named_parameters(remove_duplicate=False))
    assert count_params(tiny_model) == naive - 2048 * 128
    # 2 layers x (q 128x128 + k,v 128x64 each + o 128x128 + gate,up,down 128x384 each)
    per_layer = 2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 384
    assert decoder_linear_params(tiny_model, arch_for("llama")) == 2 * per_layer


def test_replace_module_and_factored_count(tiny_model) -> None:
    arch = arch_for("llama")
    name = "model.layers.0.self_attn.k_proj"
    old = tiny_model.get_submodule(name)
    before = decoder_linear_params(tiny_model, arch)
    assert replace_module(tiny_model, name, LowRankLinear.from_linear(old, 10)) is old
    assert decoder_linear_params(tiny_model, arch) == before - 128 * 64 + 10 * (128 + 64)
    with pytest.raises(InvalidInput, match="no module named"):
        replace_module(tiny_model, "model.layers.0.nope.x", nn.Identity())
