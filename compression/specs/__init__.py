"""Torch-free job and method specs, shared by the API, the worker and the CLI."""

from compression.specs.baselines import ASVDOptions, ShortGPTOptions, SVDLLMOptions, SVDOptions
from compression.specs.common import ALL_TARGETS, TargetName
from compression.specs.execution import (
    EXECUTION_MODES, OFFLOAD_TARGETS, ExecutionMode, ExecutionSpec, OffloadTarget, format_bytes, parse_bytes,
)
from compression.specs.grasp import GraspOptions, RecoveryOptions
from compression.specs.job import CalibrationSpec, EvaluationSpec, ExportSpec, JobSpec
from compression.specs.registry import METHODS, Method, MethodInfo, options_class
from compression.specs.soco import SoCoOptions

__all__ = [
    "ALL_TARGETS", "ASVDOptions", "CalibrationSpec", "EXECUTION_MODES", "EvaluationSpec", "ExecutionMode",
    "ExecutionSpec", "ExportSpec", "GraspOptions", "OFFLOAD_TARGETS", "OffloadTarget", "format_bytes", "parse_bytes",
    "JobSpec", "METHODS", "Method", "MethodInfo", "RecoveryOptions", "SVDLLMOptions", "SVDOptions",
    "ShortGPTOptions", "SoCoOptions", "TargetName", "options_class",
]
