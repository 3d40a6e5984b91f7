"""Which target ratios a method can reach on a model's shape: pure arithmetic, torch-free, so the API
refuses an unreachable target at submission when it can read the model's config, and the method
refuses it again on the worker with the same words."""

from __future__ import annotations

from compression.errors import InvalidInput

TOLERANCE = 0.01  # the achieved ratio must land within 1 percentage point (DESIGN.md section 2)


def layers_to_remove(num_layers: int, target_ratio: float, requested: int | None) -> int:
    """How many of `num_layers` equal layers ShortGPT drops for target_ratio; refuses unreachable targets."""
    n = requested if requested is not None else round(target_ratio * num_layers)
    reachable = ", ".join(f"{i / num_layers:.3g}" for i in range(1, num_layers))
    if requested is not None and not 1 <= n < num_layers:
        raise InvalidInput(
            f"options.num_layers={n} is impossible: shortgpt must remove between 1 and {num_layers - 1} "
            f"of this model's {num_layers} layers"
        )
    if not 1 <= n < num_layers or abs(n / num_layers - target_ratio) > TOLERANCE:
        hint = f" (num_layers={n} gives {n / num_layers:.3g})" if requested is not None else ""
        raise InvalidInput(
            f"target_ratio {target_ratio:g} is not reachable by removing whole layers{hint}: with "
            f"{num_layers} layers only these ratios are reachable: {reachable}"
        )
    return n
