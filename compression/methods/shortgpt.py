"""ShortGPT (arXiv 2403.03853): delete the decoder layers with the lowest Block Influence.

BI_i = 1 - mean_t cos(h_i, h_{i+1}) is measured on the dense model: every layer's input comes
through the DENSE lower layers, resident or streamed (the layer-wise pass reads each layer's own
input and output, so pre-final-norm; mean over tokens, which ranks layers like the official sum when every layer sees
the same tokens). The n lowest-BI layers go, contiguous or not. Each whole layer carries its share
of the decoder linear parameters, so only ratios of the form (removed layers' share) are reachable.
"""

from __future__ import annotations

from typing import Any

import torch

from compression.architectures import decoder_layers
from compression.execution.engine import DENSE, LayerStep, LayerwiseMethod, run_layerwise
from compression.methods.base import CompressionContext, Compressor, MethodReport, register
from compression.methods.factorization import require_calibration
from compression.errors import InvalidInput
from compression.reachable import layers_to_remove
from compression.specs import Method, ShortGPTOptions
from compression.surgery import remove_layers


@register
class ShortGPT(Compressor[ShortGPTOptions], LayerwiseMethod[ShortGPTOptions]):
    method = Method.SHORTGPT
    layer_work = "block influence"

    def compress(self, ctx: CompressionContext[ShortGPTOptions]) -> MethodReport:
        return run_layerwise(ctx, self)

    def streams(self, ctx: CompressionContext[ShortGPTOptions]) -> dict[str, int | None]:
        return {DENSE: None}

    def begin(self, ctx: CompressionContext[ShortGPTOptions]) -> None:
        options = ctx.options
        self.calibration = require_calibration(ctx, "shortgpt")
        layers = decoder_layers(ctx.model, ctx.arch)
        sizes = {sum(p.numel() for p in layer.parameters()) for layer in layers}
        if len(sizes) != 1:
            raise InvalidInput("shortgpt needs decoder layers of equal size; this model's layers differ")
        self.n_remove = layers_to_remove(len(layers), ctx.target_ratio, options.num_layers, ctx.ratio_tolerance)

    def layer(self, ctx: CompressionContext[ShortGPTOptions], step: LayerStep) -> dict[str, Any]:
        return {"block_influence": step.block_influence()}

    def finish(self, ctx: CompressionContext[ShortGPTOptions], records: list[dict[str, Any]]) -> MethodReport:
        scores = torch.tensor([r["block_influence"] for r in records], dtype=torch.float64)
        removed = sorted(scores.argsort()[: self.n_remove].tolist())
        remove_layers(ctx.model, ctx.arch, removed)
        ctx.progress(1.0, f"removed layers {removed}")
        return MethodReport(
            details={
                "removed_layers": removed,
                "block_influence": [round(float(s), 6) for s in scores],
                "calibration_windows": int(self.calibration.shape[0]),
            }
        )
