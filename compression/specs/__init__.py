"""Torch-free job and method specs, shared by the API, the worker and the CLI."""

from compression.specs.baselines import ASVDOptions, ShortGPTOptions, SVDLLMOptions, SVDOptions, TargetName
from compression.specs.families import FAMILIES, KNOWN_TARGETS, Family, family_for
from compression.specs.fit import check_fit
from compression.specs.execution import (
    EXECUTION_MODES, OFFLOAD_TARGETS, ExecutionMode, ExecutionSpec, OffloadTarget, format_bytes, parse_bytes,
)
from compression.specs.grasp import GraspOptions, RecoveryOptions
from compression.specs.job import CalibrationSpec, EvaluationSpec, ExportSpec, JobSpec
from compression.specs.registry import METHODS, Method, MethodInfo, options_class
from compression.specs.soco import SoCoOptions

__all__ = [
    "ASVDOptions", "CalibrationSpec", "EXECUTION_MODES", "EvaluationSpec", "ExecutionMode", "ExecutionSpec",
    "ExportSpec", "FAMILIES", "Family", "GraspOptions", "JobSpec", "KNOWN_TARGETS", "METHODS", "Method",
    "MethodInfo", "OFFLOAD_TARGETS", "OffloadTarget", "RecoveryOptions", "SVDLLMOptions", "SVDOptions",
    "ShortGPTOptions", "SoCoOptions", "TargetName", "check_fit", "family_for", "format_bytes", "options_class",
    "parse_bytes",
]
