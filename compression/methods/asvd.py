"""ASVD (arXiv 2312.05821): scale input channels by their activation magnitude before the SVD.

S = diag(s)^alpha + 1e-6 with s_j = mean_t |x_j| (abs_mean, default) or max_t |x_j| (abs_max),
measured once on the dense model. W S = U Sigma V^T is decomposed by a deterministic full SVD
(the official code's svd_lowrank is randomized), then
    in factor = sqrt(Sigma_k) V_k^T S^-1,   out factor = U_k sqrt(Sigma_k).

Left out on purpose: the paper's per-layer sensitivity search (a perplexity sweep over candidate
ratios for every matrix, then a binary search on the global budget). It costs one evaluation per
matrix and ratio, so every matrix here gets the uniform rank of the target ratio instead.
"""

from __future__ import annotations

import torch

from compression.activations import collect_input_stats
from compression.linalg import svd, truncate
from compression.progress import layer_message
from compression.methods.base import CompressionContext, Compressor, MethodReport, register
from compression.methods.factorization import (
    by_layer,
    input_representatives,
    install,
    plan_targets,
    require_calibration,
    routing_report,
    weight_f32,
)
from compression.specs import ASVDOptions, Method

EPS = 1e-6


def asvd_factors(
    weight: torch.Tensor, channel_scale: torch.Tensor, alpha: float, rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(out factor [m,k], in factor [k,n]) of W from the SVD of W diag(s^alpha + eps)."""
    scale = channel_scale.to(weight).pow(alpha) + EPS
    u, s, vh = svd(weight * scale.unsqueeze(0))
    out_factor, in_scaled = truncate(u, s, vh, rank)
    return out_factor, in_scaled / scale.unsqueeze(0)


@register
class ActivationAwareSVD(Compressor[ASVDOptions]):
    method = Method.ASVD

    def compress(self, ctx: CompressionContext[ASVDOptions]) -> MethodReport:
        options = ctx.options
        calibration = require_calibration(ctx, "asvd")
        plan = plan_targets(ctx, options.targets)
        rep = input_representatives(ctx.arch, plan)
        modules = {t.name: t.module for t in plan if rep[t.name] == t.name}
        counts: dict[str, int] = {}
        stats = collect_input_stats(
            ctx.model, modules, calibration, ctx.device, stat=options.scaling,
            progress=lambda f, msg: ctx.progress(0.5 * f, msg),
            token_counts=counts if ctx.arch.experts else None,  # experts may see no token at all
        )
        layers = by_layer(plan)
        ranks: dict[str, int] = {}
        for done, (index, targets) in enumerate(layers.items()):
            ctx.check_stop()
            for target in targets:
                weight = weight_f32(target, ctx.device)
                # An expert no calibration token reached has no activation scale: unit scale, plain SVD.
                scale = stats.get(rep[target.name], torch.ones(weight.shape[1], device=weight.device))
                out_factor, in_factor = asvd_factors(weight, scale, options.alpha, target.rank)
                ranks[target.name] = install(ctx, target, out_factor, in_factor)
            ctx.progress(0.5 + 0.5 * (done + 1) / len(layers),
                         layer_message(done + 1, len(layers), "activation-aware SVD"))
        return MethodReport(
            details={"ranks": ranks, "alpha": options.alpha, "scaling": options.scaling,
                     "calibration_windows": int(calibration.shape[0]), **routing_report(ctx, counts)}
        )
