"""GRASP (arXiv 2501.00339): replace the most redundant layers by a gradient-attributed low-rank remnant.

1. Block Influence on the dense model picks the n lowest-BI decoder layers (once).
2. Each target linear of a chosen layer is scored per singular component by |sigma_i sum_b u_i^T G_b v_i|
   (compression.sigma_attribution) and keeps the top-k components with their original sigma,
   stored as two factors (LowRankLinear).
   - order="reference": deepest chosen layer first, MLP block then attention block; gradients are
     recomputed after each block, on the model whose deeper blocks are already compressed.
   - order="one_pass": every chosen linear is scored from one set of backward passes.
   Two departures, off by default (the defaults are the reference's):
   - basis="whitened": the components are those of W L, L the Cholesky factor of the layer's input
     Gram matrix (SVD-LLM's activation-aware basis), so sigma_i measures how much of the layer's
     output on real inputs component i carries.
   - metric="sigma": keep the largest sigma instead of the largest attribution (no backward pass).
   Why: on SmolLM2-135M the reference's remnants (weight basis, Taylor score) are worse than deleting
   the layers outright, so GRASP loses to ShortGPT at equal ratio; the Taylor score is mostly noise on a
   converged model (its first-order term sums gradients that cancel). basis="whitened" with
   metric="sigma" is the variant that beats ShortGPT there (numbers in bench/results/grasp.md).
3. Optional recovery fine-tuning of the chosen layers' factors and norms (compression.recovery).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from compression.architectures import ArchSpec, decoder_layers, iter_target_linears, resolve_targets
from compression.attribution import block_influence
from compression.errors import InvalidInput, RatioNotReached
from compression.grasp_plan import GraspPlan, plan
from compression.activations import collect_input_stats
from compression.linalg import cholesky_whitening, rank_for_ratio
from compression.lowrank import LowRankLinear
from compression.methods.base import CompressionContext, Compressor, MethodReport, register
from compression.methods.factorization import shared_input_sources
from compression.prefix_cache import PrefixCache
from compression.sigma_attribution import (
    SigmaGradients,
    SigmaLinear,
    accumulate_sigma_gradients,
    select_components,
    sigma_surrogates,
)
from compression.specs import GraspOptions, Method
from compression.surgery import decoder_linear_params, replace_module

ALPACA_FILE = ("alpaca", "alpaca_data.subset5000.json")


def compile_low_rank(linear: nn.Linear, surrogate: SigmaLinear, keep: torch.Tensor) -> LowRankLinear:
    """Factors of the kept components with their ORIGINAL sigma (no refit), taken from the very
    decomposition the scores were computed on."""
    out_factor, in_factor = surrogate.factors(keep)
    bias = None if linear.bias is None else linear.bias.detach()
    return LowRankLinear.from_factors(out_factor, in_factor, bias, dtype=linear.weight.dtype)


def whitening_factors(
    ctx: CompressionContext, targets: list[str], layers: list[int], calibration: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Cholesky factor of the input Gram matrix of every target linear of the chosen layers (basis="whitened").

    Taken once, on the dense model: in either order a block's inputs are still the dense model's when
    it is scored (deepest layer first, and a layer's MLP, which reads its attention's output, is
    scored before that attention is touched). One Gram matrix serves each q/k/v and gate/up group; the forward passes stop
    after the deepest chosen layer.
    """
    linears = {full: mod for full, _, _, mod in iter_target_linears(ctx.model, ctx.arch, targets, layers)}
    source = shared_input_sources(ctx.arch, linears)
    grams = collect_input_stats(ctx.model, {name: linears[name] for name in set(source.values())}, calibration,
                                ctx.device, stat="gram", dtype=torch.float64,
                                stop_after=decoder_layers(ctx.model, ctx.arch)[max(layers)])
    chols = {name: cholesky_whitening(gram).cpu() for name, gram in grams.items()}
    return {name: chols[source[name]] for name in linears}


def choose_layers(ctx: CompressionContext, options: GraspOptions, count: int) -> tuple[list[int], list[float] | None]:
    """The `count` lowest-BI layers (or the explicit options.layers); returns (sorted indices, BI)."""
    n_layers = len(decoder_layers(ctx.model, ctx.arch))
    if options.layers is not None:
        bad = [i for i in options.layers if i >= n_layers]
        if bad:
            raise InvalidInput(f"options.layers {bad} do not exist: the model has {n_layers} decoder layers")
        return sorted(options.layers), None
    assert ctx.calibration is not None
    bi = block_influence(ctx.model, ctx.arch, ctx.calibration, ctx.device,
                         progress=lambda f, m: ctx.progress(0.05 * f, f"block influence: {m}"))
    order = torch.argsort(bi, stable=True)
    return sorted(int(i) for i in order[:count]), [float(x) for x in bi]


def layer_shapes(model: nn.Module, arch: ArchSpec, targets: list[str], layer: int) -> list[tuple[int, int]]:
    return [(mod.out_features, mod.in_features) for _, _, _, mod in iter_target_linears(model, arch, targets, [layer])]


def blocks(arch: ArchSpec, targets: list[str]) -> list[tuple[str, list[str]]]:
    """MLP before attention, as the reference does; empty blocks are dropped."""
    found = [("mlp", [t for t in arch.mlp_linears if t in targets]),
             ("attention", [t for t in arch.attention_linears if t in targets])]
    return [(name, names) for name, names in found if names]


@register
class Grasp(Compressor[GraspOptions]):
    method = Method.GRASP

    def compress(self, ctx: CompressionContext[GraspOptions]) -> MethodReport:
        options = ctx.options
        if ctx.calibration is None:
            raise InvalidInput("grasp needs calibration data (block influence and gradients)")
        targets = list(resolve_targets(ctx.arch, options.targets))
        n_layers = len(decoder_layers(ctx.model, ctx.arch))
        total = decoder_linear_params(ctx.model, ctx.arch)
        if options.layers is not None and len(options.layers) >= n_layers:
            raise InvalidInput(f"options.layers must leave at least one of the {n_layers} layers dense")
        grasp_plan = plan(
            target=ctx.target_ratio, total=total, layer_shapes=layer_shapes(ctx.model, ctx.arch, targets, 0),
            num_layers_total=n_layers,
            num_layers=len(options.layers) if options.layers is not None else options.num_layers,
            rank_ratio=options.rank_ratio, threshold=options.threshold, tolerance=ctx.ratio_tolerance,
        )
        chosen, bi = choose_layers(ctx, options, grasp_plan.num_layers)
        _require_dense(ctx, targets, chosen)  # before any calibration pass (whitening is a full sweep)
        calibration = ctx.calibration[: options.calibration_samples or ctx.calibration.shape[0]]
        # Layers below the lowest chosen one never change: their output is computed once.
        cache = PrefixCache(ctx.model, ctx.arch, min(chosen), calibration, ctx.device)
        chols = whitening_factors(ctx, targets, chosen, calibration) if options.basis == "whitened" else None

        started = time.perf_counter()
        ranks: dict[str, int] = {}
        if options.order == "reference":
            units = [(layer, block) for layer in sorted(chosen, reverse=True) for block in blocks(ctx.arch, targets)]
            for i, (layer, (block, names)) in enumerate(units):
                ctx.check_stop()
                label = f"layer {layer} {block} ({i + 1}/{len(units)})"
                progress = _sub_progress(ctx, i, len(units), label)
                ranks.update(self._score_and_compile(ctx, options, grasp_plan, calibration, cache, chols, [layer], names,
                                                     progress))
        else:
            ctx.check_stop()
            progress = _sub_progress(ctx, 0, 1, f"layers {chosen} in one pass")
            ranks.update(self._score_and_compile(ctx, options, grasp_plan, calibration, cache, chols, chosen, targets,
                                                 progress))
        attribution_s = time.perf_counter() - started

        achieved = 1.0 - decoder_linear_params(ctx.model, ctx.arch) / total
        if abs(achieved - ctx.target_ratio) > ctx.ratio_tolerance:
            hint = "lower options.threshold" if achieved < ctx.target_ratio else "raise options.threshold"
            raise RatioNotReached(
                f"grasp removed {achieved:.2%} of the decoder linear parameters, target {ctx.target_ratio:.2%}: "
                + (hint if options.threshold is not None else "change num_layers/rank_ratio")
            )
        details: dict[str, Any] = {
            "layers": chosen, "block_influence": bi, "num_layers": len(chosen),
            "rank_ratio": grasp_plan.rank_ratio, "threshold": options.threshold, "ranks": ranks,
            "order": options.order, "metric": options.metric, "aggregate": options.aggregate, "basis": options.basis,
            "calibration_windows": int(calibration.shape[0]), "achieved_ratio": achieved,
            "attribution_seconds": round(attribution_s, 2),
        }
        report = MethodReport(details=details)
        if options.recovery.enabled:
            report.metrics.update(self._recover(ctx, options, chosen))
        return report

    def _score_and_compile(
        self, ctx: CompressionContext, options: GraspOptions, grasp_plan: GraspPlan,
        calibration: torch.Tensor, prefix: PrefixCache, chols: dict[str, torch.Tensor] | None,
        layers: list[int], names: list[str], progress,
    ) -> dict[str, int]:
        linears = {full: mod for full, _, _, mod in iter_target_linears(ctx.model, ctx.arch, names, layers)}
        ranks = {}
        with sigma_surrogates(ctx.model, linears, chols) as surrogates:
            grads: dict[str, SigmaGradients] = {}
            if options.metric != "sigma":  # magnitude needs no backward pass
                grads = accumulate_sigma_gradients(
                    ctx.model, surrogates, calibration, ctx.device, progress=progress, check_stop=ctx.check_stop,
                    prefix=prefix,
                )
            compiled = {}
            for full, linear in linears.items():
                if options.metric == "sigma":
                    scores = surrogates[full].sigma.detach().float().cpu()
                else:
                    scores = grads[full].scores(options.metric, options.aggregate)
                if grasp_plan.rank_ratio is not None:
                    k = rank_for_ratio(linear.out_features, linear.in_features, grasp_plan.rank_ratio)
                    keep = select_components(scores, rank=k)
                else:
                    keep = select_components(scores, threshold=options.threshold)
                compiled[full] = compile_low_rank(linear, surrogates[full], keep)
                ranks[full] = int(keep.numel())
        for full, low_rank in compiled.items():  # after the surrogates have put the dense linears back
            replace_module(ctx.model, full, low_rank)
        return ranks

    def _recover(self, ctx: CompressionContext, options: GraspOptions, chosen: list[int]) -> dict[str, Any]:
        from compression.recovery import recover  # only jobs that ask for recovery pay for the import

        if ctx.data_dir is None:
            raise InvalidInput("grasp recovery needs the data folder holding alpaca/alpaca_data.subset5000.json")
        path = ctx.data_dir.joinpath(*ALPACA_FILE)
        result = recover(
            ctx.model, ctx.tokenizer, ctx.arch, chosen, options.recovery, path, ctx.device, ctx.seed,
            progress=lambda f, m: ctx.progress(0.8 + 0.2 * f, f"recovery: {m}"), check_stop=ctx.check_stop,
        )
        return {f"recovery_{key}": value for key, value in result.items()}


def _require_dense(ctx: CompressionContext, targets: list[str], layers: list[int]) -> None:
    for full, _, _, mod in iter_target_linears(ctx.model, ctx.arch, targets, layers):
        if not isinstance(mod, nn.Linear):
            raise InvalidInput(f"{full} is {type(mod).__name__}, not nn.Linear: is the model already compressed?")


def _sub_progress(ctx: CompressionContext, index: int, count: int, prefix: str):
    """Attribution spans 5%..80% of the method's progress (BI before, recovery after)."""
    def report(fraction: float, message: str) -> None:
        ctx.progress(0.05 + 0.75 * (index + fraction) / count, f"{prefix}: {message}")
    return report
