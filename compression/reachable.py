"""Which target ratios a method can reach on a model's shape: pure arithmetic, torch-free, so the API
refuses an unreachable target at submission when it can read the model's config, and the method
refuses it again on the worker with the same words (the rule itself: compression.specs.fit)."""

from __future__ import annotations

from compression.errors import InvalidInput
from compression.specs.fit import DEFAULT_TOLERANCE, shortgpt_layers


def layers_to_remove(num_layers: int, target_ratio: float, requested: int | None,
                     tolerance: float = DEFAULT_TOLERANCE) -> int:
    """How many of `num_layers` equal layers ShortGPT drops for target_ratio; refuses unreachable targets."""
    try:
        return shortgpt_layers(num_layers, target_ratio, requested, tolerance)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
