"""What the uniform-rank SVD baselines share: which linears to factorize, at which rank, and the swap.

The rank rule is per matrix, k = floor((1 - r') m n / (m + n)), where r' is the per-matrix ratio
that removes `target_ratio` of ALL decoder linear parameters. With every projection targeted,
r' = target_ratio (the SVD-LLM convention); with a subset, the targeted matrices must give up more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from compression.architectures import (
    ArchSpec,
    experts_modules,
    input_group_key,
    iter_target_linears,
    resolve_targets,
)
from compression.errors import InvalidInput
from compression.linalg import rank_for_ratio
from compression.lowrank import LowRankLinear
from compression.methods.base import CompressionContext
from compression.surgery import decoder_linear_params, replace_module


@dataclass(frozen=True)
class Target:
    name: str  # full dotted name, e.g. model.layers.0.self_attn.q_proj
    layer: int
    short: str  # q_proj
    module: nn.Linear
    rank: int


def plan_targets(ctx: CompressionContext, targets: Sequence[str] | None) -> list[Target]:
    """Every targeted nn.Linear with its rank, in layer order; refuses unreachable ratios."""
    found = list(iter_target_linears(ctx.model, ctx.arch, targets))
    not_dense = [name for name, _, _, module in found if type(module) is not nn.Linear]
    if not_dense:
        raise InvalidInput(f"these targets are not plain nn.Linear (already compressed?): {not_dense[:3]}")
    total = decoder_linear_params(ctx.model, ctx.arch)
    targeted = sum(m.weight.numel() for _, _, _, m in found)
    per_matrix = ctx.target_ratio * total / targeted
    if not 0.0 < per_matrix < 1.0:
        raise InvalidInput(
            f"targets {list(resolve_targets(ctx.arch, targets))} hold {targeted / total:.0%} of the decoder "
            "linear parameters, so they "
            f"cannot remove {ctx.target_ratio:.0%} of them; add targets or lower target_ratio"
        )
    return [
        Target(name, layer, short, module, rank_for_ratio(module.out_features, module.in_features, per_matrix))
        for name, layer, short, module in found
    ]


def by_layer(plan: list[Target]) -> dict[int, list[Target]]:
    layers: dict[int, list[Target]] = {}
    for target in plan:
        layers.setdefault(target.layer, []).append(target)
    return layers


def shared_input_sources(arch: ArchSpec, names: Iterable[str]) -> dict[str, str]:
    """Map each full linear name to the first listed name of its layer that reads the same input (the
    family's input_groups: q/k/v, gate/up ...), or to itself: one input statistic then serves the group."""
    source: dict[str, str] = {}
    first_of_group: dict[tuple[int, int], str] = {}
    for name in names:
        group = input_group_key(arch, name)
        source[name] = name if group is None else first_of_group.setdefault(group, name)
    return source


def input_representatives(arch: ArchSpec, plan: list[Target]) -> dict[str, str]:
    """Map every target name to the target whose input statistic it can reuse (itself by default)."""
    return shared_input_sources(arch, (target.name for target in plan))


def install(ctx: CompressionContext, target: Target, out_factor: torch.Tensor, in_factor: torch.Tensor) -> int:
    """Replace target.module by LowRankLinear(out_factor @ in_factor + bias) in the model's dtype."""
    linear = target.module
    bias = linear.bias.detach() if linear.bias is not None else None
    low_rank = LowRankLinear.from_factors(
        out_factor.to(linear.weight.device), in_factor.to(linear.weight.device), bias, dtype=linear.weight.dtype
    )
    replace_module(ctx.model, target.name, low_rank)
    return low_rank.rank


def require_calibration(ctx: CompressionContext, method: str) -> torch.Tensor:
    if ctx.calibration is None or ctx.calibration.numel() == 0:
        raise InvalidInput(f"{method} needs calibration windows (CalibrationSpec), but none were given")
    return ctx.calibration


def weight_f32(target: Target, device: torch.device) -> torch.Tensor:
    """The weight to decompose: float32 on the work device, whatever the model's dtype."""
    return target.module.weight.detach().to(device=device, dtype=torch.float32)


def routing_report(ctx: CompressionContext, token_counts: dict[str, int]) -> dict[str, object]:
    """For mixture-of-experts models: tokens routed to each expert during calibration (from its gate_up
    linear's input count) and the experts never routed to, which the caller factorized without
    activation statistics (plain SVD). Empty for dense models or when experts were not targeted."""
    routed: dict[str, list[int]] = {}
    for full, module in experts_modules(ctx.model, ctx.arch).items():
        names = [f"{full}.gate_up_proj.{e}" for e in range(module.num_experts)]
        if all(name in token_counts for name in names):
            routed[full] = [int(token_counts[name]) for name in names]
    if not routed:
        return {}
    never = [f"{full}.{e}" for full, counts in routed.items() for e, n in enumerate(counts) if n == 0]
    return {"routed_tokens": routed, "unrouted_experts": never}
