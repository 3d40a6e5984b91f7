"""Options of the four baselines (see shared/reference/methods.md section 3)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from compression.specs.common import StrictModel
from compression.specs.families import KNOWN_TARGETS

# Any family's projection name; whether the model's family has it is checked once its config is read.
TargetName = Literal[KNOWN_TARGETS]  # type: ignore[valid-type]


class TargetedOptions(StrictModel):
    targets: list[TargetName] | None = Field(
        None,
        min_length=1, max_length=len(KNOWN_TARGETS),
        description="Which linear projections of every decoder layer to factorize (default: all of them). "
        "Names are the model family's own; GET /v1/architectures lists them per family.",
    )

    @field_validator("targets")
    @classmethod
    def _each_target_once(cls, targets: list[str] | None) -> list[str] | None:
        repeated = sorted({t for t in targets or () if targets.count(t) > 1})
        if repeated:
            raise ValueError(f"targets names {', '.join(repeated)} more than once; list each projection once")
        return targets


class SVDOptions(TargetedOptions):
    """Plain truncated SVD, W ~ U_k S_k V_k^T, with sqrt(S) split into both factors."""


class ASVDOptions(TargetedOptions):
    """Activation-aware SVD (arXiv 2312.05821): scale input channels by mean |x|^alpha, then SVD."""

    alpha: float = Field(0.5, gt=0.0, le=1.0, description="Exponent of the activation scale.")
    scaling: Literal["abs_mean", "abs_max"] = Field(
        "abs_mean", description="Per-input-channel statistic of the calibration activations."
    )


class SVDLLMOptions(TargetedOptions):
    """SVD-LLM (arXiv 2403.07378): truncation-aware whitening by the Cholesky factor of X X^T."""

    update: bool = Field(
        False,
        description="Closed-form least-squares update of the out factor on inputs propagated "
        "through the already-compressed layers (SVD-LLM v1 'layer-wise update').",
    )
    update_samples: int = Field(16, ge=1, le=1024, description="Calibration windows used by the update.")


class ShortGPTOptions(StrictModel):
    """ShortGPT (arXiv 2403.03853): remove the decoder layers with the lowest Block Influence."""

    num_layers: int | None = Field(
        None, ge=0, description="Remove exactly this many layers (default: derived from target_ratio)."
    )
