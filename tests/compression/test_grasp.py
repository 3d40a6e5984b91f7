"""GRASP on the real TinyStories-656K model (and one slow SmolLM2-135M check at 30 layers)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.func import functional_call

from compression.architectures import arch_for, decoder_layers
from compression.attribution import block_influence
from compression.errors import Cancelled, InvalidInput, RatioNotReached
from compression.export import export, load_compressed
from compression.grasp_plan import plan
from compression.linalg import svd
from compression.lowrank import LowRankLinear
from compression.methods import CompressionContext, get
from compression.prefix_cache import PrefixCache
from compression.sigma_attribution import (
    SigmaLinear, accumulate_sigma_gradients, select_components, sigma_surrogates,
)
from compression.specs import GraspOptions
from compression.surgery import decoder_linear_params

ARCH = arch_for("llama")
TARGET = "model.layers.1.mlp.down_proj"


def _ctx(model, tokenizer, calib, ratio=0.2, progress=None, should_stop=None, **options) -> CompressionContext:
    return CompressionContext(
        model=model, tokenizer=tokenizer, arch=ARCH, options=GraspOptions(**options), target_ratio=ratio,
        calibration=calib, device=torch.device("cpu"), seed=0,
        progress=progress or (lambda f, m: None), should_stop=should_stop or (lambda: False),
    )


def _autograd_sigma_gradient(model, u, s, vh, calib) -> torch.Tensor:
    """sum over windows of dL/ds with W = U diag(s) Vh substituted into the untouched model (s the leaf)."""
    direct = torch.zeros_like(s)
    for row in calib:
        ids = row.unsqueeze(0)
        sigma = s.clone().requires_grad_(True)
        loss = functional_call(model, {f"{TARGET}.weight": (u * sigma) @ vh}, (ids,), {"labels": ids}).loss
        direct += torch.autograd.grad(loss, sigma)[0]
    return direct


def test_attribution_equals_autograd_on_sigma_and_dense_gradient(tiny_model, tiny_calib):
    calib = tiny_calib[:3, :64]
    linear = tiny_model.get_submodule(TARGET)
    u, s, vh = svd(linear.weight)
    with sigma_surrogates(tiny_model, {TARGET: linear}) as surrogates:
        ours = accumulate_sigma_gradients(tiny_model, surrogates, calib, torch.device("cpu"))[TARGET]
    assert tiny_model.get_submodule(TARGET) is linear  # the dense linear is back

    direct = _autograd_sigma_gradient(tiny_model, u, s, vh, calib)
    dense = torch.zeros_like(s)
    for row in calib:  # u_i^T G v_i from the dense weight gradient G
        ids = row.unsqueeze(0)
        weight = linear.weight.detach().clone().requires_grad_(True)
        loss = functional_call(tiny_model, {f"{TARGET}.weight": weight}, (ids,), {"labels": ids}).loss
        grad_w = torch.autograd.grad(loss, weight)[0]
        dense += torch.einsum("mi,mn,in->i", u, grad_w, vh)
    assert ours.windows == 3
    torch.testing.assert_close(ours.signed, direct, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.signed, dense, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ours.scores("taylor"), (s * direct).abs(), rtol=1e-4, atol=1e-6)
    assert ours.signed.abs().max() > 1e-4  # the gradients are real, not zero
    assert all(p.requires_grad for p in tiny_model.parameters())  # flags restored


def test_sigma_linear_keeps_bias_and_any_input_shape():
    torch.manual_seed(0)
    linear = nn.Linear(12, 7, bias=True)
    surrogate = SigmaLinear(linear)
    for shape in [(5, 12), (2, 3, 12), (2, 2, 3, 12)]:
        x = torch.randn(shape)
        torch.testing.assert_close(surrogate(x), linear(x), rtol=1e-5, atol=1e-5)


def test_whitened_surrogate_is_exact_and_its_attribution_is_autograd_on_its_sigma(tiny_model, tiny_calib):
    """basis="whitened": W = U diag(s) (V_w^T L^-1) reproduces the layer, and dL/ds is still exact."""
    from compression.activations import collect_input_stats
    from compression.linalg import cholesky_whitening, unwhiten, whitened_svd

    calib = tiny_calib[:3, :64]
    linear = tiny_model.get_submodule(TARGET)
    gram = collect_input_stats(tiny_model, {TARGET: linear}, calib, "cpu", dtype=torch.float64)[TARGET]
    chol = cholesky_whitening(gram)
    surrogate = SigmaLinear(linear, chol)
    x = torch.randn(2, 5, linear.in_features)
    torch.testing.assert_close(surrogate(x), linear(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(surrogate.vh, svd(linear.weight)[2])  # a different basis, not the plain SVD

    with sigma_surrogates(tiny_model, {TARGET: linear}, {TARGET: chol}) as surrogates:
        ours = accumulate_sigma_gradients(tiny_model, surrogates, calib, torch.device("cpu"))[TARGET]
    u, s, vh_w = whitened_svd(linear.weight, chol)
    direct = _autograd_sigma_gradient(tiny_model, u, s, unwhiten(vh_w, chol), calib)
    torch.testing.assert_close(ours.signed, direct, rtol=1e-3, atol=1e-5)
    assert ours.signed.abs().max() > 1e-4


def test_whitened_basis_keeps_a_better_remnant_than_the_weight_basis(
    tiny_tokenizer, tiny_calib, tiny_heldout, tinystories_dir,
):
    """On the real TinyStories model the activation-aware remnant predicts held-out text better
    (the reason the option exists), lands on the ratio and exports."""
    from transformers import AutoModelForCausalLM

    from compression.evaluation import perplexity

    losses = {}
    for basis in ("weight", "whitened"):
        model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()
        total = decoder_linear_params(model, ARCH)
        report = get("grasp").compress(_ctx(model, tiny_tokenizer, tiny_calib, 0.2, order="one_pass", basis=basis))
        assert report.details["basis"] == basis
        assert abs(1 - decoder_linear_params(model, ARCH) / total - 0.2) <= 0.01
        losses[basis] = perplexity(model, tiny_heldout, 256, max_windows=16)
    assert losses["whitened"] < losses["weight"], losses


def test_sigma_metric_in_the_whitened_basis_is_svd_llm_truncation_of_the_chosen_layer(
    tiny_model, tiny_tokenizer, tiny_calib,
):
    from compression.activations import collect_input_stats
    from compression.linalg import cholesky_whitening, rank_for_ratio, whitened_factors

    linear = tiny_model.get_submodule(TARGET)
    weight = linear.weight.detach().clone()
    gram = collect_input_stats(tiny_model, {TARGET: linear}, tiny_calib, "cpu", dtype=torch.float64)[TARGET]
    report = get("grasp").compress(_ctx(tiny_model, tiny_tokenizer, tiny_calib, 0.2, layers=[1],
                                        basis="whitened", metric="sigma"))
    low_rank = tiny_model.get_submodule(TARGET)
    rank = rank_for_ratio(weight.shape[0], weight.shape[1], report.details["rank_ratio"])
    assert low_rank.rank == rank
    out_factor, in_factor, _ = whitened_factors(weight, cholesky_whitening(gram), rank)
    torch.testing.assert_close(low_rank.to_dense().weight, out_factor @ in_factor, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValidationError, match="aggregate applies to gradient scores only"):
        GraspOptions(metric="sigma", aggregate="abs_sum")
    with pytest.raises(ValidationError, match="basis"):
        GraspOptions(basis="activation")


def test_select_components_topk_and_threshold():
    scores = torch.tensor([1.0, 4.0, 2.0, 3.0])
    assert select_components(scores, rank=2).tolist() == [1, 3]
    assert select_components(scores, threshold=0.7).tolist() == [1, 3]  # 4+3 = 70% of 10
    assert select_components(scores, threshold=0.71).tolist() == [1, 2, 3]
    with pytest.raises(ValueError):
        select_components(scores, rank=5)


@pytest.mark.parametrize("ratio", [0.1, 0.2, 0.3])
def test_ratio_plan_lands_within_one_point(tiny_model, ratio):
    shapes = [(m.out_features, m.in_features) for m in decoder_layers(tiny_model, ARCH)[0].modules()
              if isinstance(m, nn.Linear)]
    total = decoder_linear_params(tiny_model, ARCH)
    p = plan(target=ratio, total=total, layer_shapes=shapes, num_layers_total=2,
             num_layers=None, rank_ratio=None, threshold=None)
    assert p.num_layers == 1 and abs(p.expected_ratio - ratio) <= 0.01


def test_reference_order_compresses_lowest_bi_layer_and_exports(tiny_model, tiny_tokenizer, tiny_calib, tmp_path):
    calib = tiny_calib[:4, :64]
    bi = block_influence(tiny_model, ARCH, calib, "cpu")
    before = decoder_linear_params(tiny_model, ARCH)
    messages: list[str] = []
    report = get("grasp").compress(_ctx(tiny_model, tiny_tokenizer, calib, 0.2,
                                        progress=lambda f, m: messages.append(m)))
    lowest = int(torch.argmin(bi))
    assert report.details["layers"] == [lowest]
    achieved = 1 - decoder_linear_params(tiny_model, ARCH) / before
    assert abs(achieved - 0.2) <= 0.01
    layers = decoder_layers(tiny_model, ARCH)
    assert all(isinstance(m, LowRankLinear) for m in [layers[lowest].mlp.down_proj, layers[lowest].self_attn.q_proj])
    assert isinstance(layers[1 - lowest].mlp.down_proj, nn.Linear)
    # MLP block before attention, progress by layer and block.
    mlp_at = next(i for i, m in enumerate(messages) if f"layer {lowest} mlp" in m)
    attn_at = next(i for i, m in enumerate(messages) if f"layer {lowest} attention" in m)
    assert mlp_at < attn_at

    ids = tiny_calib[:2, :48]
    expected = tiny_model(input_ids=ids).logits
    out = tmp_path / "grasp"
    export(tiny_model, tiny_tokenizer, out, report={"method": "grasp", "details": report.details})
    reloaded = load_compressed(out).model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, expected.detach())


def test_one_pass_matches_reference_on_the_first_block(tiny_model, tiny_tokenizer, tiny_calib):
    """Both orders score the first block (MLP of the deepest layer) on the same dense model."""
    from transformers import AutoModelForCausalLM

    calib = tiny_calib[:3, :64]
    one = get("grasp").compress(_ctx(tiny_model, tiny_tokenizer, calib, 0.2, order="one_pass", layers=[1]))
    ref_model = AutoModelForCausalLM.from_pretrained(tiny_model.name_or_path, dtype=torch.float32).eval()
    ref = get("grasp").compress(_ctx(ref_model, tiny_tokenizer, calib, 0.2, layers=[1]))
    assert one.details["ranks"] == ref.details["ranks"]
    a = tiny_model.model.layers[1].mlp.down_proj.in_proj.weight
    torch.testing.assert_close(a, ref_model.model.layers[1].mlp.down_proj.in_proj.weight)


def test_bad_options_fail_clearly(tiny_model, tiny_tokenizer, tiny_calib):
    calib = tiny_calib[:2, :32]
    grasp = get("grasp")
    with pytest.raises(InvalidInput, match="num_layers=2 must be below"):
        grasp.compress(_ctx(tiny_model, tiny_tokenizer, calib, 0.2, num_layers=2))
    with pytest.raises(InvalidInput, match="choose more layers"):
        grasp.compress(_ctx(tiny_model, tiny_tokenizer, calib, 0.7, num_layers=1))
    with pytest.raises(InvalidInput, match="rank_ratio=0.9 on 1 layer"):
        grasp.compress(_ctx(tiny_model, tiny_tokenizer, calib, 0.2, rank_ratio=0.9))
    with pytest.raises(InvalidInput, match="do not exist"):
        grasp.compress(_ctx(tiny_model, tiny_tokenizer, calib, 0.2, layers=[5]))
    with pytest.raises(InvalidInput, match="calibration"):
        grasp.compress(_ctx(tiny_model, tiny_tokenizer, None, 0.2))
    with pytest.raises(ValidationError, match="either rank_ratio or threshold"):
        GraspOptions(rank_ratio=0.5, threshold=0.9)
    with pytest.raises(ValidationError):
        GraspOptions(metric="fisher")
    with pytest.raises(ValidationError, match="multiple of"):
        GraspOptions(recovery={"batch_size": 10, "micro_batch_size": 4})
    assert not any(isinstance(m, LowRankLinear) for m in tiny_model.modules())  # refused before touching it


def test_an_already_compressed_layer_is_refused_before_any_calibration_pass(
        tiny_model, tiny_tokenizer, tiny_calib, monkeypatch):
    import compression.methods.grasp as grasp_module

    calib = tiny_calib[:2, :32]
    get("grasp").compress(_ctx(tiny_model, tiny_tokenizer, calib, 0.2, layers=[1]))
    sweeps = []
    monkeypatch.setattr(grasp_module, "whitening_factors", lambda *a, **k: sweeps.append(a))
    with pytest.raises(InvalidInput, match="already compressed"):
        get("grasp").compress(_ctx(tiny_model, tiny_tokenizer, calib, 0.2, layers=[1], basis="whitened"))
    assert sweeps == []


def test_cancel_between_blocks(tiny_model, tiny_tokenizer, tiny_calib):
    with pytest.raises(Cancelled):
        get("grasp").compress(_ctx(tiny_model, tiny_tokenizer, tiny_calib[:2, :32], should_stop=lambda: True))


@pytest.mark.slow
def test_smollm2_selects_lowest_bi_layers_and_meets_ratio(tiny_calib):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.support.smollm2 import smollm2_dir

    folder = smollm2_dir()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = "The history of the city begins in the twelfth century, when a small market grew by the river. " * 8
    calib = torch.tensor(tokenizer(text)["input_ids"][:96]).view(2, 48)
    shapes = [(m.out_features, m.in_features) for m in decoder_layers(model, ARCH)[0].modules()
              if isinstance(m, nn.Linear)]
    total = decoder_linear_params(model, ARCH)
    for ratio in (0.1, 0.2, 0.3):
        p = plan(target=ratio, total=total, layer_shapes=shapes, num_layers_total=30,
                 num_layers=None, rank_ratio=None, threshold=None)
        assert abs(p.expected_ratio - ratio) <= 0.01 and p.rank_ratio < 1
    bi = block_influence(model, ARCH, calib, "cpu")
    report = get("grasp").compress(_ctx(model, tokenizer, calib, 0.1, order="one_pass"))
    chosen = report.details["layers"]
    assert chosen == sorted(torch.argsort(bi)[: len(chosen)].tolist()) and len(chosen) == 4
    assert abs(1 - decoder_linear_params(model, ARCH) / total - 0.1) <= 0.01


def test_threshold_keeps_data_dependent_ranks_or_fails_with_a_hint(tiny_model, tiny_tokenizer, tiny_calib):
    calib = tiny_calib[:2, :64]
    # Keeping 99.9% of the importance keeps nearly every component: far less than 20% removed.
    with pytest.raises(RatioNotReached, match="lower options.threshold"):
        get("grasp").compress(_ctx(tiny_model, tiny_tokenizer, calib, 0.2, threshold=0.999))


def test_prefix_cache_gives_the_same_gradients_as_the_full_forward(tiny_model, tiny_calib):
    calib = tiny_calib[:3, :64]
    linear = tiny_model.get_submodule(TARGET)
    with sigma_surrogates(tiny_model, {TARGET: linear}) as surrogates:
        full = accumulate_sigma_gradients(tiny_model, surrogates, calib, torch.device("cpu"))[TARGET]
        cache = PrefixCache(tiny_model, ARCH, 1, calib, torch.device("cpu"))
        assert len(cache.inputs) == 3
        cached = accumulate_sigma_gradients(tiny_model, surrogates, calib, torch.device("cpu"), prefix=cache)[TARGET]
    torch.testing.assert_close(cached.signed, full.signed, rtol=1e-5, atol=1e-7)
    assert isinstance(decoder_layers(tiny_model, ARCH)[0], type(decoder_layers(tiny_model, ARCH)[1]))  # restored
