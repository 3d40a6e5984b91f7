"""ShortGPT (arXiv 2403.03853): delete the decoder layers with the lowest Block Influence.

BI_i = 1 - mean_t cos(h_i, h_{i+1}) is measured once on the dense model (hooks on the layers, so
pre-final-norm; mean over tokens, which ranks layers like the official sum when every layer sees
the same tokens). The n lowest-BI layers go, contiguous or not. Each whole layer carries its share
of the decoder linear parameters, so only ratios of the form (removed layers' share) are reachable.
"""

from __future__ import annotations

from compression.architectures import decoder_layers
from compression.attribution import block_influence
from compression.errors import InvalidInput
from compression.methods.base import CompressionContext, Compressor, MethodReport, register
from compression.methods.factorization import require_calibration
from compression.specs import Method, ShortGPTOptions
from compression.specs.fit import DEFAULT_TOLERANCE, shortgpt_layers
from compression.surgery import remove_layers


def layers_to_remove(num_layers: int, target_ratio: float, requested: int | None,
                     tolerance: float = DEFAULT_TOLERANCE) -> int:
    """How many of `num_layers` equal layers to drop for target_ratio; refuses unreachable targets."""
    try:
        return shortgpt_layers(num_layers, target_ratio, requested, tolerance)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


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
