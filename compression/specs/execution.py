"""How a job executes: the whole model resident on the device, or one decoder layer at a time.

Memory limits are byte counts. They are accepted as an integer (bytes) or as a string with a unit,
"24GiB", "512 MiB", "1.5GB" (binary units KiB/MiB/GiB/TiB are powers of 1024, decimal KB/MB/GB/TB
powers of 1000, "B" or no unit bytes), and are always stored and shown as an integer number of bytes.
The same parser reads the worker's SPECTRA_WORKER_DEVICE_MEMORY / SPECTRA_WORKER_HOST_MEMORY.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from compression.specs.common import StrictModel

ExecutionMode = Literal["auto", "resident", "sequential"]
OffloadTarget = Literal["cpu", "disk"]
EXECUTION_MODES: tuple[ExecutionMode, ...] = ("auto", "resident", "sequential")
OFFLOAD_TARGETS: tuple[OffloadTarget, ...] = ("cpu", "disk")

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_MIN_LIMIT = 2**20  # below 1 MiB no model fits; such a number is a unit mistake, not a limit


def parse_bytes(value: int | str, what: str = "memory size") -> int:
    """24 -> 24; "24GiB" -> 25769803776; "1.5 GB" -> 1500000000. Raises ValueError saying what to write."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of bytes or a string like '24GiB', not a boolean")
    if isinstance(value, float) and value.is_integer():  # JSON writers may send 2.5e10 for an integer
        value = int(value)
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS:
            raise ValueError(f"{what} '{value}' is not a size: write bytes as an integer or a number with a unit "
                             "B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. '24GiB'")
        number = match.group(1)
        n = int(number) * _UNITS[unit] if number.isdigit() else int(float(number) * _UNITS[unit])
    else:
        raise ValueError(f"{what} must be a number of bytes or a string like '24GiB'")
    if n < _MIN_LIMIT:
        raise ValueError(f"{what} {value!r} is {n} bytes, below the 1 MiB minimum; did you forget the unit "
                         "(e.g. '24GiB')?")
    return n


def format_bytes(n: int | float) -> str:
    """25769803776 -> '24.0 GiB' (for messages and tables)."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


class ExecutionSpec(StrictModel):
    """Where the model's weights live while the job runs."""

    mode: ExecutionMode = Field(
        "auto",
        description="resident: the whole model on the device; sequential: one decoder layer on the device at a "
        "time, calibration hidden states waiting in host memory; auto: resident when the preflight estimate fits "
        "the memory limits, sequential otherwise.",
    )
    offload: OffloadTarget = Field(
        "cpu",
        description="In sequential mode, where the layers not on the device wait: cpu (host memory) or disk "
        "(read lazily from the checkpoint's safetensors, so host memory never holds the whole model).",
    )
    max_device_memory: int | None = Field(
        None,
        description="Device memory this job may use, in bytes (an integer, or a string such as '24GiB' / '80GB', "
        "stored as bytes). Default: the worker's SPECTRA_WORKER_DEVICE_MEMORY, or no limit.",
    )
    max_host_memory: int | None = Field(
        None,
        description="Host (CPU) memory this job may use, in bytes (an integer, or a string such as '64GiB', stored "
        "as bytes). Default: the worker's SPECTRA_WORKER_HOST_MEMORY, or no limit.",
    )

    @field_validator("max_device_memory", "max_host_memory", mode="before",
                     json_schema_input_type=int | str | None)
    @classmethod
    def _bytes(cls, value: object, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        return parse_bytes(value, f"execution.{info.field_name}")  # type: ignore[arg-type]
