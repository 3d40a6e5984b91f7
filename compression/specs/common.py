"""Shared pieces of the torch-free specs: the strict base model and the input validators."""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def _is_numeric(annotation: Any) -> bool:
    """int or float (optional or not), and not a bool field."""
    options = get_args(annotation) or (annotation,)
    return bool not in options and any(option in (int, float) for option in options)


class StrictModel(BaseModel):
    """Every spec refuses unknown keys, so a typo is an error instead of a silent default; numbers are
    finite (Infinity and NaN, which Python's JSON parser accepts, would be stored as null and fail the
    job later) and never true/false (pydantic would take true as 1)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _is_numeric(field.annotation):
            raise ValueError("must be a number, not true or false")
        return value


# Hub ids as huggingface_hub accepts them: "org/name", each part starting with an alphanumeric.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
# A bare name is a folder looked up under the allowed local roots.
_LOCAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
# An absolute path is accepted syntactically; the loader still checks it lies under an allowed root.
_ABS_PATH = re.compile(r"^/[A-Za-z0-9._/-]{1,1023}\Z")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}\Z")


def validate_model_ref(value: str) -> str:
    """Accept a hub id, a local folder name or an absolute path; refuse anything that could escape."""
    if "://" in value:
        raise ValueError("model must be a Hugging Face id like 'org/name' or a local model name, not a URL")
    if ".." in value.split("/") or "/../" in value or value.endswith("/.."):
        raise ValueError("model must not contain '..' path segments")
    if value.startswith("/"):
        if not _ABS_PATH.match(value) or "//" in value:
            raise ValueError("a local model path may contain only letters, digits and . _ - / characters")
        return value
    if _HUB_ID.match(value) or _LOCAL_NAME.match(value):
        if "--" in value or ".." in value:
            raise ValueError("model must not contain '--' or '..'")
        return value
    raise ValueError(
        "model must be a Hugging Face id like 'org/name' (letters, digits, '.', '_', '-') "
        "or the name of a model folder under an allowed local root"
    )


def validate_revision(value: str | None) -> str | None:
    """A branch, tag or commit sha; no path tricks."""
    if value is None:
        return None
    if not _REVISION.match(value) or ".." in value:
        raise ValueError("revision must be a branch, tag or commit sha (letters, digits, '.', '_', '-', '/')")
    return value


_DATA_PATH = re.compile(r"^/?[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*\Z")


def validate_data_path(value: str | None) -> str | None:
    """A calibration file path: plain path characters, no '..' segments, no URL; roots are checked later."""
    if value is None:
        return None
    if "://" in value:
        raise ValueError("calibration.path must be a file path under an allowed data root, not a URL")
    if ".." in value.split("/"):
        raise ValueError("calibration.path must not contain '..' path segments")
    if len(value) > 1024 or not _DATA_PATH.match(value):
        raise ValueError(
            "calibration.path may contain only letters, digits and . _ - / characters "
            "(a .txt or .jsonl file under an allowed data root)"
        )
    return value
