"""SVD-LLM (arXiv 2403.07378): truncation-aware data whitening, then SVD.

Per target linear, with C = sum_t x_t x_t^T over the calibration tokens (accumulated in float64
on the dense model) and L = cholesky(C) (float64, eigenvalue-shifted when C is singular):
    W L = U S V^T,   out factor = U_k sqrt(S_k),   in factor = sqrt(S_k) V_k^T L^-1.
Because (L^-1 X)(L^-1 X)^T = I, the output error ||(W - W') X||_F is exactly
sqrt(sum of the dropped S_i^2): dropping the smallest whitened singular values is loss-optimal.

Option `update` (SVD-LLM v1, "layer-wise closed-form update"): layer by layer, on
`update_samples` windows propagated through the already-compressed earlier layers, keep the in
factor B fixed and refit the out factor A = argmin ||W X_c - A B X_c||_F. With G = X_c X_c^T the
normal equations give A = W G B^T (B G B^T)^-1, so only G (not X_c) has to be kept.
"""

from __future__ import annotations

import torch

from compression.activations import collect_input_stats
from compression.architectures import decoder_layers
from compression.linalg import cholesky_whitening, whitened_factors
from compression.progress import layer_message
from compression.methods.base import CompressionContext, Compressor, MethodReport, register
from compression.methods.factorization import (
    Target,
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
class SVDLLM(Compressor[SVDLLMOptions]):
    method = Method.SVD_LLM

    def compress(self, ctx: CompressionContext[SVDLLMOptions]) -> MethodReport:
        options = ctx.options
        calibration = require_calibration(ctx, "svd_llm")
        plan = plan_targets(ctx, options.targets)
        rep = input_representatives(ctx.arch, plan)
        counts: dict[str, int] = {}
        grams = collect_input_stats(
            ctx.model, {t.name: t.module for t in plan if rep[t.name] == t.name}, calibration, ctx.device,
            stat="gram", dtype=torch.float64, progress=lambda f, msg: ctx.progress(0.4 * f, f"whitening: {msg}"),
            token_counts=counts if ctx.arch.experts else None,  # experts may see no token at all
        )
        update_windows = calibration[: options.update_samples]
        layers = by_layer(plan)
        ranks: dict[str, int] = {}
        for done, (index, targets) in enumerate(layers.items()):
            ctx.check_stop()
            propagated = self._propagated_grams(ctx, index, targets, rep, update_windows) if options.update else {}
            chols: dict[str, torch.Tensor] = {}
            for target in targets:
                key = rep[target.name]
                weight = weight_f32(target, ctx.device)
                if key not in chols:  # an expert no calibration token reached: L = I, i.e. plain SVD
                    chols[key] = (cholesky_whitening(grams.pop(key)) if key in grams else
                                  torch.eye(weight.shape[1], dtype=torch.float64, device=weight.device))
                out_factor, in_factor, _ = whitened_factors(weight, chols[key], target.rank)
                if options.update and key in propagated:
                    out_factor = refit_out_factor(weight, in_factor, propagated[key])
                ranks[target.name] = install(ctx, target, out_factor, in_factor)
            ctx.progress(0.4 + 0.6 * (done + 1) / len(layers),
                         layer_message(done + 1, len(layers), "whitened SVD"))
        details = {"ranks": ranks, "update": options.update, "calibration_windows": int(calibration.shape[0]),
                   **routing_report(ctx, counts)}
        if options.update:
            details["update_windows"] = int(update_windows.shape[0])
        return MethodReport(details=details)

    @staticmethod
    def _propagated_grams(
        ctx: CompressionContext, index: int, targets: list[Target], rep: dict[str, str], windows: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Input Gram matrices of layer `index`'s (still dense) linears, with earlier layers compressed."""
        modules = {t.name: t.module for t in targets if rep[t.name] == t.name}
        layer = decoder_layers(ctx.model, ctx.arch)[index]
        return collect_input_stats(
            ctx.model, modules, windows, ctx.device, stat="gram", dtype=torch.float64, stop_after=layer,
            token_counts={} if ctx.arch.experts else None,  # an unrouted expert keeps its whitened fit
        )
