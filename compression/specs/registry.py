"""Torch-free facts about each method: its options class and whether it needs calibration data.

The torch side (compression.methods) registers one Compressor per Method and checks at import
that its Options and requires_calibration agree with this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel

from compression.specs.baselines import ASVDOptions, ShortGPTOptions, SVDLLMOptions, SVDOptions
from compression.specs.grasp import GraspOptions
from compression.specs.soco import SoCoOptions


class Method(StrEnum):
    SVD = "svd"
    ASVD = "asvd"
    SVD_LLM = "svd_llm"
    SHORTGPT = "shortgpt"
    GRASP = "grasp"
    SOCO = "soco"


@dataclass(frozen=True)
class MethodInfo:
    method: Method
    options: type[BaseModel]
    requires_calibration: bool
    summary: str
    paper: str


METHODS: dict[Method, MethodInfo] = {
    info.method: info
    for info in (
        MethodInfo(Method.SVD, SVDOptions, False, "Plain truncated SVD of every target linear.", ""),
        MethodInfo(Method.ASVD, ASVDOptions, True, "Activation-aware SVD (input-channel scaling).",
                   "https://arxiv.org/abs/2312.05821"),
        MethodInfo(Method.SVD_LLM, SVDLLMOptions, True, "Truncation-aware whitening, then SVD.",
                   "https://arxiv.org/abs/2403.07378"),
        MethodInfo(Method.SHORTGPT, ShortGPTOptions, True, "Remove the lowest Block Influence layers.",
                   "https://arxiv.org/abs/2403.03853"),
        MethodInfo(Method.GRASP, GraspOptions, True,
                   "Replace redundant layers with a gradient-attributed low-rank remnant.",
                   "https://arxiv.org/abs/2501.00339"),
        MethodInfo(Method.SOCO, SoCoOptions, True,
                   "Learn a rescaling of each singular spectrum, prune by the learned score.",
                   "https://arxiv.org/abs/2502.15092"),
    )
}


def options_class(method: Method | str) -> type[BaseModel]:
    return METHODS[Method(method)].options
