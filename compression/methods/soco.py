"""SoCo (arXiv 2502.15092): learn a score per singular component, prune globally by it, amplify survivors.

1. Factor every target linear W = U diag(sigma) B: by default in SVD-LLM's whitened basis (SVD of W L,
   B = V_w^T L^-1, L the Cholesky factor of the calibration Gram), so the starting point already orders
   each matrix's components by their output error; basis="plain" uses SVD(W).
2. Replace it by a ScoredSpectrumLinear computing U diag(sigma * s) B x with a learnable s (init 1:
   the model is exactly the dense one) and train s in three stages (compression/spectrum_training.py).
3. The budget is global: sum over matrices of rank * (m+n) <= (1-r) * sum m*n, ranks allocated by the
   learned scores. Decision on break-even: a matrix whose kept rank would exceed floor(mn/(m+n)) is
   capped there (still factorized), because beyond it the factors would cost more than the dense matrix.
4. Export each matrix as a LowRankLinear of its survivors with sqrt(sigma * s) folded into both factors;
   pruned components (score exactly 0) are dropped.
"""

from __future__ import annotations

import torch

from compression.activations import collect_input_stats
from compression.architectures import iter_target_linears
from compression.errors import InvalidInput
from compression.linalg import cholesky_whitening
from compression.methods.base import CompressionContext, Compressor, MethodReport, register
from compression.methods.factorization import shared_input_sources
from compression.rank_figure import MatrixRank, render_rank_allocation
from compression.specs import Method, SoCoOptions
from compression.spectrum import ScoredSpectrumLinear
from compression.spectrum_training import train_scores
from compression.surgery import decoder_linear_params, replace_module


def factor_targets(ctx: CompressionContext, options: SoCoOptions) -> list[tuple[str, int, str, ScoredSpectrumLinear]]:
    """Swap every target nn.Linear for a ScoredSpectrumLinear with all scores at 1 (model unchanged)."""
    targets = list(iter_target_linears(ctx.model, ctx.arch, options.targets))
    for name, _, _, module in targets:
        if not isinstance(module, torch.nn.Linear):
            raise InvalidInput(f"soco needs dense nn.Linear targets; {name} is a {type(module).__name__}")
    grams: dict[str, torch.Tensor] = {}
    source = shared_input_sources(ctx.arch, (name for name, _, _, _ in targets))  # q/k/v, gate/up: one Gram each
    if options.basis == "whitened":
        ctx.progress(0.0, "whitening: collecting input Gram matrices")
        dtype = torch.float64 if options.gram_dtype == "float64" else torch.float32
        modules = {name: module for name, _, _, module in targets if source[name] == name}
        grams = collect_input_stats(ctx.model, modules, ctx.calibration, ctx.device, stat="gram", dtype=dtype)
    factors: dict[str, torch.Tensor] = {}  # Cholesky factor per Gram source, freed after its last user
    last_user = {source[name]: name for name, _, _, _ in targets}
    scored = []
    for index, (name, layer, short, module) in enumerate(targets):
        ctx.check_stop()
        chol = None
        if options.basis == "whitened":
            key = source[name]
            if key not in factors:
                factors[key] = cholesky_whitening(grams.pop(key))
            chol = factors.pop(key) if last_user[key] == name else factors[key]
        new = ScoredSpectrumLinear.from_linear(module, chol)
        replace_module(ctx.model, name, new)
        scored.append((name, layer, short, new))
        ctx.progress((index + 1) / len(targets) * 0.1, f"factorized {name} ({options.basis} basis)")
    return scored


def factor_budget(ctx: CompressionContext, scored: list[tuple[str, int, str, ScoredSpectrumLinear]],
                  dense_total: int) -> int:
    """Parameters the factorized targets may use so that decoder_linear_params drops by target_ratio."""
    target_mn = sum(m.out_features * m.in_features for _, _, _, m in scored)
    other = dense_total - target_mn  # biases and projections not targeted stay as they are
    budget = int((1.0 - ctx.target_ratio) * dense_total) - other
    minimum = sum(m.cost for _, _, _, m in scored)
    if budget < minimum:
        raise InvalidInput(
            f"target_ratio {ctx.target_ratio} is unreachable with these targets: even rank 1 everywhere "
            f"keeps {(other + minimum) / dense_total:.1%} of the decoder linear parameters; lower the ratio "
            "or target more projections"
        )
    return budget


@register
class SoCo(Compressor[SoCoOptions]):
    method = Method.SOCO

    def compress(self, ctx: CompressionContext[SoCoOptions]) -> MethodReport:
        options = ctx.options
        if ctx.calibration is None or ctx.calibration.numel() == 0:
            raise InvalidInput("soco trains on calibration windows; the job has none (set calibration.samples)")
        if ctx.calibration.dim() != 2 or ctx.calibration.shape[1] < 2:
            raise InvalidInput(f"calibration must be [n_windows, seq_len >= 2], got {tuple(ctx.calibration.shape)}")
        dense_total = decoder_linear_params(ctx.model, ctx.arch)
        scored = factor_targets(ctx, options)
        budget = factor_budget(ctx, scored, dense_total)
        modules = [m for _, _, _, m in scored]
        full_ranks = {name: m.full_rank for name, _, _, m in scored}  # before training drops candidates
        log = train_scores(
            ctx.model, modules, ctx.calibration, budget, options, ctx.device, seed=ctx.seed,
            progress=lambda f, msg: ctx.progress(0.1 + 0.85 * f, msg), check_stop=ctx.check_stop,
        )
        entries, ranks = [], {}
        for name, layer, short, module in scored:
            low_rank = module.to_low_rank()
            replace_module(ctx.model, name, low_rank)
            ranks[name] = low_rank.rank
            entries.append(MatrixRank(layer, short, low_rank.rank, module.break_even_rank))
        ctx.progress(1.0, "exported low-rank factors")
        achieved = 1.0 - decoder_linear_params(ctx.model, ctx.arch) / dense_total
        figure = render_rank_allocation(entries, title=f"SoCo rank allocation, target ratio {ctx.target_ratio:.2f}")
        return MethodReport(
            details={
                "ranks": ranks,
                "full_ranks": full_ranks,
                "break_even_ranks": {name: m.break_even_rank for name, _, _, m in scored},
                "basis": options.basis,
                "budget_params": budget,
                "training": log.stages,
            },
            metrics={"achieved_ratio": achieved},
            files={"rank_allocation.png": figure},
        )
