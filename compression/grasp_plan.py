"""GRASP's ratio mapping: target_ratio -> (how many layers, per-matrix rank ratio inside them).

target_ratio is the fraction of ALL decoder-layer linear parameters removed (DESIGN.md section 2).
GRASP keeps every layer but factorizes the target linears of n chosen layers, each to the rank
rank_for_ratio(m, n, rho). The reference compresses each chosen matrix by 0.9 (keeps ~10%), so by
default n = ceil(r * D / (0.9 * T)) with D all decoder linear params and T one layer's target
params, and rho is then solved (bisection over the floor-rounded ranks) so the achieved ratio is
the closest reachable one to r.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from compression.errors import InvalidInput
from compression.linalg import rank_for_ratio
from compression.specs.fit import DEFAULT_TOLERANCE

REFERENCE_MATRIX_RATIO = 0.9

Shape = tuple[int, int]  # (out m, in n)


@dataclass(frozen=True)
class GraspPlan:
    num_layers: int
    rank_ratio: float | None  # None with a threshold (ranks are data-dependent)
    expected_ratio: float | None


def removed_params(shapes: Sequence[Shape], rho: float) -> int:
    """Parameters removed by factorizing every (m, n) matrix to rank_for_ratio(m, n, rho)."""
    return sum(m * n - rank_for_ratio(m, n, rho) * (m + n) for m, n in shapes)


def solve_rank_ratio(shapes: Sequence[Shape], total: int, target: float, what: str = "",
                     tolerance: float = DEFAULT_TOLERANCE) -> float:
    """The rho whose achieved ratio removed/total is closest to target; InvalidInput if unreachable."""
    top = 1.0 - 1e-9
    best_possible = removed_params(shapes, top) / total
    if best_possible < target - tolerance:
        raise InvalidInput(
            f"{what or f'factorizing {len(shapes)} matrices'} can remove at most {best_possible:.1%} of the decoder linear "
            f"parameters, below target_ratio {target:.1%}: choose more layers (options.num_layers)"
        )
    if best_possible < target:
        return top
    lo, hi = 1e-9, top  # invariant: ratio(hi) >= target
    for _ in range(60):
        mid = (lo + hi) / 2
        if removed_params(shapes, mid) / total >= target:
            hi = mid
        else:
            lo = mid
    above = removed_params(shapes, hi) / total
    below = removed_params(shapes, lo) / total
    return hi if abs(above - target) <= abs(below - target) else lo


def default_num_layers(target: float, total: int, layer_target_params: int, num_layers_total: int) -> int:
    """ceil(r * D / (0.9 * T)), at least 1, at most L - 1 (GRASP must leave a dense layer)."""
    if layer_target_params <= 0:
        raise InvalidInput("the chosen targets hold no parameters")
    n = math.ceil(target * total / (REFERENCE_MATRIX_RATIO * layer_target_params) - 1e-9)
    return max(1, min(n, num_layers_total - 1))


def plan(
    *,
    target: float,
    total: int,
    layer_shapes: Sequence[Shape],
    num_layers_total: int,
    num_layers: int | None,
    rank_ratio: float | None,
    threshold: float | None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> GraspPlan:
    """Decide n and rho (layers are assumed alike, as in every supported architecture)."""
    if num_layers_total < 2:
        raise InvalidInput("grasp needs a model with at least 2 decoder layers")
    if num_layers is not None and num_layers >= num_layers_total:
        raise InvalidInput(
            f"options.num_layers={num_layers} must be below the model's {num_layers_total} decoder layers"
        )
    if rank_ratio is not None and threshold is not None:
        raise InvalidInput("give either options.rank_ratio or options.threshold, not both")
    per_layer = sum(m * n for m, n in layer_shapes)
    if threshold is not None:
        n = num_layers or default_num_layers(target, total, per_layer, num_layers_total)
        return GraspPlan(n, None, None)
    if rank_ratio is not None:
        if num_layers is None:
            n = round(target * total / (rank_ratio * per_layer))
            n = max(1, min(n, num_layers_total - 1))
        else:
            n = num_layers
        achieved = removed_params(list(layer_shapes) * n, rank_ratio) / total
        if abs(achieved - target) > tolerance:
            raise InvalidInput(
                f"options.rank_ratio={rank_ratio} on {n} layer(s) removes {achieved:.1%} of the decoder "
                f"linear parameters, not target_ratio {target:.1%} (within {tolerance:.1%}): drop rank_ratio "
                "(it is then solved) or change num_layers/target_ratio"
            )
        return GraspPlan(n, rank_ratio, achieved)
    n = num_layers or default_num_layers(target, total, per_layer, num_layers_total)
    rho = solve_rank_ratio(list(layer_shapes) * n, total, target, f"{n} layer(s) even at rank 1", tolerance)
    return GraspPlan(n, rho, removed_params(list(layer_shapes) * n, rho) / total)
