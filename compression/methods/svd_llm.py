"""SVD-LLM (arXiv 2403.07378): truncation-aware data whitening, then SVD.

Per target linear, with C = sum_t x_t x_t^T over the calibration tokens (accumulated in float64)
and L = cholesky(C) (float64, eigenvalue-shifted when C is singular):
    W L = U S V^T,   out factor = U_k sqrt(S_k),   in factor = sqrt(S_k) V_k^T L^-1.
Because (L^-1 X)(L^-1 X)^T = I, the output error ||(W - W') X||_F is exactly
sqrt(sum of the dropped S_i^2): dropping the smallest whitened singular values is loss-optimal.

Inputs: the whitening statistics C come from the DENSE lower layers (the reference collects every
layer's C in one pass over the uncompressed model before any change), in resident and streamed
execution alike.

Option `update` (SVD-LLM v1, "layer-wise closed-form update"): layer by layer, on
`update_samples` windows propagated through the already-COMPRESSED lower layers (as the reference
does), keep the in factor B fixed and refit the out factor A = argmin ||W X_c - A B X_c||_F. With
G = X_c X_c^T the normal equations give A = W G B^T (B G B^T)^-1, so only G (not X_c) is kept.
"""

from __future__ import annotations

from typing import Any

import torch

from compression.execution.engine import COMPRESSED, DENSE, LayerStep, LayerwiseMethod, run_layerwise
from compression.linalg import cholesky_whitening, whitened_factors
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
from compression.specs import Method, SVDLLMOptions


def refit_out_factor(weight: torch.Tensor, in_factor: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """A = W G B^T (B G B^T)^-1: least-squares out factor for inputs with Gram matrix G, in float64."""
    w, b, g = weight.double(), in_factor.double(), gram.double()
    bg = b @ g  # [k, n]
    normal = bg @ b.T  # [k, k], symmetric PSD
    rhs = bg @ w.T  # [k, m]
    ridge = 1e-10 * normal.diagonal().mean().clamp_min(1e-30)
    eye = torch.eye(normal.shape[0], dtype=normal.dtype, device=normal.device)
    solution = torch.linalg.solve(normal + ridge * eye, rhs)  # = A^T
    return solution.T.to(weight.dtype)


@register
class SVDLLM(Compressor[SVDLLMOptions], LayerwiseMethod[SVDLLMOptions]):
    method = Method.SVD_LLM
    layer_work = "whitened SVD"

    def compress(self, ctx: CompressionContext[SVDLLMOptions]) -> MethodReport:
        return run_layerwise(ctx, self)

    def streams(self, ctx: CompressionContext[SVDLLMOptions]) -> dict[str, int | None]:
        options = ctx.options
        return {DENSE: None, COMPRESSED: options.update_samples} if options.update else {DENSE: None}

    def begin(self, ctx: CompressionContext[SVDLLMOptions]) -> None:
        self.options = ctx.options
        self.calibration = require_calibration(ctx, "svd_llm")
        plan = plan_targets(ctx, self.options.targets)
        self.rep = input_representatives(ctx.arch, plan)
        self.plan = by_layer(plan)
        self.counts: dict[str, int] = {}

    def layer(self, ctx: CompressionContext[SVDLLMOptions], step: LayerStep) -> dict[str, Any]:
        targets = self.plan.get(step.index, [])
        firsts = {t.name: t.module for t in targets if self.rep[t.name] == t.name}
        experts = ctx.arch.experts  # an expert may see no calibration token at all
        grams = step.input_statistics(firsts, "gram", torch.float64, token_counts=self.counts if experts else None)
        propagated = (step.input_statistics(firsts, "gram", torch.float64, stream=COMPRESSED,
                                            token_counts={} if experts else None)
                      if self.options.update else {})
        chols: dict[str, torch.Tensor] = {}
        ranks: dict[str, int] = {}
        for target in targets:
            key = self.rep[target.name]
            weight = weight_f32(target, ctx.device)
            if key not in chols:  # an expert no calibration token reached: L = I, i.e. plain SVD
                chols[key] = (cholesky_whitening(grams.pop(key)) if key in grams else
                              torch.eye(weight.shape[1], dtype=torch.float64, device=weight.device))
            out_factor, in_factor, _ = whitened_factors(weight, chols[key], target.rank)
            if self.options.update and key in propagated:
                out_factor = refit_out_factor(weight, in_factor, propagated[key])
            ranks[target.name] = install(ctx, target, out_factor, in_factor)
        return {"ranks": ranks}

    def finish(self, ctx: CompressionContext[SVDLLMOptions], records: list[dict[str, Any]]) -> MethodReport:
        details: dict[str, Any] = {"ranks": {k: v for r in records for k, v in r["ranks"].items()},
                                   "update": self.options.update,
                                   "calibration_windows": int(self.calibration.shape[0]),
                                   **routing_report(ctx, self.counts)}
        if self.options.update:
            details["update_windows"] = int(self.calibration[: self.options.update_samples].shape[0])
        return MethodReport(details=details)
