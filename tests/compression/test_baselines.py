"""The four baselines on the real TinyStories-656K model: ratios, ranks, quality order, layer removal."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compression.architectures import arch_for, decoder_layers
from compression.errors import Cancelled, InvalidInput
from compression.linalg import cholesky_whitening, rank_for_ratio, whitened_factors, whitened_svd
from compression.lowrank import LowRankLinear
from compression.methods import CompressionContext, MethodReport, get
from compression.specs import options_class
from compression.surgery import decoder_linear_params

ARCH = arch_for("llama")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small LAPACK calls slow down ~100x when OpenMP threads fight over busy cores; one is plenty here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _compress(model, tokenizer, calib, method: str, ratio: float, stop=lambda: False, **options):
    calls: list[float] = []
    ctx = CompressionContext(
        model=model, tokenizer=tokenizer, arch=ARCH, options=options_class(method)(**options),
        target_ratio=ratio, calibration=calib, device=torch.device("cpu"), seed=0,
        progress=lambda fraction, message: calls.append(fraction), should_stop=stop,
    )
    report = get(method).compress(ctx)
    assert isinstance(report, MethodReport)
    return report, calls


def _ppl(model: nn.Module, tokens: torch.Tensor, seq_len: int = 128, windows: int = 12) -> float:
    """Held-out perplexity: non-overlapping windows, mean NLL over every predicted token."""
    batch = tokens[: windows * seq_len].view(windows, seq_len)
    with torch.no_grad():
        logits = model(input_ids=batch, use_cache=False).logits
    nll = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    return math.exp(nll.item())


@pytest.mark.parametrize("ratio", [0.2, 0.4])
@pytest.mark.parametrize("method", ["svd", "asvd", "svd_llm"])
def test_factorizing_methods_hit_ratio_and_gqa_ranks(tiny_model, tiny_tokenizer, tiny_calib, method, ratio):
    dense = decoder_linear_params(tiny_model, ARCH)
    report, calls = _compress(tiny_model, tiny_tokenizer, tiny_calib, method, ratio)
    achieved = 1 - decoder_linear_params(tiny_model, ARCH) / dense
    assert abs(achieved - ratio) <= 0.01, achieved
    ranks = report.details["ranks"]
    assert len(ranks) == 2 * 7
    assert ranks["model.layers.0.self_attn.q_proj"] == rank_for_ratio(128, 128, ratio)
    assert ranks["model.layers.1.self_attn.k_proj"] == rank_for_ratio(64, 128, ratio)  # GQA: 128 -> 64
    assert ranks["model.layers.1.self_attn.v_proj"] == rank_for_ratio(64, 128, ratio)
    assert ranks["model.layers.0.mlp.down_proj"] == rank_for_ratio(128, 384, ratio)
    v_proj = tiny_model.get_submodule("model.layers.1.self_attn.v_proj")
    assert isinstance(v_proj, LowRankLinear) and v_proj.out_features == 64 and v_proj.rank == ranks[
        "model.layers.1.self_attn.v_proj"]
    assert calls and calls[-1] == pytest.approx(1.0) and calls == sorted(calls)


def test_targets_subset_removes_more_from_each_target(tiny_model, tiny_tokenizer, tiny_calib):
    dense = decoder_linear_params(tiny_model, ARCH)
    report, _ = _compress(tiny_model, tiny_tokenizer, tiny_calib, "svd", 0.2, targets=["gate_proj", "up_proj", "down_proj"])
    assert set(n.rsplit(".", 1)[1] for n in report.details["ranks"]) == {"gate_proj", "up_proj", "down_proj"}
    assert abs(1 - decoder_linear_params(tiny_model, ARCH) / dense - 0.2) <= 0.01
    with pytest.raises(InvalidInput, match="cannot remove 90%"):
        _compress(tiny_model, tiny_tokenizer, tiny_calib, "svd", 0.9, targets=["q_proj"])


def test_whitening_beats_plain_svd_in_heldout_perplexity(tinystories_dir, tiny_tokenizer, tiny_calib, tiny_heldout):
    from transformers import AutoModelForCausalLM

    ppl = {}
    for method in ("dense", "svd", "asvd", "svd_llm"):
        model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()
        if method != "dense":
            _compress(model, tiny_tokenizer, tiny_calib, method, 0.4)
        ppl[method] = _ppl(model, tiny_heldout)
    assert ppl["dense"] < ppl["svd_llm"] < ppl["svd"], ppl
    assert ppl["asvd"] < ppl["svd"], ppl


def test_svd_llm_truncation_error_on_random_data():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(48, 32, generator=gen)
    mix = torch.randn(32, 32, generator=gen) * torch.logspace(0, -2, 32)  # correlated, badly scaled inputs
    x = (mix @ torch.randn(32, 400, generator=gen)).double()
    chol = cholesky_whitening(x @ x.T)
    _, s, _ = whitened_svd(w, chol, dtype=torch.float64)
    for k in (4, 12, 20):
        out_f, in_f, _ = whitened_factors(w.double(), chol, k)
        err = torch.linalg.matrix_norm((w.double() - out_f.double() @ in_f.double()) @ x)
        assert err.item() == pytest.approx(s[k:].pow(2).sum().sqrt().item(), rel=1e-3)
        # and whitening beats plain SVD on the output error it optimizes
        plain = torch.linalg.svd(w.double(), full_matrices=False)
        w_plain = plain.U[:, :k] @ torch.diag(plain.S[:k]) @ plain.Vh[:k]
        assert err < torch.linalg.matrix_norm((w.double() - w_plain) @ x)


def test_svd_llm_output_error_on_the_real_model(tiny_model, tiny_tokenizer, tiny_calib):
    q = tiny_model.model.layers[0].self_attn.q_proj
    seen: list[torch.Tensor] = []
    handle = q.register_forward_hook(lambda m, a, o: seen.append(a[0].reshape(-1, 128).detach()))
    with torch.no_grad():
        tiny_model(tiny_calib, use_cache=False)
    handle.remove()
    x = torch.cat(seen).double().T  # [128, tokens]
    w = q.weight.detach().double().clone()
    _compress(tiny_model, tiny_tokenizer, tiny_calib, "svd_llm", 0.4)
    low = tiny_model.model.layers[0].self_attn.q_proj
    w_low = (low.out_proj.weight.double() @ low.in_proj.weight.double())
    _, s, _ = whitened_svd(w, cholesky_whitening(x @ x.T), dtype=torch.float64)
    err = torch.linalg.matrix_norm((w - w_low) @ x).item()
    assert err == pytest.approx(s[low.rank:].pow(2).sum().sqrt().item(), rel=1e-3)


def test_svd_llm_update_reduces_propagated_error(tinystories_dir, tiny_tokenizer, tiny_calib, tiny_heldout):
    from transformers import AutoModelForCausalLM

    results = {}
    for update in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()
        report, _ = _compress(model, tiny_tokenizer, tiny_calib, "svd_llm", 0.4, update=update, update_samples=8)
        assert report.details["update"] is update
        results[update] = _ppl(model, tiny_heldout)
    assert results[True] < results[False], results


def test_shortgpt_removes_the_lower_bi_layer_and_generates(tiny_model, tiny_tokenizer, tiny_calib):
    layers = list(decoder_layers(tiny_model, ARCH))
    report, calls = _compress(tiny_model, tiny_tokenizer, tiny_calib, "shortgpt", 0.5)
    bi = report.details["block_influence"]
    lower = min(range(2), key=lambda i: bi[i])
    assert report.details["removed_layers"] == [lower]
    remaining = decoder_layers(tiny_model, ARCH)
    assert len(remaining) == 1 and remaining[0] is layers[1 - lower]
    assert tiny_model.config.num_hidden_layers == 1
    prompt = tiny_tokenizer("Once upon a time", return_tensors="pt")
    with torch.no_grad():
        out = tiny_model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8
    assert calls[-1] == 1.0


def test_shortgpt_unreachable_ratio_names_reachable_ones(tiny_model, tiny_tokenizer, tiny_calib):
    with pytest.raises(InvalidInput, match=r"with 2 layers only these ratios are reachable: 0\.5"):
        _compress(tiny_model, tiny_tokenizer, tiny_calib, "shortgpt", 0.2)
    with pytest.raises(InvalidInput, match="num_layers=2 is impossible: shortgpt must remove between 1 and 1"):
        _compress(tiny_model, tiny_tokenizer, tiny_calib, "shortgpt", 0.5, num_layers=2)
    with pytest.raises(InvalidInput, match=r"num_layers=1 gives 0\.5"):
        _compress(tiny_model, tiny_tokenizer, tiny_calib, "shortgpt", 0.3, num_layers=1)


def test_methods_need_calibration_and_honour_stop(tiny_model, tiny_tokenizer, tiny_calib):
    with pytest.raises(InvalidInput, match="svd_llm needs calibration"):
        _compress(tiny_model, tiny_tokenizer, None, "svd_llm", 0.2)
    with pytest.raises(Cancelled):
        _compress(tiny_model, tiny_tokenizer, tiny_calib, "svd", 0.2, stop=lambda: True)
    assert type(tiny_model.model.layers[0].self_attn.q_proj) is nn.Linear  # stopped before any change


def test_biased_projections_keep_their_bias(tiny_tokenizer):
    """Qwen2 has biased q/k/v (a tiny random model: only shapes and bookkeeping matter here)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=64)
    model = Qwen2ForCausalLM(config).eval()
    k_bias = model.model.layers[0].self_attn.k_proj.bias.detach().clone()
    calib = torch.randint(0, 64, (4, 32), generator=torch.Generator().manual_seed(0))
    arch = arch_for("qwen2")
    dense = decoder_linear_params(model, arch)
    ctx = CompressionContext(
        model=model, tokenizer=None, arch=arch, options=options_class("svd_llm")(update=True), target_ratio=0.4,
        calibration=calib, device=torch.device("cpu"), seed=0,
    )
    report = get("svd_llm").compress(ctx)
    assert abs(1 - decoder_linear_params(model, arch) / dense - 0.4) <= 0.01
    k_proj = model.model.layers[0].self_attn.k_proj
    assert isinstance(k_proj, LowRankLinear) and torch.equal(k_proj.bias, k_bias)
    assert report.details["ranks"]["model.layers.0.self_attn.k_proj"] == k_proj.rank
    with torch.no_grad():
        assert torch.isfinite(model(calib).logits).all()
