"""ASVD (arXiv 2312.05821): scale input channels by their activation magnitude before the SVD.

S = diag(s)^alpha + 1e-6 with s_j = mean_t |x_j| (abs_mean, default) or max_t |x_j| (abs_max),
measured on the dense model: every layer's statistics come from inputs through the DENSE lower
layers (the official code collects all scaling statistics in one pass before any change), in
resident and streamed execution alike. W S = U Sigma V^T is decomposed by a deterministic full SVD
(the official code's svd_lowrank is randomized), then
    in factor = sqrt(Sigma_k) V_k^T S^-1,   out factor = U_k sqrt(Sigma_k).

Left out on purpose: the paper's per-layer sensitivity search (a perplexity sweep over candidate
ratios for every matrix, then a binary search on the global budget). It costs one evaluation per
matrix and ratio, so every matrix here gets the uniform rank of the target ratio instead.
"""

from __future__ import annotations

from typing import Any

import torch

from compression.execution.engine import DENSE, LayerStep, LayerwiseMethod, run_layerwise
from compression.linalg import svd, truncate
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
class ActivationAwareSVD(Compressor[ASVDOptions], LayerwiseMethod[ASVDOptions]):
    method = Method.ASVD
    layer_work = "activation-aware SVD"

    def compress(self, ctx: CompressionContext[ASVDOptions]) -> MethodReport:
        return run_layerwise(ctx, self)

    def streams(self, ctx: CompressionContext[ASVDOptions]) -> dict[str, int | None]:
        return {DENSE: None}

    def begin(self, ctx: CompressionContext[ASVDOptions]) -> None:
        self.calibration = require_calibration(ctx, "asvd")
        self.options = ctx.options
        plan = plan_targets(ctx, self.options.targets)
        self.rep = input_representatives(ctx.arch, plan)
        self.plan = by_layer(plan)
        self.counts: dict[str, int] = {}

    def layer(self, ctx: CompressionContext[ASVDOptions], step: LayerStep) -> dict[str, Any]:
        targets = self.plan.get(step.index, [])
        modules = {t.name: t.module for t in targets if self.rep[t.name] == t.name}
        stats = step.input_statistics(modules, self.options.scaling,
                                      token_counts=self.counts if ctx.arch.experts else None)
        ranks: dict[str, int] = {}
        for target in targets:
            weight = weight_f32(target, ctx.device)
            # An expert no calibration token reached has no activation scale: unit scale, plain SVD.
            scale = stats.get(self.rep[target.name], torch.ones(weight.shape[1], device=weight.device))
            out_factor, in_factor = asvd_factors(weight, scale, self.options.alpha, target.rank)
            ranks[target.name] = install(ctx, target, out_factor, in_factor)
        return {"ranks": ranks}

    def finish(self, ctx: CompressionContext[ASVDOptions], records: list[dict[str, Any]]) -> MethodReport:
        return MethodReport(
            details={"ranks": {k: v for r in records for k, v in r["ranks"].items()}, "alpha": self.options.alpha,
                     "scaling": self.options.scaling, "calibration_windows": int(self.calibration.shape[0]),
                     **routing_report(ctx, self.counts)}
        )
