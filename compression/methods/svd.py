"""Plain truncated SVD: W ~ U_k S_k V_k^T per target linear, sqrt(S_k) split into both factors.

Calibration-free; the weakest baseline, because it minimizes ||W - W'|| rather than the output
error ||(W - W') X|| that the activation-aware methods target.
"""

from __future__ import annotations

from compression.linalg import svd, truncate
from compression.progress import layer_message
from compression.methods.base import CompressionContext, Compressor, MethodReport, register
from compression.methods.factorization import by_layer, install, plan_targets, weight_f32
from compression.specs import Method, SVDOptions


@register
class PlainSVD(Compressor[SVDOptions]):
    method = Method.SVD

    def compress(self, ctx: CompressionContext[SVDOptions]) -> MethodReport:
        options = ctx.options
        layers = by_layer(plan_targets(ctx, options.targets))
        ranks: dict[str, int] = {}
        for done, (index, targets) in enumerate(layers.items()):
            ctx.check_stop()
            for target in targets:
                u, s, vh = svd(weight_f32(target, ctx.device))
                out_factor, in_factor = truncate(u, s, vh, target.rank)
                ranks[target.name] = install(ctx, target, out_factor, in_factor)
            ctx.progress((done + 1) / len(layers), layer_message(done + 1, len(layers), "truncated SVD"))
        return MethodReport(details={"ranks": ranks})
