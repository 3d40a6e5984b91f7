"""SoCo options (arXiv 2502.15092; shared/reference/methods.md section 2). Owned by the SoCo method."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compression.specs.baselines import TargetedOptions


class SoCoOptions(TargetedOptions):
    """Learn a per-component score on each singular spectrum, prune globally by the learned score."""

    basis: Literal["whitened", "plain"] = "whitened"
