"""Which execution a run uses: resident (whole model on the device) or sequential (one layer at a time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from compression.errors import InvalidInput

MODES = ("auto", "resident", "sequential")
# The progress message a run sends when it continues from a work folder: "resumed at layer k/N".
RESUMED = "resumed at layer"
OFFLOADS = ("cpu", "disk")


@dataclass(frozen=True)
class Execution:
    mode: Literal["auto", "resident", "sequential"] = "resident"
    offload: Literal["cpu", "disk"] = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidInput(f"execution mode '{self.mode}' is unknown; use one of {', '.join(MODES)}")
        if self.offload not in OFFLOADS:
            raise InvalidInput(f"offload '{self.offload}' is unknown; use one of {', '.join(OFFLOADS)}")


def requested_execution(spec: Any) -> Execution:
    """The spec's `execution` field (ExecutionSpec) as the engine's choice."""
    field = getattr(spec, "execution", None)
    if field is None:
        return Execution()
    return Execution(mode=getattr(field, "mode", "resident"), offload=getattr(field, "offload", "cpu"))


def fits_resident(spec: Any, located: Any) -> bool:
    """Whether the whole model fits the device for this job: the preflight estimate's answer.

    The estimate lives in its own module (issue 14, other half); until it is wired in, `auto` stays
    resident, which is today's behaviour.
    """
    return True


def resolve_mode(execution: Execution, spec: Any, located: Any) -> str:
    if execution.mode != "auto":
        return execution.mode
    return "resident" if fits_resident(spec, located) else "sequential"
