"""ShortGPT (arXiv 2403.03853): delete the decoder layers with the lowest Block Influence.

BI_i = 1 - mean_t cos(h_i, h_{i+1}) is measured once on the dense model (hooks on the layers, so
pre-final-norm; mean over tokens, which ranks layers like the official sum when every layer sees
the same tokens). The n lowest-BI layers go, contiguous or not. Each whole layer carries its share
of the decoder linear parameters, so only ratios of the form (removed layers' share) are reachable.
"""

from __future__ import annotations

from compression.architectures import decoder_layers
from compression.attribution import block_influence
from compression.methods.base import CompressionContext, Compressor, MethodReport, register
from compression.methods.factorization import require_calibration
from compression.errors import InvalidInput
from compression.reachable import layers_to_remove
from compression.specs import Method, ShortGPTOptions
from compression.surgery import remove_layers


@register
class ShortGPT(Compressor[ShortGPTOptions]):
    method = Method.SHORTGPT

    def compress(self, ctx: CompressionContext[ShortGPTOptions]) -> MethodReport:
        options = ctx.options
        calibration = require_calibration(ctx, "shortgpt")
        layers = decoder_layers(ctx.model, ctx.arch)
        sizes = {sum(p.numel() for p in layer.parameters()) for layer in layers}
        if len(sizes) != 1:
            raise InvalidInput("shortgpt needs decoder layers of equal size; this model's layers differ")
        n = layers_to_remove(len(layers), ctx.target_ratio, options.num_layers, ctx.ratio_tolerance)
        ctx.check_stop()
        scores = block_influence(
            ctx.model, ctx.arch, calibration, ctx.device, progress=lambda f, msg: ctx.progress(0.9 * f, msg)
        )
        ctx.check_stop()
        removed = sorted(scores.argsort()[:n].tolist())
        remove_layers(ctx.model, ctx.arch, removed)
        ctx.progress(1.0, f"removed layers {removed}")
        return MethodReport(
            details={
                "removed_layers": removed,
                "block_influence": [round(float(s), 6) for s in scores],
                "calibration_windows": int(calibration.shape[0]),
            }
        )
