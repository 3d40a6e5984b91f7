"""SoCo on the real TinyStories-656K: identity at s=1, global budget, exact pruning, export, bad input."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from compression.architectures import arch_for, iter_target_linears
from compression.errors import Cancelled, InvalidInput
from compression.evaluation import perplexity
from compression.export import export, load_compressed
from compression.lowrank import LowRankLinear
from compression.methods import get
from compression.methods.base import CompressionContext
from compression.methods.soco import factor_budget, factor_targets
from compression.specs import SoCoOptions, SVDLLMOptions
from compression.spectrum import ScoredSpectrumLinear, select_budget
from compression.spectrum_training import train_scores
from compression.surgery import decoder_linear_params

FAST = dict(fisher_batches=4, refine_steps=4, reselect_every=2, compensate_steps=4)
CPU = torch.device("cpu")


def _ctx(model, tokenizer, calib, ratio: float, **options) -> CompressionContext:
    return CompressionContext(
        model=model, tokenizer=tokenizer, arch=arch_for("llama"), options=SoCoOptions(**options),
        target_ratio=ratio, calibration=calib, device=CPU, seed=0,
    )


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.mark.parametrize("basis", ["plain", "whitened"])
def test_scores_at_one_reproduce_the_dense_model(tiny_model, tiny_tokenizer, tiny_calib, basis):
    ids = tiny_calib[:2, :64]
    expected = _logits(tiny_model, ids)
    ctx = _ctx(tiny_model, tiny_tokenizer, tiny_calib, 0.4, basis=basis)
    scored = factor_targets(ctx, ctx.options)
    assert len(scored) == 2 * 7 and all(isinstance(m, ScoredSpectrumLinear) for *_, m in scored)
    torch.testing.assert_close(_logits(tiny_model, ids), expected, atol=2e-4, rtol=1e-4)


def test_select_budget_is_global_capped_and_fits():
    torch.manual_seed(0)
    big = ScoredSpectrumLinear(torch.randn(40, 30), torch.linspace(3, 1, 30), torch.randn(30, 60), None)
    small = ScoredSpectrumLinear(torch.randn(40, 20), torch.linspace(3, 1, 20), torch.randn(20, 20), None)
    # The big matrix's components are far more important: it fills up to its break-even rank (24) and
    # the rest of the budget goes to the small one, one component per 60 parameters.
    budget = 24 * big.cost + 5 * small.cost
    keep = select_budget([big, small], budget=budget, importance=[torch.full((30,), 100.0), torch.ones(20)])
    assert [int(k.sum()) for k in keep] == [big.break_even_rank, 5] == [24, 5]
    assert torch.equal(keep[1], torch.arange(20) < 5)  # ties broken toward the larger singular values
    # No budget: still one component each.
    keep = select_budget([big, small], budget=0, importance=[torch.ones(30), torch.ones(20)])
    assert [int(k.sum()) for k in keep] == [1, 1]


def test_training_meets_the_budget_and_prunes_exactly(tiny_model, tiny_tokenizer, tiny_calib):
    ratio = 0.4
    ctx = _ctx(tiny_model, tiny_tokenizer, tiny_calib, ratio, **FAST)
    dense_total = decoder_linear_params(tiny_model, ctx.arch)
    scored = factor_targets(ctx, ctx.options)
    budget = factor_budget(ctx, scored, dense_total)
    modules = [m for *_, m in scored]
    log = train_scores(tiny_model, modules, tiny_calib, budget, ctx.options, CPU)
    assert log.final_params <= budget
    assert abs(1 - log.final_params / dense_total - ratio) < 0.01
    ranks = set()
    for module, rank in zip(modules, log.ranks):
        pruned = module.mask == 0
        assert torch.all(module.score[pruned] == 0)  # pruned scores are exactly zero
        assert int(torch.count_nonzero(module.score * module.mask)) == rank
        assert 1 <= rank <= module.break_even_rank
        assert module.to_low_rank().rank == rank
        ranks.add(rank / module.break_even_rank)
    assert len(ranks) > 3  # the allocation is not uniform: ranks follow the learned importance
    assert max(float(m.score.detach().max()) for m in modules) > 1.0  # some survivors were amplified


def test_compress_exports_low_rank_and_reloads_identically(tiny_model, tiny_tokenizer, tiny_calib, tmp_path):
    ctx = _ctx(tiny_model, tiny_tokenizer, tiny_calib, 0.4, **FAST)
    dense_total = decoder_linear_params(tiny_model, ctx.arch)
    report = get("soco").compress(ctx)
    targets = list(iter_target_linears(tiny_model, ctx.arch))
    assert all(isinstance(m, LowRankLinear) for *_, m in targets)
    assert report.details["ranks"] == {name: m.rank for name, _, _, m in targets}
    achieved = 1 - decoder_linear_params(tiny_model, ctx.arch) / dense_total
    assert abs(achieved - 0.4) < 0.01 and report.metrics["achieved_ratio"] == pytest.approx(achieved)
    assert report.files["rank_allocation.png"].startswith(b"\x89PNG")
    assert [s["stage"] for s in report.details["training"]][-1].startswith("stage 3/3")

    ids = tiny_calib[:2, :64]
    expected = _logits(tiny_model, ids)
    out = tmp_path / "soco"
    export(tiny_model, tiny_tokenizer, out, report={"method": "soco", "details": report.details},
           extra_files=report.files)
    assert (out / "rank_allocation.png").is_file()
    assert torch.equal(_logits(load_compressed(out).model, ids), expected)


def test_soco_beats_svd_llm_at_the_same_ratio(tiny_tokenizer, tiny_calib, tiny_heldout, tinystories_dir):
    from transformers import AutoModelForCausalLM

    def fresh():
        return AutoModelForCausalLM.from_pretrained(tinystories_dir, dtype=torch.float32).eval()

    results = {}
    for name, options in (("svd_llm", SVDLLMOptions()), ("soco", SoCoOptions(**FAST))):
        model = fresh()
        ctx = CompressionContext(model=model, tokenizer=tiny_tokenizer, arch=arch_for("llama"), options=options,
                                 target_ratio=0.4, calibration=tiny_calib, device=CPU, seed=0)
        get(name).compress(ctx)
        results[name] = perplexity(model, tiny_heldout, 256, device=CPU)
    assert results["soco"] < 0.9 * results["svd_llm"], results


def test_bad_options_and_inputs_fail_clearly(tiny_model, tiny_tokenizer, tiny_calib):
    with pytest.raises(ValidationError, match="basis"):
        SoCoOptions(basis="orthogonal")
    with pytest.raises(ValidationError, match="cannot both be 0"):
        SoCoOptions(lm_weight=0, deviation_weight=0)
    with pytest.raises(ValidationError, match="extra"):
        SoCoOptions(steps=10)
    with pytest.raises(ValidationError):
        SoCoOptions(learning_rate=-1)
    with pytest.raises(InvalidInput, match="calibration"):
        get("soco").compress(_ctx(tiny_model, tiny_tokenizer, None, 0.4))
    with pytest.raises(InvalidInput, match="unreachable"):
        get("soco").compress(_ctx(tiny_model, tiny_tokenizer, tiny_calib, 0.9, targets=["k_proj"], **FAST))


def test_cancel_between_steps(tiny_model, tiny_tokenizer, tiny_calib):
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) > 20  # past the factorization, inside the training loop

    ctx = _ctx(tiny_model, tiny_tokenizer, tiny_calib, 0.4, **FAST)
    ctx.should_stop = should_stop
    with pytest.raises(Cancelled):
        get("soco").compress(ctx)
