"""SoCo options (arXiv 2502.15092; shared/reference/methods.md section 2). Owned by the SoCo method.

Defaults are sized so that TinyStories-656K trains in seconds and SmolLM2-135M in a few minutes on
a 2-core CPU; a GPU run on a 7B model would raise the step counts and the batch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from compression.specs.baselines import TargetedOptions


class SoCoOptions(TargetedOptions):
    """Learn a per-component score on each singular spectrum, prune globally by the learned score."""

    basis: Literal["whitened", "plain"] = Field(
        "whitened",
        description="whitened: SVD of W L with L the Cholesky factor of the calibration Gram (SVD-LLM's "
        "basis, so pruning by singular value is output-optimal per matrix); plain: SVD of W.",
    )
    fisher_batches: int = Field(
        16, ge=1, le=100_000,
        description="Stage 1 (coarse compression): calibration windows whose next-token loss gradients "
        "estimate each component's Fisher information F_i at the dense model; the global budget is then "
        "filled by F_i * s_i^2 / cost (the estimated loss increase of removing it, per parameter).",
    )
    refine_steps: int = Field(
        24, ge=0, le=100_000,
        description="Stage 2 (fine-grained sparsification): steps training every score, pruned ones "
        "included (they restart at 0 and may come back), projected onto the budget every reselect_every steps.",
    )
    reselect_every: int = Field(
        4, ge=1, le=100_000, description="Stage 2: steps between two projections onto the budget."
    )
    candidate_margin: float | None = Field(
        0.5, ge=0,
        description="After stage 1, keep in memory only the selected components plus this fraction more "
        "(the next most important of each matrix) as regrowth candidates, so stages 2-3 cost about what the "
        "compressed model costs instead of a full-rank factorization. None keeps every component "
        "(also the case when the dense log-probs do not fit teacher_cache_mb).",
    )
    compensate_steps: int = Field(
        32, ge=0, le=100_000,
        description="Stage 3 (importance-amplified compensation): the mask is frozen at exactly the budget "
        "and only the surviving scores train (they may grow above 1).",
    )
    batch_size: int = Field(2, ge=1, le=1024, description="Calibration windows per optimizer step.")
    learning_rate: float = Field(
        0.02, gt=0, le=10,
        description="Adam learning rate on the scores in stages 2 and 3; a score moves about this much per step.",
    )
    lm_weight: float = Field(
        0.0, ge=0,
        description="Weight of the next-token cross-entropy on the calibration text in the training loss. "
        "Off by default: the deviation term carries the dense model's full distribution, a richer target "
        "that overfits less (the cross-entropy gradients are still used for the stage-1 Fisher estimate).",
    )
    deviation_weight: float = Field(
        1.0, ge=0,
        description="Weight of the deviation term: KL(dense || compressed) of next-token distributions.",
    )
    sparsity_weight: float = Field(
        1.0, ge=0,
        description="Stage 2: weight of the L1 term on the scores of currently pruned components, "
        "sum_j (m_j+n_j) sum_i s_ji / sum_j m_j n_j, so a component must earn its way back.",
    )
    budget_weight: float = Field(
        1.0, ge=0,
        description="Stage 2: weight of the budget term max(0, soft_params / budget - 1)^2, soft_params "
        "counting min(score, 1) * (m+n) over every component.",
    )
    max_score: float = Field(
        4.0, gt=1, le=100,
        description="Scores are projected into [0, max_score] after every step (non-negative: the "
        "singular vectors carry the sign).",
    )
    teacher_cache_mb: int = Field(
        1024, ge=0,
        description="Cache the dense model's log-probabilities of the calibration windows (float16) when "
        "they fit in this many MiB; otherwise recompute them every step.",
    )
    gram_dtype: Literal["float32", "float64"] = Field(
        "float64", description="Accumulation dtype of the whitening Gram matrices."
    )

    @model_validator(mode="after")
    def _some_training(self) -> "SoCoOptions":
        if self.lm_weight == 0 and self.deviation_weight == 0:
            raise ValueError("lm_weight and deviation_weight cannot both be 0: the scores need a task loss")
        return self
