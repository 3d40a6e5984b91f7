"""GRASP options (arXiv 2501.00339; shared/reference/methods.md section 1). Torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from compression.specs.baselines import TargetedOptions
from compression.specs.common import StrictModel


class RecoveryOptions(StrictModel):
    """Fine-tune only the compressed layers' factors and norms on Alpaca (reference: lr 3e-4, 1 epoch, len 256)."""

    enabled: bool = False
    learning_rate: float = Field(3e-4, gt=0, le=1, description="AdamW peak learning rate.")
    epochs: int = Field(1, ge=1, le=10, description="Passes over the instruction examples.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (caps the epochs; useful on CPU)."
    )
    batch_size: int = Field(
        64, ge=1, le=512,
        description="Effective batch: sequences per optimizer step (the reference effectively uses 64).",
    )
    micro_batch_size: int = Field(
        8, ge=1, le=512, description="Sequences per forward pass; batch_size / micro_batch_size are accumulated."
    )
    max_length: int = Field(256, ge=16, le=8192, description="Prompt + response tokens, truncated beyond.")
    samples: int | None = Field(None, ge=1, description="Train on only the first N (shuffled) examples.")
    eval_samples: int = Field(
        64, ge=0, le=2000, description="Held-out examples scored before and after (loss, perplexity)."
    )
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps (capped at a tenth of the run).")

    @model_validator(mode="after")
    def _micro_divides_batch(self) -> "RecoveryOptions":
        if self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"recovery.batch_size ({self.batch_size}) must be a multiple of "
                f"recovery.micro_batch_size ({self.micro_batch_size})"
            )
        return self


class GraspOptions(TargetedOptions):
    """Replace the most redundant layers with a gradient-attributed low-rank remnant."""

    num_layers: int | None = Field(
        None, ge=1,
        description="How many redundant (lowest Block Influence) layers to replace "
        "(default: ceil(target_ratio * L / 0.9), the reference's 90% per-matrix compression).",
    )
    layers: list[int] | None = Field(
        None, min_length=1, max_length=1024,
        description="Explicit decoder layer indices to replace (skips Block Influence)."
    )
    rank_ratio: float | None = Field(
        None, gt=0, lt=1,
        description="Fraction of each matrix's parameters removed inside the chosen layers "
        "(default: solved so the whole model lands on target_ratio).",
    )
    threshold: float | None = Field(
        None, gt=0, lt=1,
        description="Instead of a fixed rank: keep the shortest prefix of components (by importance) "
        "reaching this share of the total importance. Ranks are then data-dependent and the job fails "
        "if the achieved ratio misses target_ratio by more than 1 point.",
    )
    metric: Literal["taylor", "gradient", "sigma"] = Field(
        "taylor",
        description="taylor: |sigma * sum_b g_b| (reference); gradient: |sum_b g_b|; sigma: the singular "
        "value itself, no backward pass (not in the paper; with basis='whitened' it keeps the components "
        "that best reconstruct the layer's outputs on the calibration inputs, as SVD-LLM does).",
    )
    order: Literal["reference", "one_pass"] = Field(
        "reference",
        description="reference: deepest layer first, MLP then attention, gradients recomputed after "
        "each block; one_pass: all chosen layers scored from one set of backward passes (faster).",
    )
    aggregate: Literal["signed_sum", "abs_sum"] = Field(
        "signed_sum",
        description="signed_sum: absolute value after summing signed gradients over windows (reference); "
        "abs_sum: sum of per-window absolute scores.",
    )
    basis: Literal["weight", "whitened"] = Field(
        "weight",
        description="weight: singular components of W (reference); whitened: of W L with L L^T the "
        "Gram matrix of the layer's calibration inputs (SVD-LLM's activation-aware basis; not in the "
        "paper), which keeps far better remnants on small models.",
    )
    calibration_samples: int | None = Field(
        None, ge=1, description="Use only the first N calibration windows for the gradients (default: all)."
    )
    recovery: RecoveryOptions = Field(default_factory=RecoveryOptions)

    @model_validator(mode="after")
    def _consistent(self) -> "GraspOptions":
        if self.metric == "sigma" and self.aggregate != "signed_sum":
            raise ValueError("aggregate applies to gradient scores only; drop it with metric='sigma'")
        if self.rank_ratio is not None and self.threshold is not None:
            raise ValueError("give either rank_ratio or threshold, not both")
        if self.layers is not None:
            if len(set(self.layers)) != len(self.layers) or min(self.layers) < 0:
                raise ValueError("layers must be distinct non-negative decoder layer indices")
            if self.num_layers is not None and self.num_layers != len(self.layers):
                raise ValueError("num_layers disagrees with the number of explicit layers; give one of them")
        return self
