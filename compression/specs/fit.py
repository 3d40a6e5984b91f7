"""Does a job fit its model? Checked from config.json alone, before any weight is read.

The API runs it at submission when it can read the model's config (a local folder it sees); the
worker runs it again right after reading the config, before loading the weights. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compression.specs.families import Family, family_for, num_layers
from compression.specs.registry import Method



class NotForThisModel(ValueError):
    """The job cannot run on this model; `field` names the part of the job spec to change."""

    def __init__(self, field: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.field = field


DEFAULT_TOLERANCE = 0.01  # the achieved ratio must land within 1 percentage point (DESIGN.md section 2)


def shortgpt_layers(total: int, target_ratio: float, requested: int | None,
                    tolerance: float = DEFAULT_TOLERANCE) -> int:
    """How many of `total` equal layers shortgpt removes for target_ratio; ValueError if unreachable."""
    n = requested if requested is not None else round(target_ratio * total)
    reachable = ", ".join(f"{i / total:.3g}" for i in range(1, total))
    if requested is not None and not 1 <= n < total:
        raise ValueError(
            f"options.num_layers={n} is impossible: shortgpt must remove between 1 and {total - 1} "
            f"of this model's {total} layers"
        )
    if not 1 <= n < total or abs(n / total - target_ratio) > tolerance:
        hint = f" (num_layers={n} gives {n / total:.3g})" if requested is not None else ""
        raise ValueError(
            f"target_ratio {target_ratio:g} is not reachable by removing whole layers{hint}: with "
            f"{total} layers only these ratios are reachable: {reachable}"
        )
    return n


def check_targets(family: Family, targets: list[str] | None) -> None:
    unknown = [t for t in targets or () if t not in family.targets]
    if unknown:
        raise NotForThisModel(
            ("options", "targets"), f"options.targets {unknown} do not exist in {family.model_type} decoder layers; "
            f"this family's targets are: {', '.join(family.targets)}"
        )


def check_fit(method: Method | str, target_ratio: float, options: Mapping[str, Any], config: Mapping[str, Any],
              tolerance: float = DEFAULT_TOLERANCE) -> Family:
    """The family of `config` (a config.json dict) if the job can run on it; ValueError saying what to change."""
    try:
        family = family_for(str(config.get("model_type")))
    except ValueError as exc:
        raise NotForThisModel(("model",), str(exc)) from None
    method = Method(method)
    reason = family.refused.get(method.value)
    if reason:
        raise NotForThisModel(("method",), f"method '{method.value}' does not apply to {family.model_type} models: {reason}")
    check_targets(family, options.get("targets"))
    if method == Method.SHORTGPT:
        total = num_layers(config, family)
        if total is not None:
            try:
                shortgpt_layers(total, target_ratio, options.get("num_layers"), tolerance)
            except ValueError as exc:
                raise NotForThisModel(("target_ratio",), str(exc)) from None
    return family
