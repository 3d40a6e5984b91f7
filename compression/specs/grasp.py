"""GRASP options (arXiv 2501.00339; shared/reference/methods.md section 1)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from compression.specs.baselines import TargetedOptions
from compression.specs.common import StrictModel


class RecoveryOptions(StrictModel):
    """Fine-tune only the compressed layers' factors on instruction data (reference: lr 3e-4, 1 epoch)."""

    enabled: bool = False
    learning_rate: float = Field(3e-4, gt=0, le=1)
    epochs: int = Field(1, ge=1, le=10)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(8, ge=1, le=512, description="Effective batch (sequences per optimizer step).")
    micro_batch_size: int = Field(4, ge=1, le=512)
    max_length: int = Field(256, ge=16, le=8192)
    samples: int | None = Field(None, ge=1, description="Use only the first N instruction examples.")
    warmup_steps: int = Field(100, ge=0)


class GraspOptions(TargetedOptions):
    """Replace the most redundant layers with a gradient-attributed low-rank remnant."""

    num_layers: int | None = Field(None, ge=1, description="How many redundant layers (default: derived).")
    rank_ratio: float | None = Field(
        None, gt=0, lt=1,
        description="Fraction of each matrix's parameters removed inside the chosen layers (default: derived).",
    )
    threshold: float | None = Field(
        None, gt=0, le=1,
        description="Keep the shortest prefix of components reaching this share of total importance.",
    )
    metric: Literal["taylor", "gradient"] = "taylor"
    order: Literal["reference", "one_pass"] = Field(
        "reference",
        description="reference: deepest layer first, MLP then attention, gradients recomputed after "
        "each block; one_pass: all chosen layers scored from one set of backward passes.",
    )
    aggregate: Literal["signed_sum", "abs_sum"] = Field(
        "signed_sum", description="|sigma * sum_b g_b| (reference) or sum_b |sigma * g_b|."
    )
    recovery: RecoveryOptions = Field(default_factory=RecoveryOptions)

    @model_validator(mode="after")
    def _one_rank_rule(self) -> "GraspOptions":
        if self.rank_ratio is not None and self.threshold is not None:
            raise ValueError("give either rank_ratio or threshold, not both")
        return self
