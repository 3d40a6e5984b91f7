"""Plain truncated SVD: W ~ U_k S_k V_k^T per target linear, sqrt(S_k) split into both factors.

Calibration-free; the weakest baseline, because it minimizes ||W - W'|| rather than the output
error ||(W - W') X|| that the activation-aware methods target. Layer-wise: it reads no hidden
states at all, so resident and streamed execution do exactly the same work per layer.
"""

from __future__ import annotations

from typing import Any

from compression.execution.engine import LayerStep, LayerwiseMethod, run_layerwise
from compression.linalg import svd, truncate
from compression.methods.base import CompressionContext, Compressor, MethodReport, register
from compression.methods.factorization import by_layer, install, plan_targets, weight_f32
from compression.specs import Method, SVDOptions


@register
class PlainSVD(Compressor[SVDOptions], LayerwiseMethod[SVDOptions]):
    method = Method.SVD
    layer_work = "truncated SVD"

    def compress(self, ctx: CompressionContext[SVDOptions]) -> MethodReport:
        return run_layerwise(ctx, self)

    def begin(self, ctx: CompressionContext[SVDOptions]) -> None:
        options = ctx.options
        self.plan = by_layer(plan_targets(ctx, options.targets))

    def layer(self, ctx: CompressionContext[SVDOptions], step: LayerStep) -> dict[str, Any]:
        ranks: dict[str, int] = {}
        for target in self.plan.get(step.index, []):
            u, s, vh = svd(weight_f32(target, ctx.device))
            out_factor, in_factor = truncate(u, s, vh, target.rank)
            ranks[target.name] = install(ctx, target, out_factor, in_factor)
        return {"ranks": ranks}

    def finish(self, ctx: CompressionContext[SVDOptions], records: list[dict[str, Any]]) -> MethodReport:
        return MethodReport(details={"ranks": {k: v for r in records for k, v in r["ranks"].items()}})
