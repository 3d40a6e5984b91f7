"""Activation statistics and block influence on the real TinyStories model."""

from __future__ import annotations

import pytest
import torch

from compression.activations import collect_input_stats
from compression.architectures import arch_for
from compression.attribution import block_influence
from compression.errors import InvalidInput
from compression.hooks import calibration_mode


def _inputs_of(model, module, calib) -> torch.Tensor:
    seen = []
    handle = module.register_forward_hook(lambda m, a, o: seen.append(a[0].detach().reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        model(calib, use_cache=False)
    handle.remove()
    return torch.cat(seen)


def test_stats_match_direct_computation(tiny_model, tiny_calib) -> None:
    calib = tiny_calib[:3]
    names = {"q": tiny_model.model.layers[0].self_attn.q_proj, "down": tiny_model.model.layers[1].mlp.down_proj}
    gram = collect_input_stats(tiny_model, names, calib, "cpu", stat="gram", dtype=torch.float64)
    mean = collect_input_stats(tiny_model, names, calib, "cpu", stat="abs_mean", batch_size=2)
    amax = collect_input_stats(tiny_model, names, calib, "cpu", stat="abs_max")
    for key, module in names.items():
        x = _inputs_of(tiny_model, module, calib)
        assert x.shape[0] == 3 * 128
        assert gram[key].dtype == torch.float64
        ref = x.double().T @ x.double()
        # each batch's product is float32 (as in SVD-LLM), so entries that cancel carry its rounding
        torch.testing.assert_close(gram[key], ref, rtol=1e-4, atol=1e-6 * ref.abs().max().item())
        torch.testing.assert_close(mean[key], x.abs().mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(amax[key], x.abs().amax(0))
    assert not tiny_model.model.layers[0].self_attn.q_proj._forward_hooks  # hooks removed


def test_calibration_mode_restores_state(tiny_model) -> None:
    tiny_model.train()
    with calibration_mode(tiny_model):
        assert not tiny_model.training and tiny_model.config.use_cache is False
        assert not torch.is_grad_enabled()
    assert tiny_model.training and tiny_model.config.use_cache is True


def test_bad_stat_and_missing_calibration(tiny_model, tiny_calib) -> None:
    mods = {"q": tiny_model.model.layers[0].self_attn.q_proj}
    with pytest.raises(InvalidInput, match="unknown activation statistic 'median'"):
        collect_input_stats(tiny_model, mods, tiny_calib, "cpu", stat="median")
    with pytest.raises(InvalidInput, match="needs calibration data"):
        collect_input_stats(tiny_model, mods, None, "cpu")


def test_block_influence_uses_pre_norm_layer_outputs(tiny_model, tiny_calib) -> None:
    calib = tiny_calib[:2]
    bi = block_influence(tiny_model, arch_for("llama"), calib, "cpu")
    assert bi.shape == (2,) and bi.dtype == torch.float64
    with torch.no_grad():
        hidden = tiny_model(calib, output_hidden_states=True, use_cache=False).hidden_states
    # layer 0: HF's hidden states 0 -> 1 are exactly its input and output
    cos0 = torch.nn.functional.cosine_similarity(hidden[0], hidden[1], dim=-1)
    assert bi[0].item() == pytest.approx((1 - cos0).mean().item(), rel=1e-4)
    # the last HF entry is post-final-norm; our BI must not use it
    layer1_out = []
    handle = tiny_model.model.layers[1].register_forward_hook(lambda m, a, o: layer1_out.append(o))
    with torch.no_grad():
        tiny_model(calib, use_cache=False)
    handle.remove()
    out = layer1_out[0][0] if isinstance(layer1_out[0], tuple) else layer1_out[0]
    cos1 = torch.nn.functional.cosine_similarity(hidden[1], out, dim=-1)
    assert bi[1].item() == pytest.approx((1 - cos1).mean().item(), rel=1e-4)
    normed = torch.nn.functional.cosine_similarity(hidden[1], hidden[2], dim=-1)
    assert abs((1 - normed).mean().item() - bi[1].item()) > 1e-4
    assert 0 < bi.min() and bi.max() < 2
