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


def resolve_mode(execution: Execution, estimated_choice: str | None) -> str:
    """resident or sequential: as asked, or for `auto` what the preflight estimate chose (resident if none)."""
    if execution.mode != "auto":
        return execution.mode
    return estimated_choice or "resident"
